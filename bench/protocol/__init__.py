"""The common protocol: a run's stages (:mod:`bench.protocol.stages`, re-exported here), the
oracle pool, the plan of shared models and the progress probe."""

from bench.protocol import stages as _stages
from bench.protocol.stages import *  # noqa: F403 - this package's former module, re-exported


def __getattr__(name: str):
    """Names of the former module ``bench.protocol`` not exported by ``*`` (private ones)."""
    try:
        return getattr(_stages, name)
    except AttributeError:
        raise AttributeError(f"module 'bench.protocol' has no attribute {name!r}") from None
