"""The harness's unlearning methods, one file each; importing this package registers them.

A new method is one file here: every public module of this package (``methods/<name>.py``,
not starting with ``_``) is imported in name order, and a test checks that each registers at
least one method.
"""

import importlib
import pkgutil

_MODULES = tuple(
    sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
)

for _m in _MODULES:
    importlib.import_module(f"methods.{_m}")
