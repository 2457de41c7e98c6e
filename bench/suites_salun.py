"""Moved to :mod:`bench.suites.salun`: this module re-exports it, with a DeprecationWarning, for
code
written against the former flat layout (plugins). Import ``bench.suites.salun`` instead."""

import warnings

from bench.suites import salun as _moved
from bench.suites.salun import *  # noqa: F403

warnings.warn(
    "bench.suites_salun moved to bench.suites.salun; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
