"""Moved to :mod:`bench.unlearning.importance`: this module re-exports it, with a
DeprecationWarning, for code
written against the former flat layout (plugins). Import ``bench.unlearning.importance`` instead."""

import warnings

from bench.unlearning import importance as _moved
from bench.unlearning.importance import *  # noqa: F403

warnings.warn(
    "bench.importance moved to bench.unlearning.importance; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
