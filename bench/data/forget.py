"""Carving a dataset for one run: validation hold-out, CPU-sized subsets, and forget sets.

Forget-set selection follows the L2UL protocol: one permutation of the train positions,
seeded by the run's forget seed; instance forget sets are its first ``k`` entries, so sets of
growing ``k`` are nested prefixes (and so are random fractions). Class forgetting takes every
train instance of the listed classes.

The positions a run forgets are also written as an index file, ``OUT/forget/<digest>.npy``
(:func:`write_forget_index`), whose digest the run's meta record carries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bench.core.errors import BenchError
from bench.core.spec import DataSpec, ForgetSpec
from bench.data.datasets import DatasetBundle
from bench.data.splits import Split

VAL_SOURCES = ("train", "test")


@dataclass
class Carved:
    """Indices into the bundle's splits: ``train`` (after the validation hold-out and subset),
    ``val`` (possibly empty; rows of train, of test when ``val_from == "test"``, or of the
    dataset's own validation split ``bundle.val`` when ``val_from == "val"``) and ``test``."""

    bundle: DatasetBundle
    train: Tensor
    val: Tensor
    test: Tensor
    val_from: str = "train"

    @property
    def val_split(self) -> Split:
        """The split that ``val`` indexes."""
        if self.val_from == "val" and self.bundle.val is not None:
            return self.bundle.val
        return self.bundle.test if self.val_from == "test" else self.bundle.train


def carve(bundle: DatasetBundle, spec: DataSpec) -> Carved:
    """The run's rows of each split. The validation split is held out of train (or test) by
    ``spec.val_fraction``; with ``val_fraction`` 0, a dataset that has its own validation split
    (``bundle.val``: a ``folder:`` dataset's ``val/``) gives all of it, and train stays whole."""
    if spec.val_from not in VAL_SOURCES:
        raise BenchError(f"val_from must be one of {VAL_SOURCES}, got {spec.val_from!r}")
    if spec.val_fraction and not 0 < spec.val_fraction < 1:
        raise BenchError(f"val_fraction must be in (0, 1), got {spec.val_fraction}")
    if spec.val_from == "test" and not spec.val_fraction:
        raise BenchError("val_from='test' needs val_fraction in (0, 1) (the notebooks': 0.5)")
    n_train = len(bundle.train)
    all_train = np.arange(n_train)
    val = np.array([], dtype=np.int64)
    if spec.val_fraction and spec.val_from == "train":
        from sklearn.model_selection import train_test_split

        all_train, val = train_test_split(
            all_train,
            test_size=spec.val_fraction,
            random_state=spec.split_seed,
            stratify=bundle.train.targets.numpy(),
        )
    train = _subset(np.sort(all_train), spec.train_subset, spec.split_seed, "train_subset")
    test = _subset(
        np.arange(len(bundle.test)), spec.test_subset, spec.split_seed + 1, "test_subset"
    )
    val_from: str = spec.val_from
    if spec.val_from == "test":
        test, val = split_held_out(test, spec.val_fraction, spec.split_seed)
    elif not spec.val_fraction and bundle.val is not None:
        val, val_from = np.arange(len(bundle.val)), "val"
    return Carved(
        bundle,
        torch.from_numpy(train).long(),
        torch.from_numpy(np.sort(val)).long(),
        torch.from_numpy(np.sort(test)).long(),
        val_from,
    )


def split_held_out(idx: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(test, validation) rows of ``idx`` as ``torch.utils.data.random_split(idx, [1 -
    fraction, fraction], generator=torch.Generator().manual_seed(seed))`` gives them: the
    Nabla-tau notebooks' split of the held-out data (github.com/dnl-trpp/Nabla-Tau @ 1012093,
    ``Unlearning_main_Cifar10.ipynb``, fraction 0.5, seed = the notebook's SEED)."""
    keep, held = torch.utils.data.random_split(
        range(len(idx)), [1 - fraction, fraction], generator=torch.Generator().manual_seed(seed)
    )
    rows = [np.asarray(part.indices, dtype=np.int64) for part in (keep, held)]
    return idx[rows[0]], idx[rows[1]]


def _subset(idx: np.ndarray, n: int | None, seed: int, what: str) -> np.ndarray:
    if n is None or n >= len(idx):
        return idx
    if n < 1:
        raise BenchError(f"{what} must be >= 1 (got {n})")
    perm = np.random.default_rng(seed).permutation(len(idx))[:n]
    return np.sort(idx[perm])


def select_forget(train_targets: Tensor, spec: ForgetSpec, seed: int) -> Tensor:
    """Positions (0..len(train)-1, sorted) of the forget set within the carved train split."""
    n = train_targets.numel()
    if spec.kind == "class":
        bad = [c for c in spec.classes or () if not 0 <= c < int(train_targets.max()) + 1]
        if bad:
            raise BenchError(
                f"forget classes {bad} do not exist (classes are 0..{int(train_targets.max())})"
            )
        mask = torch.zeros(n, dtype=torch.bool)
        for c in spec.classes or ():
            mask |= train_targets == c
        return mask.nonzero().flatten()
    k = spec.k if spec.kind == "instance" else round((spec.fraction or 0) * n)
    if k is None or k < 1:
        raise BenchError(f"forget set {spec.label} is empty on a train split of {n}")
    if k >= n:
        raise BenchError(
            f"forget set {spec.label} needs {k} instances but the train split has "
            f"only {n}: choose a smaller k"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:k].sort().values


def retain_positions(n: int, forget: Tensor) -> Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[forget] = False
    return mask.nonzero().flatten()


def positions_digest(positions: Tensor) -> str:
    """A short digest of a set of train positions (order-insensitive): the first 16 hex
    digits of the sha256 of the sorted positions as little-endian int64."""
    p = positions.long().sort().values.cpu().numpy().astype("<i8").tobytes()
    return hashlib.sha256(p).hexdigest()[:16]


#: the folder under a run's output root that holds its forget sets' index files
FORGET_DIR = "forget"


def write_forget_index(out: Path, positions: Tensor) -> dict[str, str | int]:
    """Write ``positions`` (rows of the carved train split) as ``OUT/forget/<digest>.npy``, a
    sorted little-endian int64 array, unless that file exists; returns ``{"digest", "file"
    (relative to OUT), "n"}``. Content-addressed: the name is :func:`positions_digest` of the
    content, so a file never changes and another forget set is another file; ``python -m
    bench.eval --forget-file`` reads it back (with the run's ``--val-fraction`` /
    ``--train-subset``, which define the rows). Written atomically, so concurrent runs of
    one forget set may both write it."""
    import io

    from bench.core import records

    digest = positions_digest(positions)
    rel = f"{FORGET_DIR}/{digest}.npy"
    path = Path(out) / rel
    if not path.is_file():
        buf = io.BytesIO()
        np.save(buf, positions.long().sort().values.cpu().numpy().astype("<i8"))
        records.atomic_write_bytes(path, buf.getvalue())
    return {"digest": digest, "file": rel, "n": int(positions.numel())}
