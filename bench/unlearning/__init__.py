"""The methods' side: the method interface (:mod:`bench.unlearning.method`), the shared loops
methods build on (:mod:`bench.unlearning.loops`, re-exported here), and the L2UL family, MAS
importance, adversarial examples and mnemonic codes."""

from bench.unlearning import loops as _loops
from bench.unlearning.loops import *  # noqa: F403 - this package's former module, re-exported


def __getattr__(name: str):
    """Names of the former module ``bench.unlearning`` not exported by ``*`` (private ones)."""
    try:
        return getattr(_loops, name)
    except AttributeError:
        raise AttributeError(f"module 'bench.unlearning' has no attribute {name!r}") from None
