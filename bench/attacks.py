"""Moved to :mod:`bench.unlearning.attacks`: this module re-exports it, with a DeprecationWarning,
for code
written against the former flat layout (plugins). Import ``bench.unlearning.attacks`` instead."""

import warnings

from bench.unlearning import attacks as _moved
from bench.unlearning.attacks import *  # noqa: F403

warnings.warn(
    "bench.attacks moved to bench.unlearning.attacks; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
