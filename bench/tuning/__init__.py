"""Equal-budget tuning: the search (:mod:`bench.tuning.search`, re-exported here) and Optuna's
studies (:mod:`bench.tuning.study`)."""

from bench.tuning import search as _search
from bench.tuning.search import *  # noqa: F403 - this package's former module, re-exported


def __getattr__(name: str):
    """Names of the former module ``bench.tuning`` not exported by ``*`` (private ones)."""
    try:
        return getattr(_search, name)
    except AttributeError:
        raise AttributeError(f"module 'bench.tuning' has no attribute {name!r}") from None
