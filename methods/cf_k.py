"""CF-k: catastrophic forgetting of the last k layers (Goel et al. 2022)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from bench.core.reference import Reference
from bench.unlearning.method import hparam, register_method

# module types that count as a "layer" for last-k selection
LAYER_TYPES = (nn.Linear, _ConvNd, _BatchNorm, nn.LayerNorm, nn.GroupNorm)


def last_k_modules(model: nn.Module, k: int) -> list[nn.Module]:
    """The last ``k`` modules of ``model.modules()`` (registration order) that are Linear,
    Conv, BatchNorm, LayerNorm or GroupNorm and own at least one parameter directly.

    Registration order is forward order for ``nn.Sequential`` models and torchvision ResNets
    (where a block's shortcut conv/BN comes after the block's main branch). The smallcnn's
    modules are ``conv1, bn1, conv2, bn2, conv3, bn3, fc``: k=1 is the FC head, k=3 is
    ``conv3, bn3, fc``. ``k`` larger than the number of layers selects them all."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    layers = [
        m
        for m in model.modules()
        if isinstance(m, LAYER_TYPES) and any(True for _ in m.parameters(recurse=False))
    ]
    return layers[-k:]


def select_layers(model: nn.Module, k: int, head: str) -> list[nn.Module]:
    """The layers CF-k / EU-k re-train: with ``head="frozen"`` (the reference) the last ``k``
    parameterised layers *before* the head, which stays frozen (SCRUB re-trains ResNet
    ``layer4``, k=10 on this harness's ResNet-18s, or AllCNN's last conv block, k=2, never
    the linear head); with ``head="trained"`` the last ``k`` layers, head included."""
    if head == "frozen":
        return last_k_modules(model, k + 1)[:-1]
    return last_k_modules(model, k)


def lr_at(hp, epoch: int) -> float:
    """The reference's step schedule (repdistiller ``adjust_learning_rate`` with
    ``lr_decay_epochs`` [10, 15, 20], rate 0.1): ``lr * 0.1 ** #(epoch > m)`` over the
    milestones of ``hp.lr_milestones`` (comma-separated, "" for none); epochs count from 0."""
    ms = [int(m) for m in hp.lr_milestones.split(",") if m.strip()]
    return hp.lr * 0.1 ** sum(epoch > m for m in ms)


@dataclass(frozen=True)
class CFkHP:
    """Defaults of the reference (meghdadk/SCRUB ``MIA_experiments.ipynb``: ``cfk_unlearn``):
    10 epochs of plain SGD (lr 0.01, no momentum, no weight decay) on D_r, batch 64, no
    augmentation (its loaders are built with ``augment=False``), the step decay at epochs
    10/15/20 (never fires within 10 epochs), the whole model in train mode (``frozen_bn``
    ``train``: the frozen layers' BatchNorms normalise with batch statistics and update their
    running statistics) and the head frozen (``head``). k=2 (the last conv layer and its
    BatchNorm, the reference's AllCNN block) is this project's default; Goel et al. sweep k.
    ``frozen_bn="eval"``, ``head="trained"`` (with k=3, SGD momentum 0.9, weight decay 5e-4,
    batch 128, the recipe's augmentation) give the harness's former reading."""

    k: int = hparam(2, ge=1)
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 64
    # "recipe" = the pretraining augmentation, or none/crop/crop_flip
    augment: str = hparam("none", choices=("recipe", "none", "crop", "crop_flip"))
    head: str = hparam("frozen", choices=("frozen", "trained"))
    frozen_bn: str = hparam("train", choices=("train", "eval"))
    lr_milestones: str = "10,15,20"


