"""Accuracy-based metrics: UA / RA / TA, per-class accuracy, and relearn time.

* UA, RA, TA as named by Jia et al. 2023 ("Model Sparsity Can Simplify Machine Unlearning",
  Unlearn-Sparse) and Fan et al. 2024 (SalUn): UA = 100 - acc(D_f), RA = acc(D_r),
  TA = acc(D_test). All "match retrain".
* Per-class test accuracy (and on D_f), for class-wise forgetting (MUC's TUA / TRA are the
  forgotten / remaining classes' entries).
* Relearn time (the AIN family of ERASURE; Golatkar et al. 2020's "relearn time"): how many
  epochs of fine-tuning on D_f with its true labels bring D_f accuracy back to (1 - alpha) times
  the original model's D_f accuracy. Knowledge that was only hidden comes back fast; "match
  retrain".
"""

from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from bench.metrics.core import EvalInput, register_metric

Rows = list[tuple[str, str, float]]


def _acc(ev: EvalInput, split: str) -> float:
    return float((ev.logits(split).argmax(1) == ev.targets(split)).float().mean() * 100)


@register_metric("ua", ideal="match retrain", unit="%")
def unlearning_accuracy(ev: EvalInput) -> Rows:
    """UA = 100 - accuracy on D_f, in % (Jia et al. 2023). Match retrain (not 100)."""
    return [("forget", "ua", 100.0 - _acc(ev, "forget"))] if ev.has("forget") else []


@register_metric("ra", ideal="match retrain", unit="%")
def remaining_accuracy(ev: EvalInput) -> Rows:
    """RA = accuracy on D_r, in % (Jia et al. 2023). Match retrain."""
    return [("retain", "ra", _acc(ev, "retain"))] if ev.has("retain") else []


@register_metric("ta", ideal="match retrain", unit="%")
def test_accuracy(ev: EvalInput) -> Rows:
    """TA = accuracy on D_test, in % (Jia et al. 2023). Match retrain."""
    return [("test", "ta", _acc(ev, "test"))] if ev.has("test") else []


def per_class(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy in % of each class (NaN for a class with no examples), shape ``[C]``."""
    y = y.long().cpu()
    hit = (pred.cpu() == y).double()
    n = torch.bincount(y, minlength=num_classes).double()
    correct = torch.bincount(y, weights=hit, minlength=num_classes)
    return torch.where(n > 0, 100.0 * correct / n.clamp_min(1), torch.nan)


@register_metric("per_class_accuracy", ideal="match retrain", unit="%")
def per_class_accuracy(ev: EvalInput) -> Rows:
    """Accuracy of every class on D_test and D_f, as metrics ``class_<c>_accuracy`` (classes
    absent from a split are left out). For class-wise forgetting, the forgotten class's test
    entry is MUC's TUA and the others' mean its TRA. Match retrain."""
    rows: Rows = []
    for split in ("test", "forget"):
        if not ev.has(split):
            continue
        acc = per_class(ev.logits(split).argmax(1), ev.targets(split), ev.num_classes)
        rows += [
            (split, f"class_{c}_accuracy", float(a))
            for c, a in enumerate(acc.tolist())
            if a == a  # not NaN
        ]
    return rows


#: relearn-time settings: fine-tune on D_f with SGD(lr, momentum 0.9), batch 32, until D_f
#: accuracy >= (1 - alpha) x the original model's, at most ``cap`` epochs
RELEARN_LR, RELEARN_ALPHA, RELEARN_CAP, RELEARN_BATCH = 0.01, 0.05, 100, 32


def relearn_epochs(
    model: torch.nn.Module,
    forget,
    goal: float,
    lr: float = RELEARN_LR,
    cap: int = RELEARN_CAP,
    batch_size: int = RELEARN_BATCH,
    seed: int = 0,
) -> int:
    """Epochs of fine-tuning a *copy* of ``model`` on ``forget`` (a View, true labels, shuffled
    with ``seed``, train mode, SGD momentum 0.9) until its accuracy on ``forget`` is >= ``goal``
    (in %), checked before the first epoch and after each one; ``cap + 1`` when the cap is hit.
    """
    from bench.models.train import accuracy

    m = copy.deepcopy(model)
    if accuracy(m, forget) >= goal:
        return 0
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(1, cap + 1):
        m.train()
        for x, y in forget.loader(batch_size, shuffle=True, generator=g):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            opt.step()
        if accuracy(m, forget) >= goal:
            return epoch
    return cap + 1


@register_metric("relearn_time", ideal="match retrain", cost="expensive", unit="epochs")
def relearn_time(ev: EvalInput) -> Rows:
    """Epochs of fine-tuning on D_f (SGD lr 0.01, momentum 0.9, batch 32, true labels) until D_f
    accuracy reaches (1 - 0.05) x the original model's D_f accuracy; 101 = not within 100
    epochs. Needs the original model (after unlearning only). Match retrain: hidden knowledge
    comes back faster than knowledge never learned."""
    if ev.original is None or not ev.has("forget"):
        return []
    from bench.models.train import accuracy

    goal = (1 - RELEARN_ALPHA) * accuracy(ev.original, ev.views["forget"])
    return [("forget", "relearn_time", float(relearn_epochs(ev.model, ev.views["forget"], goal)))]
