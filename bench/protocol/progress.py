"""Traces over unlearning progress for every method, with no code in the methods.

While a method unlearns, :class:`ProgressProbe` watches the optimizer steps taken on the model
it was given (through PyTorch's global optimizer step post-hook,
``torch.optim.optimizer.register_optimizer_step_post_hook``) and, at log-spaced step counts
(one probe per doubling: 1, 2, 4, 8, 16, ...), evaluates the model on
small fixed subsets of D_f, D_r and D_test:

* ``accuracy`` on ``forget``, ``retain`` and ``test`` (%), and
* ``mia_auc`` on ``forget``: the ROC AUC of a loss-threshold membership attack, D_f (members)
  against D_test (non-members); 0.5 means D_f's losses look like unseen data.

The probe is cheap (a few hundred forward passes per probe, O(log steps) probes) and its time is
measured and subtracted from the method's recorded wall time, so RTE stays fair. It touches no
random state and restores every module's train/eval flag, so a traced run gives the same model
as an untraced one. Optimizers over other models (retraining from scratch, a teacher) are not
watched; the trace then has its two end points only (before, after).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from bench.data.splits import View

#: examples per split used by a probe (a seeded subset when a split is larger)
PROBE_SIZE = 128


def probe_steps(limit: int = 10**9) -> set[int]:
    """Step counts at which to probe: 1, 2, 4, 8, ... up to ``limit``."""
    return {2**i for i in range(limit.bit_length()) if 2**i <= limit}


_SCHEDULE = probe_steps()


def _sample(view: View, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    return view.sample(size, seed).tensors() if len(view) else None


class ProgressProbe:
    """Context manager: traces ``model``'s progress into ``trace(step, split, metric, value)``
    while active. Call :meth:`probe` yourself for the end points."""

    def __init__(
        self,
        model: nn.Module,
        views: dict[str, View],
        trace,
        seed: int = 0,
        size: int = PROBE_SIZE,
        batch_size: int = 512,
    ) -> None:
        self.model = model
        self.trace = trace
        self.batch_size = batch_size
        self.data = {
            split: s
            for i, split in enumerate(("forget", "retain", "test"))
            if split in views and (s := _sample(views[split], size, seed + i)) is not None
        }
        self.params = {id(p) for p in model.parameters()}
        self.steps = 0
        self.seconds = 0.0
        self._handle = None

    def __enter__(self) -> ProgressProbe:
        self._handle = register_optimizer_step_post_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _watched(self, opt: torch.optim.Optimizer) -> bool:
        return any(id(p) in self.params for g in opt.param_groups for p in g["params"])

    def _hook(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not self._watched(opt):
            return
        self.steps += 1
        if self.steps in _SCHEDULE:
            self.probe(self.model, self.steps)

    @torch.no_grad()
    def probe(self, model: nn.Module, step: int) -> None:
        """Evaluate ``model`` on the probe subsets (one batched pass) and trace the values at
        ``step``."""
        if not self.data:
            return
        t0 = time.perf_counter()
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            x = torch.cat([x for x, _ in self.data.values()])
            y = torch.cat([y for _, y in self.data.values()])
            logits = torch.cat(
                [model(x[s : s + self.batch_size]) for s in range(0, len(x), self.batch_size)]
            ).float()
            correct = (logits.argmax(1) == y).float().cpu()
            loss = nn.functional.cross_entropy(logits, y, reduction="none").cpu()
        finally:
            for m, mode in modes:
                m.training = mode
        losses, start = {}, 0
        for split, (xs, _) in self.data.items():
            end = start + len(xs)
            self.trace(step, split, "accuracy", 100.0 * correct[start:end].mean().item())
            losses[split] = loss[start:end].numpy()
            start = end
        if "forget" in losses and "test" in losses:
            self.trace(step, "forget", "mia_auc", loss_auc(losses["forget"], losses["test"]))
        self.seconds += time.perf_counter() - t0


def loss_auc(member_loss, nonmember_loss) -> float:
    """ROC AUC of the loss-threshold attack ("lower loss → member"): the probability that a
    random member has a lower loss than a random non-member (ties count half), computed from
    average ranks (the Mann-Whitney U statistic). NaN losses (a diverged model) are treated as
    +inf, i.e. as non-members."""
    m = np.nan_to_num(np.asarray(member_loss, dtype=np.float64), nan=math.inf)
    n = np.nan_to_num(np.asarray(nonmember_loss, dtype=np.float64), nan=math.inf)
    if m.size == 0 or n.size == 0:
        return math.nan
    ranks = rankdata(-np.r_[m, n])  # average ranks; rank 1 = the highest loss
    u = ranks[: m.size].sum() - m.size * (m.size + 1) / 2
    return float(u / (m.size * n.size))
