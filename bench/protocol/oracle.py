"""The oracle pool: K models retrained from scratch without the forget set, cached by content.

Distribution-level forgetting metrics compare an unlearned model with *several* models that
never saw D_f: KLOM (Georgiev et al. 2024, "Attribute-to-Delete"), the NeurIPS 2023 unlearning
challenge's per-example epsilon, the population epsilon of Machine-Unlearning-Comparator. One
pool serves every method, seed and metric that shares its cause:

* key = hash of (dataset carving, number of train rows, architecture, recipe, the exact set of
  forgotten train positions, the oracle index, the training code version); so a pool is built
  once per (dataset, arch, forget set, recipe) and reused by every method and rerun;
* oracle ``i`` is trained with seed ``ORACLE_SEED + i`` (independent of the pretraining seed);
* each cached file holds the state dict and the logits of **every** train and test point
  (float32), so a new metric needs no model reload: metrics read ``logits(split)``.

Building is under a file lock, and files are written atomically: concurrent runs that need the
same oracle wait for one build, and an interrupted build leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.core import runtime
from bench.core.cache import load_entry, save_entry
from bench.core.errors import BenchError
from bench.core.spec import RunSpec, stable_hash
from bench.data import Carved, View
from bench.data.forget import positions_digest
from bench.models.train import TRAIN_CODE_VERSION, fresh_model, predict, train

log = logging.getLogger(__name__)

#: seed of oracle 0 (oracle i uses ORACLE_SEED + i), far from the replicate seeds of suites.
ORACLE_SEED = 100_000


def oracle_key(
    spec: RunSpec, n_train: int, forgotten: torch.Tensor, index: int, precision: str = "fp32"
) -> str:
    ident = {
        "data": dataclasses.replace(spec.data, retain_eval=None),  # scoring, not training
        "n_train": n_train,
        "arch": spec.arch,
        "recipe": spec.recipe,
        "forgotten": positions_digest(forgotten),
        "n_forgotten": int(forgotten.numel()),
        "oracle": index,
        "train_code": TRAIN_CODE_VERSION,
    }
    if precision != "fp32":  # bf16-trained oracles get keys of their own
        ident["precision"] = precision
    if spec.normalize is not None:  # --normalize: the models' first layer differs
        ident["normalize"] = spec.normalize
    return stable_hash(ident)


@dataclass
class OraclePool:
    """Logits of K retrained models on every train point (``train``: rows in carved-train
    order) and test point (``test``), stacked as ``[K, n, C]`` float32 CPU tensors."""

    train_logits: torch.Tensor
    test_logits: torch.Tensor
    forgotten: torch.Tensor
    seconds: list[float] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.train_logits.shape[0])

    def logits(self, split: str, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``[K, n, C]`` logits of a split: ``test``, or ``train`` rows at ``positions`` (all
        when ``None``)."""
        if split == "test":
            return self.test_logits
        if split != "train":
            raise KeyError(f"oracle logits exist for 'train' and 'test', not {split!r}")
        if positions is None:
            return self.train_logits
        return self.train_logits.index_select(1, positions.long().cpu())


def build_oracle_pool(
    spec: RunSpec,
    carved: Carved,
    forgotten: torch.Tensor,
    size: int,
    cache: Path,
    device: torch.device,
    first: int = 0,
) -> OraclePool:
    """The pool of ``size`` retrained models for ``spec``'s dataset, arch and recipe without the
    train positions ``forgotten``; each model is trained once and cached under
    ``cache/oracle/``. ``first`` skips to oracle ``first`` (models ``first .. first+size-1``;
    the SLURM executor builds each oracle in a job of its own)."""
    from bench.core.files import file_lock

    if size < 1:
        raise BenchError("the oracle pool needs pool_size >= 1 (set it in the suite)")
    if spec.recipe.epochs == 0:
        raise BenchError(
            f"an oracle pool retrains {spec.arch} from scratch: the recipe needs epochs > 0"
        )
    bundle = carved.bundle
    n_train = len(carved.train)
    train_all = View(bundle.train, carved.train, device, "train")
    test_view = View(bundle.test, carved.test, device, "test")
    keep = torch.ones(n_train, dtype=torch.bool)
    keep[forgotten.long()] = False
    retain = train_all.subset(torch.nonzero(keep).flatten(), "retain")
    tr, te, secs, keys = [], [], [], []
    for i in range(first, first + size):
        key = oracle_key(spec, n_train, forgotten, i, runtime.pretrain_precision(device))
        path = cache / "oracle" / f"oracle-{key}.pt"
        with file_lock(path.with_suffix(".lock")):
            # verified (key, content hash, logit shapes); a damaged entry is moved aside
            blob = load_entry(path, key, _fits(n_train, len(carved.test)))
            if blob is None:
                t0 = time.perf_counter()
                model = fresh_model(bundle, spec.arch, ORACLE_SEED + i, normalize=spec.normalize)
                model.to(device)
                with runtime.shared(device):
                    steps = train(model, retain, spec.recipe, ORACLE_SEED + i)
                with torch.no_grad():
                    blob = {
                        "train_logits": predict(model, train_all).cpu(),
                        "test_logits": predict(model, test_view).cpu(),
                        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                        "info": {"seconds": time.perf_counter() - t0, "steps": steps, "key": key},
                    }
                save_entry(blob, path, key)
                log.info("oracle %d/%d built in %.1f s", i + 1, size, blob["info"]["seconds"])
        tr.append(blob["train_logits"])
        te.append(blob["test_logits"])
        secs.append(float(blob["info"]["seconds"]))
        keys.append(key)
    return OraclePool(torch.stack(tr), torch.stack(te), forgotten.clone(), secs, keys)


def _fits(n_train: int, n_test: int):
    """Validation of a cached oracle: logits for every train and test row."""

    def check(blob: dict) -> None:
        tr, te = blob["train_logits"], blob["test_logits"]
        if tr.dim() != 2 or tr.shape[0] != n_train or te.dim() != 2 or te.shape[0] != n_test:
            raise ValueError(
                f"logits of shape {tuple(tr.shape)} / {tuple(te.shape)} for "
                f"{n_train} train / {n_test} test rows"
            )

    return check
