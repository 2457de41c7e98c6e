"""The harness's unlearning methods, one file each; importing this package registers them.

A new method is one file here plus its name in ``_MODULES`` (a test checks that every file is
listed and registers at least one method).
"""

import importlib

_MODULES = (
    "retrain",
    "finetune",
    "neggrad",
    "random_labels",
    "adv_only",
    "mas_only",
    "adv_mas",
)

for _m in _MODULES:
    importlib.import_module(f"methods.{_m}")
