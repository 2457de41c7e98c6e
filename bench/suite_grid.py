"""Moved to :mod:`bench.suites.grid`: this module re-exports it, with a DeprecationWarning, for code
written against the former flat layout (plugins). Import ``bench.suites.grid`` instead."""

import warnings

from bench.suites import grid as _moved
from bench.suites.grid import *  # noqa: F403

warnings.warn(
    "bench.suite_grid moved to bench.suites.grid; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
