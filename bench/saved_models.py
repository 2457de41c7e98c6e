"""Moved to :mod:`bench.models.saved_models`: this module re-exports it, with a DeprecationWarning,
for code
written against the former flat layout (plugins). Import ``bench.models.saved_models`` instead."""

import warnings

from bench.models import saved_models as _moved
from bench.models.saved_models import *  # noqa: F403

warnings.warn(
    "bench.saved_models moved to bench.models.saved_models; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
