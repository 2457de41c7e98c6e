"""Training from scratch with a recipe, and batched evaluation.

Used for pretraining (cached by content hash in ``bench.protocol.stages``) and by the ``retrain``
method (the same recipe on D_r from the same initial seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from bench.core import runtime
from bench.core.spec import Recipe
from bench.data import DatasetBundle, View
from bench.models.archs import build_model

TRAIN_CODE_VERSION = 1  # part of the pretraining cache key: bump when training code changes


def make_optimizer(params, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def make_schedule(opt, recipe: Recipe) -> Callable[[int], None]:
    """Per-epoch schedule, as the papers' code steps it (cosine: T_max = epochs)."""
    base = recipe.lr
    e = max(recipe.epochs, 1)

    def at(epoch: int) -> None:
        if recipe.schedule == "cosine":
            lr = 0.5 * base * (1 + math.cos(math.pi * epoch / e))
        elif recipe.schedule == "linear":
            lr = base * (1 - epoch / e * (1 - 0.001))
        else:
            lr = base
        for g in opt.param_groups:
            g["lr"] = lr

    return at


def fresh_model(
    bundle: DatasetBundle, arch: str, seed: int, pretrained: bool = False, normalize=None
) -> nn.Module:
    """A seeded new model of ``arch`` for ``bundle``'s inputs; ``normalize`` (means, stds)
    overrides the architecture's or dataset's normalization (``RunSpec.normalize``)."""
    torch.manual_seed(seed)
    return model_builder(bundle, arch, pretrained, normalize)()


def model_builder(
    bundle: DatasetBundle, arch: str, pretrained: bool = False, normalize=None
) -> Callable[[], nn.Module]:
    """What :func:`fresh_model` builds, unseeded: the constructor of ``arch`` for ``bundle``'s
    inputs (``Context.model_builder``; :meth:`bench.unlearning.method.Context.fresh_model` seeds
    it)."""

    def build() -> nn.Module:
        return build_model(
            arch,
            bundle.num_classes,
            bundle.input_shape,
            bundle.mean,
            bundle.std,
            pretrained=pretrained,
            normalize=normalize,
        )

    return build


def train(
    model: nn.Module,
    view: View,
    recipe: Recipe,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    batch_hook: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """Train ``model`` in place on ``view`` with ``recipe``; returns the number of steps.
    ``batch_hook(x, y) -> x``, if given, rewrites every (augmented) input batch before the
    forward pass (special pretraining, e.g. mnemonic codes: ``bench.unlearning.mnemonic``)."""
    device = view.device
    model = runtime.to_layout(model.to(device), device)
    model.train()
    fwd = runtime.maybe_compile(model)
    opt = make_optimizer(model.parameters(), recipe)
    sched = make_schedule(opt, recipe)
    g = torch.Generator().manual_seed(seed)
    steps = 0
    for epoch in range(recipe.epochs):
        sched(epoch)
        total = torch.zeros((), device=device)
        for x, y in view.loader(
            recipe.batch_size,
            shuffle=True,
            generator=g,
            augment=recipe.augment,
            crop_padding=recipe.crop_padding,
        ):
            if batch_hook is not None:
                x = batch_hook(x, y)
            with runtime.autocast(device):
                loss = F.cross_entropy(fwd(x), y, label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            steps += 1
        if on_epoch is not None:
            on_epoch(epoch, float(total))
    model.eval()
    return steps


@torch.no_grad()
def predict(model: nn.Module, view: View, batch_size: int | None = None) -> torch.Tensor:
    """Logits (float32) for every row of ``view`` (eval mode; the model's mode is restored), in
    batches of 4096 on CUDA and 1024 on the CPU unless given."""
    batch_size = batch_size or (4096 if view.device.type == "cuda" else 1024)
    was = model.training
    model.eval()
    with runtime.autocast(view.device):
        out = [model(x).float() for x, _ in view.loader(batch_size)]
    model.train(was)
    if not out:
        return torch.empty(0)
    return torch.cat(out)


@torch.no_grad()
def accuracy(
    model: nn.Module, view: View, batch_size: int | None = None, targets: torch.Tensor | None = None
) -> float:
    """Top-1 accuracy in percent (eval mode). ``targets`` overrides the view's labels."""
    if len(view) == 0:
        return float("nan")
    logits = predict(model, view, batch_size)
    y = (targets if targets is not None else view.targets).to(logits.device)
    return float((logits.argmax(1) == y).float().mean() * 100)
