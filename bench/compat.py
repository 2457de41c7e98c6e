"""The former flat module paths (``bench.method``, ``bench.spec``, ...), for code written before
``bench/`` became packages (plugins): importing one gives the module at its new home, the same
object, with a DeprecationWarning that names it. :func:`install` puts the finder on
``sys.meta_path``; ``bench/__init__.py`` calls it."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: former module name under ``bench`` -> its module now
MOVED = {
    "spec": "bench.core.spec",
    "registry": "bench.core.registry",
    "records": "bench.core.records",
    "files": "bench.core.files",
    "errors": "bench.core.errors",
    "runtime": "bench.core.runtime",
    "cache": "bench.core.cache",
    "reference": "bench.core.reference",
    "archs": "bench.models.archs",
    "checkpoint": "bench.models.checkpoint",
    "saved_models": "bench.models.saved_models",
    "train": "bench.models.train",
    "method": "bench.unlearning.method",
    "l2ul": "bench.unlearning.l2ul",
    "importance": "bench.unlearning.importance",
    "attacks": "bench.unlearning.attacks",
    "mnemonic": "bench.unlearning.mnemonic",
    "oracle": "bench.protocol.oracle",
    "plan": "bench.protocol.plan",
    "progress": "bench.protocol.progress",
    "executors": "bench.execution.executors",
    "cluster": "bench.execution.cluster",
    "slurm_tasks": "bench.execution.slurm_tasks",
    "lifeline": "bench.execution.lifeline",
    "suite_grid": "bench.suites.grid",
    "suites_salun": "bench.suites.salun",
    "study": "bench.tuning.study",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        warnings.warn(
            f"{spec.name} moved to {self.target}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(self.target)  # kept as is: its own name and spec

    def exec_module(self, module) -> None:
        pass


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds ``bench.<former name>`` and loads it as the module that replaced it."""

    def find_spec(self, fullname: str, path=None, target=None):
        head, _, name = fullname.partition(".")
        if head != "bench" or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(MOVED[name]))


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())  # before an editable install's finder
