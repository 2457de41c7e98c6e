"""Boundary Shrink (Chen et al., CVPR 2023): fine-tune D_f towards its nearest wrong class."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from bench import runtime
from bench.method import hparam, register_method

#: the paper of Boundary Shrink and Boundary Expanding (``methods/boundary_expanding.py``)
CHEN_2023 = (
    "Chen, Gao, Wang, Wei, Zhang, Wang, 'Boundary Unlearning: Rapid Forgetting of Deep "
    "Networks via Shifting the Decision Boundary', CVPR 2023"
)


@dataclass(frozen=True)
class BoundaryShrinkHP:
    """Defaults of the reference code: FGSM with bound 0.1 in [0, 1] pixel space, no random
    start, 8-bit discretised adversarial images; SGD lr 1e-5, momentum 0.9, 10 epochs over D_f
    (the paper: "a learning rate of 1e-5 for 10 epochs"); forget batch 64."""

    bound: float = hparam(0.1, gt=0)
    lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 64


@runtime.full_precision
def neighbour_labels(attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor, bound: float):
    """Nearest wrong class of each sample: one untargeted FGSM step of size ``bound`` on
    CE(f(x), y) (clamped to [0, 1], rounded to 8 bits), then the arg-max of f(x_adv) over the
    classes other than y. Equals the attack's predicted class whenever the attack crosses the
    boundary, and is never y. ``attack_model`` is used in eval mode and not changed. In fp32
    under any precision: the gradient's signs and the arg-max are decisions."""
    was = attack_model.training
    attack_model.eval()
    x_adv = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(attack_model(x_adv), y)
    (g,) = torch.autograd.grad(loss, x_adv)
    x_adv = (x + bound * g.sign()).clamp(0.0, 1.0)
    x_adv = torch.round(x_adv * 255) / 255
    with torch.no_grad():
        logits = attack_model(x_adv)
        logits = logits.scatter(1, y.unsqueeze(1), float("-inf"))
        nbr = logits.argmax(1)
    attack_model.train(was)
    return nbr


def fit_forget_to(
    model: nn.Module,
    forget,
    opt: torch.optim.Optimizer,
    ctx,
    targets: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    shuffle: bool = False,
    augment: str = "none",
    crop_padding: int = 4,
) -> None:
    """The training loop both Boundary methods share: ``epochs`` passes over D_f (in order,
    or reshuffled every pass with ``ctx.generator``; ``augment`` and ``crop_padding`` as
    ``View.loader``, drawn with ``ctx.generator``); for
    every batch, labels ``targets(x, y)``, then one ``opt`` step on CE(model(x), labels) with
    the model in train mode, counted with ``ctx.step``."""
    for _ in range(epochs):
        for x, y in forget.loader(
            batch_size,
            shuffle=shuffle,
            generator=ctx.generator,
            augment=augment,
            crop_padding=crop_padding,
        ):
            t = targets(x, y)
            model.train()
            loss = F.cross_entropy(model(x), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ctx.step()


@register_method(
    "boundary_shrink",
    hparams=BoundaryShrinkHP,
    needs=("forget",),
    citation=f"{CHEN_2023} (Boundary Shrink)",
    reference="https://github.com/TY-LEE-KR/Boundary-Unlearning-Code (boundary_shrink)",
    quick_hp={"lr": 3e-3, "epochs": 5},
)
def boundary_shrink(model, data, hp: BoundaryShrinkHP, ctx):
    """For every unshuffled D_f batch: neighbour labels from a frozen copy of the original
    model (:func:`neighbour_labels`), then one SGD step on CE(model(x_f), neighbour) with the
    model in train mode; ``epochs`` passes over D_f. Data: forget only (labels and images).

    Deviations: the reference takes the raw arg-max on x_adv, which is the true label when
    FGSM fails to cross the boundary; here the true class is excluded, so every label is a
    wrong one (identical whenever the attack succeeds). The attack model is the original
    model throughout (as in the reference), so the labels do not change between epochs."""
    attack = copy.deepcopy(model)
    for p in attack.parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(
        model.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
    )
    fit_forget_to(
        model,
        data.forget,
        opt,
        ctx,
        lambda x, y: neighbour_labels(attack, x, y, hp.bound),
        epochs=hp.epochs,
        batch_size=hp.batch_size,
    )
    model.eval()
    return model
