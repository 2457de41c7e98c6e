"""Moved to :mod:`bench.core.files`: this module re-exports it, with a DeprecationWarning, for code
written against the former flat layout (plugins). Import ``bench.core.files`` instead."""

import warnings

from bench.core import files as _moved
from bench.core.files import *  # noqa: F403

warnings.warn(
    "bench.files moved to bench.core.files; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
