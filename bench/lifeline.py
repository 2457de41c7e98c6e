"""Moved to :mod:`bench.execution.lifeline`: this module re-exports it, with a DeprecationWarning,
for code
written against the former flat layout (plugins). Import ``bench.execution.lifeline`` instead."""

import warnings

from bench.execution import lifeline as _moved
from bench.execution.lifeline import *  # noqa: F403

warnings.warn(
    "bench.lifeline moved to bench.execution.lifeline; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
