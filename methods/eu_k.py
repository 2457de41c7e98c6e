"""EU-k: exact unlearning of the last k layers (Goel et al. 2022)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from bench.method import register_method
from methods.cf_k import GOEL_2022, last_k_modules, train_modules_on_retain


@dataclass(frozen=True)
class EUkHP:
    """Same schedule as CF-k (SGD lr 0.01, momentum 0.9, weight decay 5e-4, 10 epochs on D_r,
    batch 128); k=3 is this project's default (Goel et al. sweep k)."""

    k: int = 3
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: str = "recipe"


@torch.no_grad()
def reinit_module(m: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default initialisation of ``m``, drawn on the CPU from ``generator`` (no
    global RNG): Linear/Conv weights Kaiming-uniform(a=sqrt 5), biases U(+-1/sqrt fan_in);
    norm layers weight 1, bias 0 and, for BatchNorm, fresh running statistics."""
    if isinstance(m, (nn.Linear, _ConvNd)):
        w = torch.empty(m.weight.shape, dtype=m.weight.dtype)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)
        m.weight.copy_(w)
        if m.bias is not None:
            fan_in = m.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            b = torch.empty(m.bias.shape, dtype=m.bias.dtype).uniform_(
                -bound, bound, generator=generator
            )
            m.bias.copy_(b)
    elif isinstance(m, (_BatchNorm, nn.LayerNorm, nn.GroupNorm)):
        if getattr(m, "weight", None) is not None:
            m.weight.fill_(1.0)
        if getattr(m, "bias", None) is not None:
            m.bias.zero_()
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            m.reset_running_stats()
    else:
        raise TypeError(f"cannot re-initialise {type(m).__name__}")


@register_method("eu_k", hparams=EUkHP, **GOEL_2022)
def eu_k(model, data, hp: EUkHP, ctx):
    """Re-initialise the last ``k`` layers (:func:`methods.cf_k.last_k_modules`; default init,
    seeded from ``ctx.generator``) and train them from scratch on D_r with cross-entropy, all
    other layers frozen (their parameters and BatchNorm statistics exactly unchanged). Exact
    for the head if the frozen features did not depend on D_f. Data: forget (declared by
    convention, unused) and retain.

    Deviations: the reference copies the weights of a freshly constructed model of the
    architecture (its own init scheme); here each layer gets PyTorch's default init from
    ``ctx.generator``. "Layer" = a parameterised Linear/Conv/Norm module (the SCRUB code
    re-initialises ResNet ``layer4`` + head by hand). Frozen BatchNorms stay in eval mode."""
    modules = last_k_modules(model, hp.k)
    for m in modules:
        reinit_module(m, ctx.generator)
    train_modules_on_retain(model, modules, data, hp, ctx)
    return model
