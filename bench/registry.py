"""Moved to :mod:`bench.core.registry`: this module re-exports it, with a DeprecationWarning, for
code
written against the former flat layout (plugins). Import ``bench.core.registry`` instead."""

import warnings

from bench.core import registry as _moved
from bench.core.registry import *  # noqa: F403

warnings.warn(
    "bench.registry moved to bench.core.registry; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
