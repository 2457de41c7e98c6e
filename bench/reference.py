"""Moved to :mod:`bench.core.reference`: this module re-exports it, with a DeprecationWarning, for
code
written against the former flat layout (plugins). Import ``bench.core.reference`` instead."""

import warnings

from bench.core import reference as _moved
from bench.core.reference import *  # noqa: F403

warnings.warn(
    "bench.reference moved to bench.core.reference; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
