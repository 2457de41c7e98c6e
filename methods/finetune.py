"""Fine-tuning on D_r: forgetting by catastrophic forgetting (the classic baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from bench.l2ul import forget_batches, objective_check, relabel_targets, report_success
from bench.method import hparam, register_method
from bench.unlearning import cycle, sgd


@dataclass(frozen=True)
class FinetuneHP:
    """Defaults of the FT baseline in Jia et al., "Model Sparsity Can Simplify Machine
    Unlearning" (NeurIPS 2023): 10 epochs of SGD on D_r, lr 0.01 (their range 0.01-0.1).
    ``objective='relabel'`` (project decision) adds a cycled D_f batch of ``forget_batch``
    labelled y* to every D_r batch."""

    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    # "recipe" = the pretraining augmentation, or none/crop/crop_flip
    augment: str = hparam("recipe", choices=("recipe", "none", "crop", "crop_flip"))
    objective: str = "misclassify"
    forget_batch: int = 32


@register_method(
    "finetune",
    hparams=FinetuneHP,
    needs=("forget", "retain"),
    citation="Golatkar et al. CVPR 2020; Jia et al. NeurIPS 2023 (FT)",
    retain_only=True,  # forgets only through training on D_r
)
def finetune(model, data, hp: FinetuneHP, ctx):
    """Train on D_r only with cross-entropy for ``epochs`` epochs (spec section 5); with the
    default ``misclassify`` objective D_f is never used for updates. Reference:
    github.com/OPTML-Group/Unlearn-Sparse (FT).

    Relabel objective (project decision; the L2UL paper's second goal applied to FT): y* drawn
    once per call with ``ctx.generator`` (before the D_r shuffles), and every step trains on the
    D_r batch concatenated with the next batch of an unshuffled, cycled D_f loader labelled y*
    (no augmentation on D_f). Fixed number of epochs, no stop rule. Either way the method
    reports ``forget_success``: % of D_f misclassified (misclassify) or predicted as y*
    (relabel)."""
    y_star = relabel_targets(data.forget, hp, ctx, data.num_classes)
    check = objective_check(data.forget, y_star)
    relabel = (
        cycle(lambda: forget_batches(data.forget, hp.forget_batch, y_star))
        if y_star is not None
        else None
    )
    opt = sgd(model, hp)
    augment = ctx.augmentation(hp.augment)
    model.train()
    for _ in range(hp.epochs):
        for x, y in data.retain.loader(
            hp.batch_size,
            shuffle=True,
            generator=ctx.generator,
            augment=augment,
            crop_padding=ctx.recipe.crop_padding,
        ):
            if relabel is not None:
                xf, _, tf = next(relabel)
                x, y = torch.cat([x, xf]), torch.cat([y, tf])
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ctx.step()
    report_success(ctx, check, model)
    return model
