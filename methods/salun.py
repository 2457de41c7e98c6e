"""SalUn: random-label unlearning restricted to the weights salient for the forget loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench import runtime
from bench.method import hparam, register_method
from bench.study import IntRange, LogUniform, Uniform

#: ``SalUnHP.mask_mode`` values
MASK_MODES = ("hard", "reference_2024")


@dataclass(frozen=True)
class SalUnHP:
    """Defaults of the reference's CIFAR-10 random-data forgetting command (RL with a saliency
    mask): mask ratio 0.5, 10 epochs, SGD lr 0.013, momentum 0.9, weight decay 5e-4, batch
    256 (the reference's ``arg_parser`` defaults). ``mask_batch`` = the forget batch used to
    compute the saliency gradient.

    ``mask_mode``: how the mask holds the weights outside it. ``hard`` (default; the paper's
    intent and the reference since Unlearn-Saliency PR #33, commit a6e89fd, Feb 2026): they
    never move. ``reference_2024`` (the code that made the published tables, Oct 2023 until
    that fix): only the gradients are masked, so SGD's weight decay, and the momentum that
    carries it, still shrink the weights outside the mask."""

    mask_ratio: float = 0.5
    epochs: int = 10
    lr: float = 0.013
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    mask_batch: int = 256
    mask_mode: str = hparam("hard", choices=MASK_MODES)


@runtime.full_precision
def saliency_mask(model: nn.Module, forget, hp: SalUnHP) -> dict[str, Tensor]:
    """Boolean mask per parameter: the top ``mask_ratio`` fraction (over all parameters
    together) of |sum over D_f batches of grad of -CE|, computed once at the original weights
    in eval mode. Ties at the threshold are broken by a stable sort (lower flat index first).
    In fp32 under any precision: the top-k choice is a decision."""
    was = model.training
    model.eval()
    params = dict(model.named_parameters())
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    for x, y in forget.loader(hp.mask_batch):
        model.zero_grad(set_to_none=True)
        (-F.cross_entropy(model(x), y)).backward()
        for n, p in params.items():
            if p.grad is not None:
                grads[n] += p.grad
    model.zero_grad(set_to_none=True)
    model.train(was)
    flat = torch.cat([g.abs().flatten() for g in grads.values()])
    k = int(flat.numel() * hp.mask_ratio)
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    order = torch.sort(flat, descending=True, stable=True).indices
    chosen[order[:k]] = True
    masks, start = {}, 0
    for n, g in grads.items():
        masks[n] = chosen[start : start + g.numel()].view_as(g)
        start += g.numel()
    return masks


#: the search space of ``python -m bench.tune`` (trial 0 is always the defaults): mask ratio,
#: learning rate and epochs (the reference's README sweeps the first two)
SEARCH = {
    "mask_ratio": Uniform(0.1, 0.9),
    "lr": LogUniform(1e-4, 1e-1),
    "epochs": IntRange(1, 10),
}


@register_method(
    "salun",
    hparams=SalUnHP,
    search=SEARCH,
    needs=("forget", "retain"),
    citation=(
        "Fan, Liu, Zhang, Wong, Wei, Liu, 'SalUn: Empowering Machine Unlearning via Gradient-"
        "based Weight Saliency in Both Image Classification and Generation', ICLR 2024"
    ),
    reference="https://github.com/OPTML-Group/Unlearn-Saliency",
    quick_hp={"epochs": 3, "lr": 0.03, "batch_size": 16},
)
def salun(model, data, hp: SalUnHP, ctx):
    """SalUn (Fan et al., ICLR 2024; reference github.com/OPTML-Group/Unlearn-Saliency,
    ``generate_mask.py`` + ``unlearn/RL.py``). Needs D_f and D_r.

    1. Saliency mask m (:func:`saliency_mask`): top ``mask_ratio`` of |grad_theta of -CE on
       D_f|, once, at the original weights.
    2. ``epochs`` epochs; each = a pass over shuffled D_f with labels drawn uniformly from all
       classes (re-drawn per batch, with ``ctx.generator``; as the reference, the draw may hit
       the true label), then a pass over shuffled D_r with its labels; CE loss, SGD. After
       every backward the gradients are multiplied by m. ``mask_mode="hard"`` (default;
       the reference after PR #33): after every step the parameters outside m are restored to
       their original values and their momentum zeroed (so weight decay and momentum cannot
       move them: they are exactly unchanged). ``mask_mode="reference_2024"`` (the reference
       before PR #33, which produced the published tables): no restore, so weight decay (and
       its momentum) moves them too. BN running statistics are buffers, not weights: they do
       move (train mode), as in the reference.

    Deviations: the reference's mask pass takes an SGD step after every forget batch (the
    gradient sum is taken along a short trajectory); here the gradients are summed at fixed
    original weights. The stored reference ``generate_mask.py`` ranks |g| in ascending order
    before thresholding (which would keep the *least* salient weights); we follow the paper
    (m = 1 for the largest |g|). The reference's CIFAR-10 branch is implemented (separate D_f
    then D_r passes; its CIFAR-100 branch shuffles both into one loader). Reports
    ``mask_fraction``."""
    masks = saliency_mask(model, data.forget, hp)
    params = dict(model.named_parameters())
    hard = hp.mask_mode == "hard"
    theta0 = {n: p.detach().clone() for n, p in params.items()} if hard else {}
    opt = torch.optim.SGD(
        model.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
    )
    total = sum(m.numel() for m in masks.values())
    ctx.report("mask_fraction", sum(int(m.sum()) for m in masks.values()) / max(total, 1))

    def step(x: Tensor, y: Tensor) -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                p.grad.mul_(masks[n])
        opt.step()
        if hard:  # reference_2024 stops here: weight decay has moved the unmasked weights
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(torch.where(masks[n], p, theta0[n]))
                    buf = opt.state.get(p, {}).get("momentum_buffer")
                    if buf is not None:
                        buf.mul_(masks[n])
        ctx.step()

    model.train()
    for _ in range(hp.epochs):
        for x, y in data.forget.loader(hp.batch_size, shuffle=True, generator=ctx.generator):
            y_rand = torch.randint(0, data.num_classes, y.shape, generator=ctx.generator)
            step(x, runtime.to_device(y_rand, y.device))
        for x, y in data.retain.loader(hp.batch_size, shuffle=True, generator=ctx.generator):
            step(x, y)
    return model
