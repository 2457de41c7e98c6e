"""Moved to :mod:`bench.models.archs`: this module re-exports it, with a DeprecationWarning, for
code
written against the former flat layout (plugins). Import ``bench.models.archs`` instead."""

import warnings

from bench.models import archs as _moved
from bench.models.archs import *  # noqa: F403

warnings.warn(
    "bench.archs moved to bench.models.archs; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
