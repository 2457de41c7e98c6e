"""Moved to :mod:`bench.unlearning.l2ul`: this module re-exports it, with a DeprecationWarning, for
code
written against the former flat layout (plugins). Import ``bench.unlearning.l2ul`` instead."""

import warnings

from bench.unlearning import l2ul as _moved
from bench.unlearning.l2ul import *  # noqa: F403

warnings.warn(
    "bench.l2ul moved to bench.unlearning.l2ul; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
