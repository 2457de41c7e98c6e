"""SalUn: random-label unlearning restricted to the weights salient for the forget loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.core import runtime
from bench.core.reference import Reference
from bench.tuning.study import IntRange, LogUniform, Uniform
from bench.unlearning.method import hparam, register_method
from methods.rl import (
    CONFORMANCE,
    HEAD_COMMIT,
    LOOP_DEVIATIONS,
    RETAIN_MODES,
    SALUN_REPO,
    TABLE_COMMIT,
    random_label_epoch,
)

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
    carries it, still shrink the weights outside the mask.

    ``augment``: ``recipe`` (default) = the pretraining augmentation, for the mask pass and
    the unlearning loop alike (the reference's forget and retain loaders carry the training
    transform, random crop + flip, in ``generate_mask.py`` too).

    ``retain_mode``: the loop. ``union`` (default: ``unlearn/RL.py`` @ 9576623, Oct 2023, the
    code that made Table 1): each epoch one shuffled pass over the relabelled D_f together
    with D_r. ``sequential`` (the reference's CIFAR-10 branch since f31f82e, Apr 2024, and at
    a6e89fd): a pass over D_f, then a pass over D_r. See :func:`salun`."""

    mask_ratio: float = 0.5
    epochs: int = 10
    lr: float = 0.013
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    mask_batch: int = 256
    mask_mode: str = hparam("hard", choices=MASK_MODES)
    augment: str = hparam("recipe", choices=("recipe", "none", "crop", "crop_flip"))
    retain_mode: str = hparam("union", choices=RETAIN_MODES)


@runtime.full_precision
def saliency_mask(
    model: nn.Module,
    forget,
    hp: SalUnHP,
    generator: torch.Generator | None = None,
    augment: str = "none",
    crop_padding: int = 4,
) -> dict[str, Tensor]:
    """Boolean mask per parameter: the top ``mask_ratio`` fraction (over all parameters
    together) of |sum over D_f batches of grad of -CE|, computed once at the original weights
    in eval mode (``generate_mask.py`` since b874ee9, Dec 2023, unchanged at a6e89fd). With a
    ``generator`` the D_f batches are shuffled and augmented (``augment``) as the reference's
    forget loader, which carries the training transform; without one, in index order as they
    are. Ties at the threshold are broken by a stable sort (lower flat index first). In fp32
    under any precision: the top-k choice is a decision."""
    was = model.training
    model.eval()
    params = dict(model.named_parameters())
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    kw = {"augment": augment, "crop_padding": crop_padding}
    if generator is not None:
        kw.update(shuffle=True, generator=generator)
    for x, y in forget.loader(hp.mask_batch, **kw):
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


#: the reference behaviours ``salun`` restates (tests/conformance/test_unlearn_saliency.py)
REFERENCES = (
    Reference(
        SALUN_REPO,
        TABLE_COMMIT,
        "Classification/unlearn/RL.py: RL (mask argument); unlearn/impl.py: iterative_unlearn",
        role="table-time loop (Table 1): retain_mode='union', mask_mode='reference_2024'",
        conformance=f"{CONFORMANCE}::test_salun_equals_the_reference",
    ),
    Reference(
        SALUN_REPO,
        HEAD_COMMIT,
        "Classification/unlearn/RL.py: RL, _apply_mask_to_grads, _restore_masked_params",
        role="HEAD loop: retain_mode='sequential' (since f31f82e), mask_mode='hard' (PR #33)",
        conformance=f"{CONFORMANCE}::test_salun_equals_the_reference",
    ),
    Reference(
        SALUN_REPO,
        HEAD_COMMIT,
        "Classification/generate_mask.py: save_gradient_ratio",
        role="saliency mask (unchanged since b874ee9, Dec 2023)",
        conformance=f"{CONFORMANCE}::test_saliency_mask_equals_the_reference",
    ),
)
DEVIATIONS = LOOP_DEVIATIONS + (
    "the mask is generate_mask.py's since b874ee9 (eval mode, |sum of D_f gradients| at the "
    "original weights, largest kept); 9576623's (train mode, an SGD step after every forget "
    "batch, sum of per-batch |grad|, ascending ranks that keep the least salient) is not "
    "implemented",
    "mask ties at the threshold go to the lower flat index (stable sort); the reference's "
    "torch.argsort leaves their order unspecified",
    "mask_mode defaults to 'hard' (a6e89fd, PR #33); the table-time code masked gradients "
    "only ('reference_2024', which the salun-* suites set)",
)


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
    references=REFERENCES,
    deviations=DEVIATIONS,
    quick_hp={"epochs": 3, "lr": 0.03, "batch_size": 16},
)
def salun(model, data, hp: SalUnHP, ctx):
    """SalUn (Fan et al., ICLR 2024; reference github.com/OPTML-Group/Unlearn-Saliency,
    ``generate_mask.py`` + ``unlearn/RL.py``). Needs D_f and D_r.

    1. Saliency mask m (:func:`saliency_mask`): top ``mask_ratio`` of |grad_theta of -CE on
       D_f|, once, at the original weights, in eval mode, over D_f shuffled and augmented
       (``augment``) as the reference's forget loader.
    2. ``epochs`` epochs of the reference's RL loop (:func:`methods.rl.random_label_epoch`,
       model in train mode, CE loss, SGD, batches augmented as ``augment`` says), in the order
       ``retain_mode`` says. ``union`` (default; ``RL.py`` @ 9576623, the code that made
       Table 1): each epoch draws a label for every D_f example uniformly from all classes
       (the true one included), then one shuffled pass over D_f and D_r together, batches
       mixing both. ``sequential`` (``RL.py``'s CIFAR-10 branch since f31f82e, Apr 2024, and
       at a6e89fd): a shuffled pass over D_f, each batch under labels drawn uniformly from
       all classes, then a shuffled pass over D_r with its labels.
       After every backward the gradients are multiplied by m. ``mask_mode="hard"`` (default;
       the reference after PR #33, a6e89fd): after every step the parameters outside m are
       restored to their original values and their momentum zeroed (so weight decay and
       momentum cannot move them: they are exactly unchanged). ``mask_mode="reference_2024"``
       (the reference before PR #33, which produced the published tables): no restore, so
       weight decay (and its momentum) moves them too. BN running statistics are buffers,
       not weights: they do move (train mode), as in the reference.

    The ``salun-*`` suites (Table 1) run ``retain_mode="union"``, ``mask_mode=
    "reference_2024"``: the loop of 9576623. Conformance: ``tests/conformance/
    test_unlearn_saliency.py`` restates the mask (a6e89fd) and the loop in both modes and
    both mask modes (9576623, f31f82e, a6e89fd) with crop + flip on. Deviations (the
    registration's ``deviations=``): the RNG (``ctx.generator``), no MultiStepLR or warm-up,
    relabelling on every dataset (as ``rl``); the mask is ``generate_mask.py``'s since b874ee9
    (Dec 2023): 9576623's took an SGD step after every forget batch in train mode, summed
    per-batch |g| and, ranking in ascending order, kept the *least* salient weights; we
    follow the paper and the later code (m = 1 for the largest |g|); ties at the threshold go
    to the lower index; ``mask_mode`` defaults to ``hard``. Reports ``mask_fraction``."""
    augment = ctx.augmentation(hp.augment)
    masks = saliency_mask(model, data.forget, hp, ctx.generator, augment, ctx.recipe.crop_padding)
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

    for _ in range(hp.epochs):
        model.train()
        random_label_epoch(data, hp, ctx, step)
    return model
