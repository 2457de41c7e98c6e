"""Moved to :mod:`bench.models.checkpoint`: this module re-exports it, with a DeprecationWarning,
for code
written against the former flat layout (plugins). Import ``bench.models.checkpoint`` instead."""

import warnings

from bench.models import checkpoint as _moved
from bench.models.checkpoint import *  # noqa: F403

warnings.warn(
    "bench.checkpoint moved to bench.models.checkpoint; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
