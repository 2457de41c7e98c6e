"""Moved to :mod:`bench.core.errors`: this module re-exports it, with a DeprecationWarning, for code
written against the former flat layout (plugins). Import ``bench.core.errors`` instead."""

import warnings

from bench.core import errors as _moved
from bench.core.errors import *  # noqa: F403

warnings.warn(
    "bench.errors moved to bench.core.errors; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
