"""Fine-tuning on D_r: forgetting by catastrophic forgetting (the classic baseline)."""

from __future__ import annotations

from dataclasses import dataclass

from torch.nn import functional as F

from bench.method import register_method
from bench.unlearning import sgd


@dataclass(frozen=True)
class FinetuneHP:
    """Defaults of the FT baseline in Jia et al., "Model Sparsity Can Simplify Machine
    Unlearning" (NeurIPS 2023): 10 epochs of SGD on D_r, lr 0.01 (their range 0.01-0.1)."""

    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: str = "recipe"  # "recipe" = the pretraining augmentation, or none/crop/crop_flip


@register_method(
    "finetune",
    hparams=FinetuneHP,
    needs=("forget", "retain"),
    citation="Golatkar et al. CVPR 2020; Jia et al. NeurIPS 2023 (FT)",
)
def finetune(model, data, hp: FinetuneHP, ctx):
    """Train on D_r only with cross-entropy for ``epochs`` epochs (spec section 5); D_f is
    never used for updates. Reference: github.com/OPTML-Group/Unlearn-Sparse (FT)."""
    opt = sgd(model, hp)
    augment = ctx.recipe.augment if hp.augment == "recipe" else hp.augment
    model.train()
    for _ in range(hp.epochs):
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
    return model
