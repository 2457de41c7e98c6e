"""Selective Synaptic Dampening: shrink the weights far more important to D_f than to D."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench import runtime
from bench.method import hparam, register_method


@dataclass(frozen=True)
class SSDHP:
    """Paper/reference defaults for ResNet-18 on CIFAR (spec section 3.4): selection weighting
    alpha = 10, dampening constant lambda = 1; importances from loaders of ``batch_size`` 64
    (the reference scripts' ``-b`` default)."""

    alpha: float = hparam(10.0, gt=0)
    dampening: float = hparam(1.0, gt=0)
    batch_size: int = 64


@runtime.full_precision
def importance(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """Mean over batches of the squared gradient of the batch-mean CE, per parameter (the
    reference's ``calc_importance``; the model's mode is left to the caller)."""
    params = list(model.parameters())
    imps = [torch.zeros_like(p) for p in params]
    n = 0
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for imp, p in zip(imps, params):
            if p.grad is not None:
                imp += p.grad.detach() ** 2
        n += 1
    model.zero_grad(set_to_none=True)
    return [imp / max(n, 1) for imp in imps]


@torch.no_grad()
def dampen(
    params: Iterable[Tensor],
    forget_imp: list[Tensor],
    full_imp: list[Tensor],
    alpha: float,
    dampening: float,
) -> int:
    """Where forget importance > alpha * full importance, multiply the weight by
    min(1, dampening * full / forget); elsewhere leave it unchanged. Returns the number of
    selected weights."""
    selected = 0
    for p, f, d in zip(params, forget_imp, full_imp):
        where = f > alpha * d
        factor = torch.clamp(dampening * d / f, max=1.0)
        p.copy_(torch.where(where, p * factor, p))
        selected += int(where.sum())
    return selected


def _full_batches(data, batch_size: int):
    # D = D_r followed by D_f, unshuffled: the reference's ConcatDataset((retain, forget))
    yield from data.retain.loader(batch_size)
    yield from data.forget.loader(batch_size)


@register_method(
    "ssd",
    hparams=SSDHP,
    needs=("forget", "retain"),
    citation=(
        "Foster, Schoepf, Brintrup, 'Fast Machine Unlearning Without Retraining Through "
        "Selective Synaptic Dampening', AAAI 2024"
    ),
    reference="https://github.com/if-loops/selective-synaptic-dampening",
    quick_hp={"alpha": 0.5, "dampening": 0.1, "batch_size": 16},
)
def ssd(model, data, hp: SSDHP, ctx):
    """Selective Synaptic Dampening (Foster et al., AAAI 2024; reference
    github.com/if-loops/selective-synaptic-dampening, ``ssd.py``). Needs D_f and D_r (the full
    training data D is taken as D_r then D_f, unshuffled).

    In eval mode, importances I_D and I_f = mean over batches of squared gradients of the
    CE (:func:`importance`) over D and over D_f. For every parameter entry i with
    I_f,i > alpha * I_D,i: theta_i <- theta_i * min(1, lambda * I_D,i / I_f,i); all
    other weights (and every buffer) are unchanged. No training: one pass over D and D_f,
    counted as ``ctx.step(1)`` (the single update). Reports ``selected`` (number of dampened
    weights) and ``selected_fraction``. No deviation from the reference (its ``exponent`` and
    ``lower_bound`` are fixed at 1)."""
    was = model.training
    model.eval()
    forget_imp = importance(model, data.forget.loader(hp.batch_size))
    full_imp = importance(model, _full_batches(data, hp.batch_size))
    params = list(model.parameters())
    n = dampen(params, forget_imp, full_imp, hp.alpha, hp.dampening)
    model.train(was)
    ctx.step()
    ctx.report("selected", n)
    ctx.report("selected_fraction", n / max(sum(p.numel() for p in params), 1))
    return model
