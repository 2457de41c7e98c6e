"""l1-sparse unlearning: fine-tuning on D_r with a linearly decaying l1 penalty."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.method import hparam, register_method
from bench.study import IntRange, LogUniform


@dataclass(frozen=True)
class L1SparseHP:
    """Defaults of the reference's "FT_prune" (l1-sparse) unlearning on CIFAR-10: 10 epochs,
    SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256; penalty weight ``gamma`` = 5e-4
    (the paper's CIFAR-10 value; the reference's example commands use values between 1e-4 and
    0.2, so it is a hyperparameter to tune); ``no_l1_epochs`` = 0 (the reference's default:
    number of final epochs without the penalty)."""

    gamma: float = hparam(5e-4, ge=0)
    epochs: int = 10
    no_l1_epochs: int = hparam(0, ge=0)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256


def l1_weight(epoch: int, hp: L1SparseHP) -> float:
    """Penalty weight of 0-based ``epoch``: gamma * (1 - epoch / E), E = epochs - no_l1_epochs,
    then 0 for the last ``no_l1_epochs`` epochs (the reference's schedule; gamma for every epoch
    if E = 0)."""
    decay = hp.epochs - hp.no_l1_epochs
    if decay <= 0:
        return hp.gamma
    if epoch < decay:
        return hp.gamma * (1 - epoch / decay)
    return 0.0


def l1_norm(model: nn.Module) -> Tensor:
    """||theta||_1 over every parameter (weights, biases, BN affine)."""
    return sum(p.abs().sum() for p in model.parameters())


def add_l1_grad(model: nn.Module, weight: float) -> None:
    """``p.grad += weight * sign(p)`` for every parameter: the gradient of
    ``weight * ||theta||_1`` (autograd's choice at 0: 0), added after ``backward()`` with two
    fused foreach operations instead of back-propagating the norm through every parameter
    tensor. A parameter without a gradient gets the penalty's alone."""
    params = list(model.parameters())
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    with torch.no_grad():
        torch._foreach_add_([p.grad for p in params], torch._foreach_sign(params), alpha=weight)


#: the search space of ``python -m bench.tune`` (trial 0 is always the defaults): the penalty
#: weight (the reference's commands span 1e-4 .. 0.2), learning rate and epochs
SEARCH = {
    "gamma": LogUniform(1e-5, 0.3),
    "lr": LogUniform(1e-4, 1e-1),
    "epochs": IntRange(1, 10),
}


@register_method(
    "l1_sparse",
    hparams=L1SparseHP,
    search=SEARCH,
    needs=("forget", "retain"),
    citation=(
        "Jia, Liu, Ram, Yao, Liu, Liu, Sharma, Liu, 'Model Sparsity Can Simplify Machine "
        "Unlearning', NeurIPS 2023 (l1-sparse MU)"
    ),
    reference="https://github.com/OPTML-Group/Unlearn-Sparse",
    quick_hp={"epochs": 2, "batch_size": 32},
    retain_only=True,  # fine-tuning on D_r with a sparsity penalty: aims at the retrained model
)
def l1_sparse(model, data, hp: L1SparseHP, ctx):
    """l1-sparse unlearning (Jia et al., NeurIPS 2023; reference
    github.com/OPTML-Group/Unlearn-Sparse, ``unlearn/FT.py`` with l1). Needs D_r; declares D_f
    (every method does) but never touches it.

    For epoch e = 0..epochs-1 (train mode, shuffled D_r, SGD): minimise
    CE(f(x_r), y_r) + gamma_e * ||theta||_1 with gamma_e = gamma * (1 - e / E) (linear decay,
    constant within an epoch, :func:`l1_weight`). The norm runs over all parameters, as in the
    reference; its gradient is added to ``.grad`` directly (:func:`add_l1_grad`, the same
    update as back-propagating it). Reports ``l1_norm`` of the final weights. No deviation
    from the reference's loop (its warm-up is off by default)."""
    opt = torch.optim.SGD(
        model.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
    )
    model.train()
    for epoch in range(hp.epochs):
        weight = l1_weight(epoch, hp)
        for x, y in data.retain.loader(hp.batch_size, shuffle=True, generator=ctx.generator):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if weight:
                add_l1_grad(model, weight)  # = back-propagating weight * ||theta||_1
            opt.step()
            ctx.step()
    with torch.no_grad():
        ctx.report("l1_norm", float(l1_norm(model)))
    return model
