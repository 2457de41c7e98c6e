"""Unpickling data files without running code.

``pickle.load`` imports and calls whatever a file names, so a crafted file in a data root
could run any command. :class:`DataUnpickler` admits only what plain data needs: dicts, lists,
tuples, str, bytes, numbers, sets and numpy arrays (numpy's own array-pickling helpers under
their numpy 1 and 2 names); any other global is refused before anything runs. CIFAR pickles
(official, re-packed or hand-made at any protocol) need nothing more.
"""

from __future__ import annotations

import functools
import pickle
from typing import IO, Any

import numpy as np


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it for bytes, limited to harmless codecs."""
    if encoding.replace("-", "").lower() not in ("latin1", "iso88591", "utf8"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode(encoding, errors)


#: what a data pickle may import besides numpy's helpers: arrays, dtypes, sets, and bytes as
#: protocol 2 writes them (``_codecs.encode(text, "latin1")``); nothing that runs code
_SAFE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): _latin1_encode,
}


class RefusedPickle(pickle.UnpicklingError):
    """A pickle that names a global outside the data-only set."""


class DataUnpickler(pickle.Unpickler):
    """Unpickles plain data only: dicts, lists, tuples, str, bytes, numbers and numpy arrays.
    Any other global (a function, a class) is refused before anything runs."""

    def find_class(self, module: str, name: str):
        obj = _SAFE_GLOBALS.get((module, name)) or _numpy_helpers().get((module, name))
        if obj is None:
            raise RefusedPickle(f"{module}.{name}")
        return obj


@functools.cache
def _numpy_helpers() -> dict:
    """numpy's array-pickling helpers under numpy 1 (``numpy.core``) and 2 (``numpy._core``)
    module names, taken from numpy itself (not imported by the name a pickle gives)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric
    out = {}
    for mod in ("numpy.core", "numpy._core"):
        out[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        out[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    return out


def load_data_pickle(f: IO[bytes], encoding: str = "latin1") -> Any:
    """Unpickle plain data from ``f`` (``latin1``: Python 2 pickles' byte strings as str);
    raises :class:`RefusedPickle` naming the global a file asked for."""
    return DataUnpickler(f, encoding=encoding).load()
