"""Targeted L2 PGD adversarial examples for L2UL (spec section 1.3).

L2UL (Cha et al., "Learning to Unlearn: Instance-wise Unlearning for Pre-trained Classifiers",
AAAI 2024; official code github.com/csm9493/L2UL) builds, once per unlearning request, a set
D_adv of targeted adversarial examples from the forget set D_f and trains on them with their
*target* labels. The official code uses advertorch 0.2.3 ``L2PGDAttack(targeted=True,
clip_min=0, clip_max=1)``; :func:`l2_pgd_targeted` is an independent, batch-vectorized
reimplementation of that attack (same random start, step, clipping and projection), and
:func:`make_adversarial_set` reproduces the first-commit generation loop and target draw
(:func:`random_targets`).

Everything works in [0, 1] pixel space: normalization is the model's first layer
(``bench.models.archs``). Random numbers come from a CPU ``torch.Generator`` so results are seeded
and
independent of the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["l2_pgd_targeted", "random_targets", "make_adversarial_set"]

#: advertorch's ``normalize_by_pnorm`` floor for gradient norms (guards zero gradients).
GRAD_NORM_FLOOR = 1e-6


def _per_example_norm(t: Tensor) -> Tensor:
    """L2 norm of each example, shaped [N, 1, 1, ...] to broadcast against ``t``."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def _clamp_by_l2(delta: Tensor, eps: float) -> Tensor:
    """advertorch's ``clamp_by_pnorm(delta, 2, eps)``: delta * min(1, eps / ||delta||_2) per
    example (a zero delta stays zero)."""
    norm = _per_example_norm(delta).clamp_min(torch.finfo(delta.dtype).tiny)
    return delta * torch.clamp(eps / norm, max=1.0)


def l2_pgd_targeted(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    eps: float = 4.0,
    step: float = 0.1,
    iters: int = 100,
    rand_init: bool = True,
    generator: torch.Generator | None = None,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
) -> Tensor:
    """Targeted L2 projected gradient descent, vectorized over the batch.

    Equivalent to advertorch 0.2.3 ``L2PGDAttack(predict=model, eps=eps, nb_iter=iters,
    eps_iter=step, rand_init=rand_init, clip_min=0, clip_max=1, targeted=True)`` with its default
    sum-reduced cross-entropy, as used by L2UL (Cha et al., AAAI 2024, spec section 1.3):

    * random start: fill uniformly in [clip_min, clip_max], subtract ``x``, rescale each
      example's delta to L2 norm <= ``eps``, then clip ``x + delta`` to [clip_min, clip_max];
    * ``iters`` times: loss = CE_sum(model(x + delta), target); delta <- delta - step *
      grad / max(||grad||_2, 1e-6) per example (the loss is *minimized*: targeted); clip
      ``x + delta`` to the pixel range; project delta onto the L2 ball of radius ``eps``.

    The model runs in eval mode during the attack; every submodule's train/eval flag is restored
    afterwards. Gradients are taken with ``torch.autograd.grad`` w.r.t. delta only, so no
    parameter ``.grad`` is created or changed. Each example's result does not depend on the rest
    of the batch (eval mode, per-example normalization, sum-reduced loss), so chunking a batch
    consumes the generator in the same order and gives the same examples.

    Args:
        model: classifier taking pixels in [0, 1] (normalization inside the model).
        x: clean images [N, ...] in [0, 1].
        target: int64 target labels [N].
        eps: L2 radius of the perturbation (per example, over all pixels and channels).
        step: L2 length of each gradient step (advertorch ``eps_iter``).
        iters: number of iterations (advertorch ``nb_iter``).
        rand_init: random start as above; otherwise delta starts at 0.
        generator: CPU generator for the random start (``None``: torch's global generator).
        clip_min, clip_max: pixel range (0 and 1 in L2UL).

    Returns:
        The detached adversarial images ``clamp(x + delta, clip_min, clip_max)``, same shape,
        dtype and device as ``x``.
    """
    if x.shape[0] != target.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but target has {target.shape[0]}")
    x = x.detach()
    target = target.to(x.device)
    if x.shape[0] == 0:
        return x.clone()

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        if rand_init:
            u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            delta = u.mul_(clip_max - clip_min).add_(clip_min).sub_(x)
            delta = _clamp_by_l2(delta, eps)
            delta = torch.clamp(x + delta, clip_min, clip_max) - x
        else:
            delta = torch.zeros_like(x)
        with torch.enable_grad():
            for _ in range(iters):
                delta.requires_grad_(True)
                loss = F.cross_entropy(model(x + delta), target, reduction="sum")
                (grad,) = torch.autograd.grad(loss, delta)
                with torch.no_grad():
                    grad_norm = _per_example_norm(grad).clamp_min(GRAD_NORM_FLOOR)
                    delta = delta.detach() - step * grad / grad_norm
                    delta = torch.clamp(x + delta, clip_min, clip_max) - x
                    delta = _clamp_by_l2(delta, eps)
    finally:
        for m, was in modes:
            m.training = was
    return torch.clamp(x + delta.detach(), clip_min, clip_max)


