"""Representation diagnostics of L2UL (Cha et al., AAAI 2024, Figs. 2-4) as a registered metric.

``representation`` (expensive tier, after unlearning only) records:

* rows ``cka_<layer>`` on ``forget`` and ``retain``: layer-wise linear CKA (Kornblith et al. 2019)
  between the original and the unlearned model's features (:mod:`bench.metrics.representation`);
  1 = the representation did not change. D_r is a seeded sample of at most
  :data:`MAX_RETAIN` instances, D_f at most :data:`MAX_FORGET`;
* row ``flip_rate`` on ``forget``: % of D_f whose predicted class changed;
* artifact ``confusion``: the pre- vs post-unlearning confusion matrix on D_f (rows: the original
  model's predictions, columns: the unlearned model's);
* artifact ``embeddings``: penultimate features of the original and unlearned models on D_f and
  the D_r sample, with labels, for t-SNE figures.
"""

from __future__ import annotations

import torch

from bench.metrics.core import EvalInput, register_metric
from bench.metrics.representation import confusion, default_layers, embeddings, layerwise_cka

MAX_FORGET, MAX_RETAIN = 512, 512


def _sample(ev: EvalInput, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return ev.views[split].sample(n, seed=0).tensors()


@register_metric("representation", ideal="match retrain", cost="expensive")
def representation(ev: EvalInput) -> list[tuple[str, str, float]]:
    """Layer-wise CKA original vs unlearned on D_f and a D_r sample (``cka_<layer>``), the
    D_f prediction flip rate in %, and the confusion / embedding artifacts. Needs the original
    model (after unlearning only). "Unlearned": match retrain (the retrained model's CKA to the
    original is the reference; L2UL reports its method keeps D_r representations near 1)."""
    if ev.original is None or not ev.has("forget", "retain"):
        return []
    rows = []
    layers = default_layers(ev.model)
    x_f, y_f = _sample(ev, "forget", MAX_FORGET)
    x_r, y_r = _sample(ev, "retain", MAX_RETAIN)
    for split, x in (("forget", x_f), ("retain", x_r)):
        for layer, value in layerwise_cka(ev.original, ev.model, x, layers).items():
            rows.append((split, f"cka_{layer}", value))
    before = ev.original_logits("forget").argmax(1).cpu()
    after = ev.logits("forget").argmax(1).cpu()
    rows.append(("forget", "flip_rate", float((before != after).double().mean() * 100)))
    ev.add_artifact(
        "confusion",
        matrix=confusion(before, after, ev.num_classes),
        labels=ev.targets("forget").cpu(),
    )
    ev.add_artifact(
        "embeddings",
        forget_original=embeddings(ev.original, x_f),
        forget_unlearned=embeddings(ev.model, x_f),
        forget_labels=y_f.cpu(),
        retain_original=embeddings(ev.original, x_r),
        retain_unlearned=embeddings(ev.model, x_r),
        retain_labels=y_r.cpu(),
    )
    return rows
