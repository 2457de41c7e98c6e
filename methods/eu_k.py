"""EU-k: exact unlearning of the last k layers (Goel et al. 2022)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.method import hparam, register_method
from bench.unlearning import seeded_reset
from methods.cf_k import GOEL_2022, last_k_modules, train_modules_on_retain


@dataclass(frozen=True)
class EUkHP:
    """Same schedule as CF-k (SGD lr 0.01, momentum 0.9, weight decay 5e-4, 10 epochs on D_r,
    batch 128); k=3 is this project's default (Goel et al. sweep k)."""

    k: int = hparam(3, ge=1)
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: str = hparam("recipe", choices=("recipe", "none", "crop", "crop_flip"))


@register_method("eu_k", hparams=EUkHP, **GOEL_2022)
def eu_k(model, data, hp: EUkHP, ctx):
    """Re-initialise the last ``k`` layers (:func:`methods.cf_k.last_k_modules`; default init,
    seeded from ``ctx.generator``) and train them from scratch on D_r with cross-entropy, all
    other layers frozen (their parameters and BatchNorm statistics exactly unchanged). Exact
    for the head if the frozen features did not depend on D_f. Data: forget (declared by
    convention, unused) and retain.

    Deviations: the reference copies the weights of a freshly constructed model of the
    architecture (its own init scheme); here each layer gets PyTorch's default init
    (``reset_parameters``, seeded from ``ctx.generator`` by
    :func:`bench.unlearning.seeded_reset`). "Layer" = a parameterised Linear/Conv/Norm module
    (the SCRUB code re-initialises ResNet ``layer4`` + head by hand). Frozen BatchNorms stay
    in eval mode."""
    modules = last_k_modules(model, hp.k)
    seeded_reset(modules, ctx.generator)
    train_modules_on_retain(model, modules, data, hp, ctx)
    return model