def random_targets(
    y: Tensor,
    num_classes: int,
    target_label_range: str = "all",
    generator: torch.Generator | None = None,
    exclude: Tensor | None = None,
) -> Tensor:
    """One random attack target per label in ``y`` (L2UL, Cha et al., AAAI 2024, spec 1.3).

    * ``"first10"`` reproduces the first-commit ``utils.adv_attack`` of the official code, which
      the published CIFAR/ImageNet runs used: the target is drawn uniformly from {0, ..., 9} *for
      every dataset*, and a draw equal to the true label is replaced by class 5. The quirk that
      the target then equals the true label when y == 5 is kept on purpose. Needs
      ``num_classes >= 10``; ``exclude`` is not supported (raises ``ValueError``).
    * ``"all"`` (project default): uniform over the classes {0, ..., C-1} other than ``y`` and
      other than ``exclude`` (e.g. the relabeling targets y*, spec section 5). **Deviation** from
      the second-commit code, which draws from all C classes and replaces a hit on ``y`` by the
      fixed class C // 2 (over-weighting that class, and returning ``y`` itself when y == C // 2):
      here the target never equals ``y`` (nor ``exclude``) and is uniform over the allowed
      classes.

    Args:
        y: true labels (int64, any device); the result is on the same device.
        num_classes: number of classes C.
        target_label_range: ``"all"`` or ``"first10"``.
        generator: CPU generator (``None``: torch's global generator).
        exclude: optional labels, same shape as ``y``, that the target must also avoid ("all").
    """
    y = y.long()
    if target_label_range == "first10":
        if num_classes < 10:
            raise ValueError(f"target_label_range='first10' needs >= 10 classes, got {num_classes}")
        if exclude is not None:
            raise ValueError(
                "exclude is only supported with target_label_range='all' "
                "('first10' reproduces the official code, which has no exclusion)"
            )
        t = torch.randint(0, 10, y.shape, generator=generator).to(y.device)
        return torch.where(t == y, torch.full_like(t, 5), t)
    if target_label_range != "all":
        raise ValueError(
            f"target_label_range must be 'all' or 'first10', got {target_label_range!r}"
        )
    if exclude is None:
        if num_classes < 2:
            raise ValueError("need at least 2 classes to draw a target different from y")
        shift = torch.randint(1, num_classes, y.shape, generator=generator).to(y.device)
        return (y + shift) % num_classes
    e = exclude.long().to(y.device)
    if e.shape != y.shape:
        raise ValueError(f"exclude has shape {tuple(e.shape)}, y has {tuple(y.shape)}")
    lo, hi = torch.minimum(y, e), torch.maximum(y, e)
    n_forbidden = 1 + (hi != lo).long()
    n_allowed = num_classes - n_forbidden
    if bool((n_allowed < 1).any()):
        raise ValueError(f"no class left to draw from with {num_classes} classes")
    u = torch.rand(y.shape, generator=generator, dtype=torch.float64).to(y.device)
    r = torch.minimum((u * n_allowed).long(), n_allowed - 1)  # uniform in {0..n_allowed-1}
    # the r-th allowed class: skip the forbidden labels in increasing order
    t = r + (r >= lo).long()
    t = t + ((hi != lo) & (t >= hi)).long()
    return t


def make_adversarial_set(
    model: nn.Module,
    forget_x: Tensor,
    forget_y: Tensor,
    n_adv: int,
    num_classes: int,
    eps: float = 4.0,
    step: float = 0.1,
    iters: int = 100,
    target_label_range: str = "all",
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    exclude: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The L2UL adversarial set D_adv (Cha et al., AAAI 2024, spec section 1.3), built once per
    unlearning request.

    Order as in the official first-commit loop (``for it in range(N_adv): for each forget
    batch: attack``): [all of D_f with target set 1, all of D_f with target set 2, ...], i.e. row
    ``j * k + i`` is forget instance ``i`` attacked towards its ``j``-th target. All ``n_adv``
    target sets are drawn first (one :func:`random_targets` call per set, in order), then the
    ``n_adv * k`` attacks run vectorized: in one :func:`l2_pgd_targeted` call, or in chunks of
    ``batch_size`` images when given (same result: the random starts are drawn in the same
    order and each example is attacked independently).

    Args:
        model: the pretrained classifier (pixels in [0, 1]); left unchanged.
        forget_x, forget_y: D_f images [k, ...] in [0, 1] and labels [k].
        n_adv: adversarial examples per forget instance (N_adv).
        num_classes: number of classes.
        eps, step, iters: attack settings (L2UL: 4.0 or 2.0, 0.1, 100).
        target_label_range: ``"all"`` or ``"first10"`` (see :func:`random_targets`).
        generator: CPU generator for targets and random starts.
        batch_size: images per attack call (``None``: all at once).
        exclude: optional labels [k] the targets must avoid (relabeling targets y*).

    Returns:
        ``(x_adv, y_adv)``: ``n_adv * k`` detached adversarial images and their **target**
        labels, on ``forget_x``'s device.
    """
    k = forget_x.shape[0]
    if forget_y.shape[0] != k:
        raise ValueError(f"forget_x has {k} rows but forget_y has {forget_y.shape[0]}")
    if n_adv < 0:
        raise ValueError(f"n_adv must be >= 0, got {n_adv}")
    y = forget_y.long().to(forget_x.device)
    if n_adv == 0 or k == 0:
        return forget_x[:0].detach().clone(), y[:0].clone()
    y_adv = torch.cat(
        [
            random_targets(y, num_classes, target_label_range, generator, exclude)
            for _ in range(n_adv)
        ]
    )
    total = n_adv * k
    chunk = total if batch_size is None else int(batch_size)
    if chunk < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    src = forget_x.detach()
    out = []
    for s in range(0, total, chunk):
        rows = torch.arange(s, min(s + chunk, total), device=src.device) % k
        out.append(
            l2_pgd_targeted(
                model,
                src.index_select(0, rows),
                y_adv[s : s + chunk],
                eps=eps,
                step=step,
                iters=iters,
                rand_init=True,
                generator=generator,
            )
        )
    return torch.cat(out), y_adv
