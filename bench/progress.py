"""Moved to :mod:`bench.protocol.progress`: this module re-exports it, with a DeprecationWarning,
for code
written against the former flat layout (plugins). Import ``bench.protocol.progress`` instead."""

import warnings

from bench.protocol import progress as _moved
from bench.protocol.progress import *  # noqa: F403

warnings.warn(
    "bench.progress moved to bench.protocol.progress; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
