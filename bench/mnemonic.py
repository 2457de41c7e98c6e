"""Moved to :mod:`bench.unlearning.mnemonic`: this module re-exports it, with a DeprecationWarning,
for code
written against the former flat layout (plugins). Import ``bench.unlearning.mnemonic`` instead."""

import warnings

from bench.unlearning import mnemonic as _moved
from bench.unlearning.mnemonic import *  # noqa: F403

warnings.warn(
    "bench.mnemonic moved to bench.unlearning.mnemonic; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
