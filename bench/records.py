"""Moved to :mod:`bench.core.records`: this module re-exports it, with a DeprecationWarning, for
code
written against the former flat layout (plugins). Import ``bench.core.records`` instead."""

import warnings

from bench.core import records as _moved
from bench.core.records import *  # noqa: F403

warnings.warn(
    "bench.records moved to bench.core.records; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
