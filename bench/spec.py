"""Moved to :mod:`bench.core.spec`: this module re-exports it, with a DeprecationWarning, for code
written against the former flat layout (plugins). Import ``bench.core.spec`` instead."""

import warnings

from bench.core import spec as _moved
from bench.core.spec import *  # noqa: F403

warnings.warn(
    "bench.spec moved to bench.core.spec; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
