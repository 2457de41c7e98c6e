"""Moved to :mod:`bench.core.runtime`: this module re-exports it, with a DeprecationWarning, for
code
written against the former flat layout (plugins). Import ``bench.core.runtime`` instead."""

import warnings

from bench.core import runtime as _moved
from bench.core.runtime import *  # noqa: F403

warnings.warn(
    "bench.runtime moved to bench.core.runtime; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
