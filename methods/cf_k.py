"""CF-k: catastrophic forgetting of the last k layers (Goel et al. 2022)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from bench.method import hparam, register_method

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


@dataclass(frozen=True)
class CFkHP:
    """Goel et al. sweep k rather than fixing it; k=3 (for the smallcnn: last conv, its BN and
    the FC head) is this project's default. Optimizer as the SCRUB re-implementation used by
    later papers (SGD lr 0.01, momentum 0.9, weight decay 5e-4) for 10 epochs on D_r, the FT
    schedule of this harness."""

    k: int = hparam(3, ge=1)
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    # "recipe" = the pretraining augmentation, or none/crop/crop_flip
    augment: str = hparam("recipe", choices=("recipe", "none", "crop", "crop_flip"))


def train_modules_on_retain(model: nn.Module, modules: list[nn.Module], data, hp, ctx) -> None:
    """Train only ``modules``' parameters with CE on shuffled D_r for ``hp.epochs`` epochs (SGD
    with ``hp.lr``/``momentum``/``weight_decay``). Every other parameter is frozen
    (``requires_grad=False`` during training, restored afterwards, and left out of the
    optimizer, so neither weight decay nor momentum touches it), and every BatchNorm outside
    ``modules`` stays in eval mode so its running statistics are unchanged too: the frozen part
    computes exactly the original function."""
    train_ids = {id(m) for m in modules}
    params = [p for m in modules for p in m.parameters(recurse=False)]
    param_ids = {id(p) for p in params}
    saved = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in param_ids)
    opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    augment = ctx.augmentation(hp.augment)
    try:
        for _ in range(hp.epochs):
            model.train()
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


@register_method("cf_k", hparams=CFkHP, **GOEL_2022)
def cf_k(model, data, hp: CFkHP, ctx):
    """Freeze all but the last ``k`` layers (:func:`last_k_modules`) and fine-tune those on D_r
    with cross-entropy; D_f is never used for updates (forgetting is catastrophic forgetting
    of what only the head still encodes). Data: forget (declared by convention, unused) and
    retain.

    Deviations: "layer" = a parameterised Linear/Conv/Norm module, not a residual block (the
    SCRUB code re-trains ResNet ``layer4`` + head by hand); frozen BatchNorms keep their running
    statistics (the reference leaves the whole model in train mode, so they drift); a fixed
    lr (the reference's step decay at epochs 10/15/20 never fires within 10 epochs)."""
    train_modules_on_retain(model, last_k_modules(model, hp.k), data, hp, ctx)
    return model
