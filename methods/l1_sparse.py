"""l1-sparse unlearning: fine-tuning on D_r with a linearly decaying l1 penalty."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.core.reference import Reference
from bench.tuning.study import IntRange, LogUniform
from bench.unlearning.method import hparam, register_method


@dataclass(frozen=True)
class L1SparseHP:
    """Defaults of the reference's "FT_prune" (l1-sparse) unlearning on CIFAR-10: 10 epochs,
    SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256; penalty weight ``gamma`` = 5e-4
    (the paper's CIFAR-10 value; the reference's example commands use values between 1e-4 and
    0.2, so it is a hyperparameter to tune); ``no_l1_epochs`` = 0 (the reference's default:
    number of final epochs without the penalty). ``augment``: ``recipe`` (default) = the
    pretraining augmentation (the reference's retain loader carries the training transform,
    random crop + flip)."""

    gamma: float = hparam(5e-4, ge=0)
    epochs: int = 10
    no_l1_epochs: int = hparam(0, ge=0)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    augment: str = hparam("recipe", choices=("recipe", "none", "crop", "crop_flip"))


def l1_weight(epoch: int, hp: L1SparseHP) -> float:
    """Penalty weight of 0-based ``epoch``: gamma * (1 - epoch / E), E = epochs - no_l1_epochs,
    then 0 for the last ``no_l1_epochs`` epochs; gamma for every epoch if E = 0, and 0 for
    every epoch if E < 0 (Unlearn-Sparse's ``FT_iter`` since 76a4299, Sep 2023: the ``elif``
    after the decay branch catches E = 0 only)."""
    decay = hp.epochs - hp.no_l1_epochs
    if epoch < decay:
        return hp.gamma * (1 - epoch / decay)
    if decay == 0:
        return hp.gamma
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
    references=(
        Reference(
            "OPTML-Group/Unlearn-Sparse",
            "80ba55d36d0871465c2d3e3896db26a98070e065",
            "unlearn/FT.py: FT_iter, FT_l1 (via unlearn/FT_prune.py; unchanged since 16a2dbc)",
            role="l1-sparse MU (Jia et al.): loop, l1 schedule, augmentation",
            conformance="tests/conformance/test_unlearn_sparse_l1.py",
        ),
        Reference(
            "OPTML-Group/Unlearn-Saliency",
            "95766237d2c29c391c9bb0f0dbdb67d31e995f4c",
            "Classification/unlearn/FT.py: FT_iter, FT_l1 (via unlearn/FT_prune.py)",
            role="SalUn Table 1's l1-sparse row (the salun-* suites)",
            conformance="tests/conformance/test_unlearn_sparse_l1.py",
        ),
    ),
    deviations=(
        "the retain shuffle and crop/flip draws come from ctx.generator, not torch's global RNG "
        "(the conformance test feeds both the same draws)",
        "with no_l1_epochs == epochs the penalty is gamma in every epoch (Unlearn-Sparse since "
        "76a4299); Unlearn-Saliency @ 9576623 gives 0 there",
        "the reference's MultiStepLR (x0.1 at epochs 91 and 136) and warm-up (off by default) "
        "are not implemented; neither acts within 10 epochs",
    ),
    quick_hp={"epochs": 2, "batch_size": 32},
    retain_only=True,  # fine-tuning on D_r with a sparsity penalty: aims at the retrained model
)
def l1_sparse(model, data, hp: L1SparseHP, ctx):
    """l1-sparse unlearning (Jia et al., NeurIPS 2023; reference
    github.com/OPTML-Group/Unlearn-Sparse, ``unlearn/FT.py`` with l1). Needs D_r; declares D_f
    (every method does) but never touches it.

    For epoch e = 0..epochs-1 (train mode, shuffled D_r augmented as ``augment`` says, SGD):
    minimise CE(f(x_r), y_r) + gamma_e * ||theta||_1 with gamma_e = gamma * (1 - e / E) (linear
    decay, constant within an epoch, :func:`l1_weight`). The norm runs over all parameters, as
    in the reference; its gradient is added to ``.grad`` directly (:func:`add_l1_grad`, the
    same update as back-propagating it). Reports ``l1_norm`` of the final weights.

    Follows Unlearn-Sparse @ 80ba55d (``unlearn/FT.py``, unchanged since 16a2dbc, Oct 2023;
    ``--unlearn FT_prune`` runs ``FT_l1``), whose loop is Unlearn-Saliency @ 9576623's (the
    code of SalUn's Table 1, which the ``salun-*`` suites reproduce) but for E = 0;
    ``tests/conformance/test_unlearn_sparse_l1.py`` restates it with crop + flip on.
    Deviations (the registration's ``deviations=``): the RNG (``ctx.generator``); with
    ``no_l1_epochs == epochs`` the penalty is gamma throughout (Unlearn-Sparse), 0 at 9576623;
    no MultiStepLR or warm-up (neither acts within 10 epochs by default)."""
    opt = torch.optim.SGD(
        model.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
    )
    kw = {"augment": ctx.augmentation(hp.augment), "crop_padding": ctx.recipe.crop_padding}
    for epoch in range(hp.epochs):
        model.train()
        weight = l1_weight(epoch, hp)
        for x, y in data.retain.loader(hp.batch_size, shuffle=True, generator=ctx.generator, **kw):
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
