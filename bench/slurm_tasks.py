"""Moved to :mod:`bench.execution.slurm_tasks`: this module re-exports it, with a
DeprecationWarning, for code
written against the former flat layout (plugins). Import ``bench.execution.slurm_tasks`` instead."""

import warnings

from bench.execution import slurm_tasks as _moved
from bench.execution.slurm_tasks import *  # noqa: F403

warnings.warn(
    "bench.slurm_tasks moved to bench.execution.slurm_tasks; import it from there",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_moved, name)
