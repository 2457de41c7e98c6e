"""Moved to :mod:`bench.protocol.plan`: this module re-exports it, with a DeprecationWarning, for
code
written against the former flat layout (plugins). Import ``bench.protocol.plan`` instead."""

import warnings

from bench.protocol import plan as _moved
from bench.protocol.plan import *  # noqa: F403

warnings.warn(
    "bench.plan moved to bench.protocol.plan; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
