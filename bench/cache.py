"""Moved to :mod:`bench.core.cache`: this module re-exports it, with a DeprecationWarning, for code
written against the former flat layout (plugins). Import ``bench.core.cache`` instead."""

import warnings

from bench.core import cache as _moved
from bench.core.cache import *  # noqa: F403

warnings.warn(
    "bench.cache moved to bench.core.cache; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
