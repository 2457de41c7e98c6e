"""Moved to :mod:`bench.protocol.oracle`: this module re-exports it, with a DeprecationWarning, for
code
written against the former flat layout (plugins). Import ``bench.protocol.oracle`` instead."""

import warnings

from bench.protocol import oracle as _moved
from bench.protocol.oracle import *  # noqa: F403

warnings.warn(
    "bench.oracle moved to bench.protocol.oracle; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
