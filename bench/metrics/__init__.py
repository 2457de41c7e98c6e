"""Metric registry. A metric reads an :class:`EvalInput` (the model, the evaluation views,
memoised logits) and returns ``(split, metric, value)`` triples.

Each entry carries ``ideal`` (what value means "unlearned": ``match retrain``, ``0.5``, ``0``,
``1``) and ``cost`` (``cheap`` runs by default; ``expensive`` only when a suite names it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from bench.data import View
from bench.registry import Registry

METRICS = Registry("metric")


def register_metric(name: str, *, ideal: str, cost: str = "cheap", **meta) -> Callable:
    return METRICS.register(name, ideal=ideal, cost=cost, **meta)


@dataclass
class EvalInput:
    model: nn.Module
    views: dict[str, View]
    num_classes: int
    _logits: dict[str, torch.Tensor] = field(default_factory=dict)

    def logits(self, split: str) -> torch.Tensor:
        if split not in self._logits:
            from bench.train import predict

            self._logits[split] = predict(self.model, self.views[split])
        return self._logits[split]

    def targets(self, split: str) -> torch.Tensor:
        return self.views[split].targets.to(self.logits(split).device)


@register_metric("accuracy", ideal="match retrain", unit="%")
def accuracy(ev: EvalInput) -> list[tuple[str, str, float]]:
    """Top-1 accuracy in percent on every evaluation split (D_f, D_r, test, validation).
    UA = 100 - accuracy(forget), RA = accuracy(retain), TA = accuracy(test) (Jia et al. 2023)."""
    out = []
    for split, view in ev.views.items():
        if len(view) == 0:
            continue
        acc = (ev.logits(split).argmax(1) == ev.targets(split)).float().mean().item() * 100
        out.append((split, "accuracy", acc))
    return out


def evaluate(
    model: nn.Module, views: dict[str, View], num_classes: int, metrics: tuple[str, ...]
) -> list[tuple[str, str, float]]:
    ev = EvalInput(model, views, num_classes)
    rows: list[tuple[str, str, float]] = []
    for name in metrics:
        rows.extend(METRICS.get(name)(ev))
    return rows


from bench.metrics import mia as _mia  # noqa: E402,F401
