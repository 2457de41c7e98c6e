"""Moved to :mod:`bench.unlearning.method`: this module re-exports it, with a DeprecationWarning,
for code
written against the former flat layout (plugins). Import ``bench.unlearning.method`` instead."""

import warnings

from bench.unlearning import method as _moved
from bench.unlearning.method import *  # noqa: F403

warnings.warn(
    "bench.method moved to bench.unlearning.method; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