def train_modules_on_retain(model: nn.Module, modules: list[nn.Module], data, hp, ctx) -> None:
    """Train only ``modules``' parameters with CE on shuffled D_r for ``hp.epochs`` epochs (SGD
    with ``hp.lr``/``momentum``/``weight_decay``, the lr of epoch e by :func:`lr_at`). Every
    other parameter is frozen (``requires_grad=False`` during training, restored afterwards,
    and left out of the optimizer, so neither weight decay nor momentum touches it). With
    ``hp.frozen_bn == "train"`` (the reference) the whole model is in train mode, so the
    BatchNorms outside ``modules`` normalise with batch statistics and update their running
    statistics; with ``"eval"`` they stay in eval mode and the frozen part computes exactly the
    original function."""
    train_ids = {id(m) for m in modules}
    params = [p for m in modules for p in m.parameters(recurse=False)]
    param_ids = {id(p) for p in params}
    saved = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in param_ids)
    opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    augment = ctx.augmentation(hp.augment)
    try:
        for epoch in range(hp.epochs):
            for group in opt.param_groups:
                group["lr"] = lr_at(hp, epoch)
            model.train()
            if hp.frozen_bn == "eval":
                for m in model.modules():
                    if isinstance(m, _BatchNorm) and id(m) not in train_ids:
                        m.eval()
            for x, y in data.retain.loader(
                hp.batch_size,
                shuffle=True,
                generator=ctx.generator,
                augment=augment,
                crop_padding=ctx.recipe.crop_padding,
            ):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                ctx.step()
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)
    model.eval()


#: registration shared by CF-k and EU-k (same paper, same reference code, same data needs)
GOEL_2022 = dict(
    needs=("forget", "retain"),
    citation=(
        "Goel, Prabhu, Sanyal, Lim, Torr, Kumaraguru, 'Towards Adversarial Evaluation of "
        "Machine Unlearning' (arXiv 2201.06640, 2022; later 'Corrective Machine Unlearning')"
    ),
    reference="https://github.com/meghdadk/SCRUB (CF-k/EU-k baselines, MIA_experiments.ipynb)",
    quick_hp={"epochs": 2},
    retain_only=True,  # forgets only through training on D_r (like finetune)
)


#: the reference behind both (the CF-k/EU-k cells are the same at the release and at HEAD)
SCRUB_RELEASE = "9cc8740"


@register_method(
    "cf_k",
    hparams=CFkHP,
    references=(
        Reference(
            "meghdadk/SCRUB",
            SCRUB_RELEASE,
            "MIA_experiments.ipynb: cfk_unlearn, fk_fientune; thirdparty/repdistiller/helper/"
            "loops.py: train_vanilla; util.py: adjust_learning_rate",
            conformance="tests/conformance/test_cf_eu_k.py",
        ),
    ),
    deviations=(
        "k counts parameterised layers (Linear/Conv/Norm) before the head; the reference "
        "re-trains a named block (ResNet layer4 = k=10 here, AllCNN features[9] = k=2)",
        "the decayed lr is hp.lr * 0.1**steps; the reference decays from "
        "args.sgda_learning_rate (0.01, equal to its cfk_lr)",
        "the shuffles come from the run's generator (reference: the global RNG)",
    ),
    **GOEL_2022,
)
def cf_k(model, data, hp: CFkHP, ctx):
    """Freeze all but the last ``k`` layers before the head (:func:`select_layers`; the head
    stays frozen, as in the reference; ``head="trained"`` counts it among the k) and fine-tune
    those on D_r with cross-entropy; D_f is never used for updates (forgetting is catastrophic
    forgetting of what only those layers still encode). Data: forget (declared by convention,
    unused) and retain.

    Reference: meghdadk/SCRUB @ 9cc8740 (``MIA_experiments.ipynb``: ``cfk_unlearn``; plain SGD,
    batch 64, the whole model in train mode, step decay at epochs 10/15/20); conformance test
    ``tests/conformance/test_cf_eu_k.py`` (parameters and BatchNorm statistics equal in
    float64). Deviations: "layer" = a parameterised Linear/Conv/Norm module, not a residual
    block (the reference re-trains ResNet ``layer4``: k=10 on this harness's ResNet-18s); the
    decayed lr is relative to ``lr`` (the reference's to ``sgda_learning_rate``, also 0.01);
    the shuffles come from the run's generator."""
    train_modules_on_retain(model, select_layers(model, hp.k, hp.head), data, hp, ctx)
    return model
