"""Suites: the machinery (:mod:`bench.suites.grid`) and the registered suites
(:mod:`bench.suites.catalog`, re-exported here; SalUn's Table 1 in :mod:`bench.suites.salun`)."""

from bench.suites import catalog as _catalog
from bench.suites.catalog import *  # noqa: F403 - this package's former module, re-exported


def __getattr__(name: str):
    """Names of the former module ``bench.suites`` not exported by ``*`` (private ones)."""
    try:
        return getattr(_catalog, name)
    except AttributeError:
        raise AttributeError(f"module 'bench.suites' has no attribute {name!r}") from None
