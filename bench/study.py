"""Moved to :mod:`bench.tuning.study`: this module re-exports it, with a DeprecationWarning, for
code
written against the former flat layout (plugins). Import ``bench.tuning.study`` instead."""

import warnings

from bench.tuning import study as _moved
from bench.tuning.study import *  # noqa: F403

warnings.warn(
    "bench.study moved to bench.tuning.study; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
