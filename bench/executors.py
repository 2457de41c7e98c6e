"""Moved to :mod:`bench.execution.executors`: this module re-exports it, with a DeprecationWarning,
for code
written against the former flat layout (plugins). Import ``bench.execution.executors`` instead."""

import warnings

from bench.execution import executors as _moved
from bench.execution.executors import *  # noqa: F403

warnings.warn(
    "bench.executors moved to bench.execution.executors; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
