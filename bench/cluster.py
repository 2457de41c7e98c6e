"""Moved to :mod:`bench.execution.cluster`: this module re-exports it, with a DeprecationWarning,
for code
written against the former flat layout (plugins). Import ``bench.execution.cluster`` instead."""

import warnings

from bench.execution import cluster as _moved
from bench.execution.cluster import *  # noqa: F403

warnings.warn(
    "bench.cluster moved to bench.execution.cluster; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
