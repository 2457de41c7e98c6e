"""Moved to :mod:`bench.models.train`: this module re-exports it, with a DeprecationWarning, for
code
written against the former flat layout (plugins). Import ``bench.models.train`` instead."""

import warnings

from bench.models import train as _moved
from bench.models.train import *  # noqa: F403

warnings.warn(
    "bench.train moved to bench.models.train; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
