"""The metric registry, what a metric receives (:class:`EvalInput`), accuracy, and
:func:`evaluate`; the metrics themselves are in the sibling modules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.core.registry import Registry
from bench.data import View

METRICS = Registry("metric")


def register_metric(name: str, *, ideal: str, cost: str = "cheap", **meta) -> Callable:
    return METRICS.register(name, ideal=ideal, cost=cost, **meta)


@dataclass
class EvalInput:
    """What a metric may read. ``views`` are the evaluation splits (``forget``, ``retain``,
    ``test``, and ``val`` / ``forget_request`` when present); logits are memoised per split.

    Optional context, given by the protocol after unlearning (``None`` before it, or when the
    run does not provide it; metrics that need it then return no rows):

    * ``original``: the pretrained model (representation diagnostics, relearn time);
    * ``positions``: train positions (rows of the carved train split) of the train-derived
      views, to look up oracle logits;
    * ``oracle``: a callable building / loading the :class:`bench.protocol.oracle.OraclePool` (K
    models
      retrained without D_f), called at most once;
    * ``replicas``: a callable returning M-1 further unlearned models (the same method on the
      same forget set with other unlearning seeds), called at most once;
    * ``fresh``: a callable returning a randomly initialised model of the architecture (the
      "incompetent teacher" of ZRF);
    * ``artifacts``: arrays a metric wants stored beside the records (``name -> {key: array}``).
    """

    model: nn.Module
    views: dict[str, View]
    num_classes: int
    original: nn.Module | None = None
    positions: dict[str, torch.Tensor] = field(default_factory=dict)
    oracle: Callable[[], Any] | None = None
    replicas: Callable[[], list[nn.Module]] | None = None
    fresh: Callable[[], nn.Module] | None = None
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    _logits: dict[str, torch.Tensor] = field(default_factory=dict)
    _memo: dict[str, Any] = field(default_factory=dict)

    def logits(self, split: str) -> torch.Tensor:
        if split not in self._logits:
            from bench.models.train import predict

            self._logits[split] = predict(self.model, self.views[split])
        return self._logits[split]

    def targets(self, split: str) -> torch.Tensor:
        return self.views[split].targets.to(self.logits(split).device)

    def has(self, *splits: str) -> bool:
        return all(s in self.views and len(self.views[s]) > 0 for s in splits)

    def _once(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._memo:
            self._memo[name] = make()
        return self._memo[name]

    def original_logits(self, split: str) -> torch.Tensor:
        """Logits of the pretrained model on ``split`` (requires ``original``)."""
        from bench.models.train import predict

        if self.original is None:
            raise RuntimeError("this evaluation has no original model")
        return self._once(f"original:{split}", lambda: predict(self.original, self.views[split]))

    def oracle_logits(self, split: str) -> torch.Tensor:
        """``[K, n, C]`` logits of the oracle pool on ``split`` (CPU float32)."""
        if self.oracle is None:
            raise RuntimeError("this evaluation has no oracle pool (set the suite's pool_size)")
        pool = self._once("oracle", self.oracle)
        if split == "test":
            return pool.logits("test")
        if split not in self.positions:
            raise KeyError(f"no oracle logits for split {split!r}")
        return pool.logits("train", self.positions[split])

    def replica_logits(self, split: str) -> torch.Tensor:
        """``[M, n, C]`` logits of the unlearned model (row 0) and its M-1 replicas."""
        from bench.models.train import predict

        if self.replicas is None:
            raise RuntimeError("this evaluation has no unlearned replicas (set pool_size)")
        models = self._once("replicas", self.replicas)

        def stack() -> torch.Tensor:
            rows = [self.logits(split).float().cpu()]
            rows += [predict(m, self.views[split]).float().cpu() for m in models]
            return torch.stack(rows)

        return self._once(f"replicas:{split}", stack)

    def add_artifact(self, name: str, **arrays: Any) -> None:
        """Store arrays (numpy or tensors) as ``artifacts/<run_id>/<name>.npz``."""
        self.artifacts.setdefault(name, {}).update(
            {k: v.detach().cpu().numpy() if torch.is_tensor(v) else v for k, v in arrays.items()}
        )


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
    model: nn.Module,
    views: dict[str, View],
    num_classes: int,
    metrics: tuple[str, ...],
    **context: Any,
) -> list[tuple[str, str, float]]:
    """Rows of every named metric; ``context`` fills the optional fields of
    :class:`EvalInput`. Returns the rows; artifacts land in ``context['artifacts']`` when a
    dict is given there."""
    ev = EvalInput(model, views, num_classes, **context)
    rows: list[tuple[str, str, float]] = []
    for name in metrics:
        rows.extend(METRICS.get(name)(ev))
    return rows
