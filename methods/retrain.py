"""Retrain from scratch on D_r: the gold standard of exact unlearning."""

from __future__ import annotations

from dataclasses import dataclass

from bench.unlearning.method import register_method


@dataclass(frozen=True)
class RetrainHP:
    """Retraining uses the run's pretraining recipe; no hyperparameters of its own."""


@register_method(
    "retrain",
    hparams=RetrainHP,
    needs=("forget", "retain"),
    exact=True,
    citation="the gold standard of every unlearning paper",
    no_reference="training from scratch on D_r with the pretraining recipe (spec section 5)",
)
def retrain(model, data, hp, ctx):
    """Train a fresh model with the pretraining recipe on D_r only, from the same initial seed
    (spec section 5); the pretrained model is discarded."""
    return ctx.train_from_scratch(data.retain)
