"""Shared machinery of the L2UL family of methods (spec sections 1.2-1.5 and 5).

L2UL = Cha et al., "Learning to Unlearn: Instance-wise Unlearning for Pre-trained Classifiers"
(AAAI 2024; reference code github.com/csm9493/L2UL, used as a reference only). The family:

* ``neggrad`` (case 1): L = -CE(g(x_f), y_f), passes over D_f, stop rule checked after a pass;
* ``adv_only`` (case 2): an adversarial batch and a forget batch, each through its own forward
  pass (adversarial first, as the reference code does), combined as
  -(n_f/n) CE_f + (n_a/n) CE_a; stop rule checked after every step;
* ``mas_only`` (paper ablation): NegGrad + the MAS importance penalty;
* ``adv_mas`` (case 3, full L2UL): ADV + the MAS importance penalty;
* ``random_labels`` and ``finetune`` take part through the ``objective`` switch only.

This module holds the hyperparameter fields they share, the two objectives (``misclassify``, the
paper's and code's, and ``relabel``, the paper's second goal, not in the code; spec section 5),
the stop rule for each objective, and the unlearning loop of the four methods above.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.core.errors import BenchError
from bench.data import View
from bench.unlearning.attacks import make_adversarial_set
from bench.unlearning.importance import MASPenalty, mas_importance, normalize_importance
from bench.unlearning.loops import ForgetCheck, cycle, other_labels, run_until_forgotten, sgd
from bench.unlearning.method import OBJECTIVES, Context, UnlearnData, check_objective, hparam  # noqa: F401


@dataclass(frozen=True)
class L2ULFields:
    """Optimizer, schedule and objective shared by the family (spec 1.2/1.5, 5): SGD lr 1e-3,
    momentum 0.9, weight decay 1e-4, forget batch 32, at most ``max_epochs`` epochs (1000 for
    CIFAR-10 in the official code). ``objective``: ``misclassify`` (stop when no forget instance
    is predicted as its label) or ``relabel`` (train towards a fixed y* != y drawn once per call
    with the run's seed; stop when every forget instance is predicted as its y*).
    ``freeze_bn``: keep BatchNorm layers in eval mode during every update (running statistics
    frozen; the mode is set again before each step, since the stop check switches the model to
    eval and back). The official code updates in train mode (``False``, the default), so every
    step moves the running statistics towards those of batches made only of D_f and its
    adversarial neighbours."""

    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    forget_batch: int = 32
    max_epochs: int = 1000
    objective: str = "misclassify"
    freeze_bn: bool = False


@dataclass(frozen=True)
class AdvFields:
    """The adversarial set (spec 1.3/1.5): ``n_adv`` targeted L2-PGD examples per forget
    instance (eps 4.0, step 0.1, 100 iterations; CIFAR-10 N_adv = 20), adversarial batch 256.
    ``target_label_range``: ``all`` (project default) or ``first10`` (the published runs' quirk,
    see :func:`bench.unlearning.attacks.random_targets`). ``attack_batch`` = images per PGD call
    (memory
    only: the result does not depend on it; 0 = all at once).

    ``union_batch``: ``False`` (default, the reference code): each step makes **two forward
    passes**, ``model(x_adv)`` then ``model(x_f)``, so in train mode every BatchNorm layer
    normalizes each pass with that pass's own batch statistics and updates its running
    statistics twice, the second time from the forget images alone (csm9493/L2UL @ 5fb777b,
    ``main_unlearn_cifar10_mixed_label_resnet18.py``). ``True``: one pass over the
    concatenated batch (forget images first); the loss value is the same, but for a network
    with BatchNorm it is a different method (a named deviation, kept for comparison)."""

    n_adv: int = hparam(20, ge=1)
    eps: float = hparam(4.0, gt=0)
    step: float = hparam(0.1, gt=0)
    iters: int = 100
    target_label_range: str = hparam("all", choices=("all", "first10"))
    adv_batch: int = 256
    attack_batch: int = hparam(1024, ge=0)  # 0: all at once
    union_batch: bool = False


@dataclass(frozen=True)
class MASFields:
    """The importance penalty (spec 1.4): lam = 1.0 (``--reg-lamb``), MAS importance on D_f
    with batch ``mas_batch`` (32 for CIFAR, 16 for ImageNet). ``mas_accumulate``: ``True``
    (default, the reference code, whose ``optimizer.zero_grad()`` belongs to another model and
    never clears the importance copy's gradients: batch j adds |g_1 + ... + g_j| * |B_j|) or
    ``False`` (per-batch gradients, |g_j| * |B_j|: MAS as Aljundi et al. describe it; differs
    from the published runs when k > ``mas_batch``). See
    :func:`bench.unlearning.importance.mas_importance`."""

    lam: float = 1.0
    mas_batch: int = 32
    mas_accumulate: bool = True


# ---------------------------------------------------------------------------------------------
# objectives


def relabel_targets(forget: View, hp, ctx: Context, num_classes: int) -> Tensor | None:
    """y* for ``objective='relabel'``: per forget instance, uniform over the classes other than
    its label, drawn once from ``ctx.generator`` (CPU, in D_f order). ``None`` for
    ``misclassify`` (no random numbers are drawn)."""
    check_objective(hp)
    if hp.objective != "relabel":
        return None
    return other_labels(forget.targets, num_classes, ctx.generator)


def objective_check(forget: View, y_star: Tensor | None) -> ForgetCheck:
    """The stop rule: D_f accuracy 0 (misclassify) or every instance predicted as y* (relabel)."""
    if y_star is None:
        return ForgetCheck(forget)
    return ForgetCheck(forget, targets=y_star, relabel=True)


def report_success(ctx: Context, check: ForgetCheck, model: nn.Module) -> float:
    """Record ``forget_success``: % of D_f that meets the objective (misclassified, or
    predicted as its y*)."""
    n = int(check.targets.numel())
    pct = 100.0 * (1.0 - int(check.hits(model)) / n) if n else 100.0
    ctx.report("forget_success", pct)
    return pct


def forget_batches(
    forget: View, batch_size: int, y_star: Tensor | None
) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    """One unshuffled pass over D_f as ``(x, y, y*)`` batches (``y*`` is ``None`` for
    misclassify)."""
    s = 0
    for x, y in forget.loader(batch_size):
        t = None if y_star is None else y_star[s : s + y.shape[0]].to(y.device)
        s += y.shape[0]
        yield x, y, t


def forget_term(logits: Tensor, y: Tensor, y_star: Tensor | None, reduction: str = "mean"):
    """-CE(g(x_f), y_f) (misclassify) or +CE(g(x_f), y*) (relabel)."""
    if y_star is None:
        return -F.cross_entropy(logits, y, reduction=reduction)
    return F.cross_entropy(logits, y_star, reduction=reduction)


@torch.no_grad()
def adversarial_success(model: nn.Module, x_adv: Tensor, y_adv: Tensor, batch: int = 0) -> float:
    """% of D_adv that the (still pretrained) model classifies as its target label, in eval
    mode. A low value means the attack did not reach its targets (eps or iterations too small
    for the data), so the adversarial term trains towards labels the model does not predict
    instead of anchoring its current decisions; the official code never checks this."""
    if x_adv.shape[0] == 0:
        return 100.0
    was = model.training
    model.eval()
    step = batch or x_adv.shape[0]
    hit = sum(
        int((model(x_adv[s : s + step]).argmax(1) == y_adv[s : s + step]).sum())
        for s in range(0, x_adv.shape[0], step)
    )
    model.train(was)
    return 100.0 * hit / x_adv.shape[0]


def train_mode(model: nn.Module, hp) -> None:
    """``model.train()``, with BatchNorm layers back in eval mode when ``hp.freeze_bn``."""
    model.train()
    if getattr(hp, "freeze_bn", False):
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


# ---------------------------------------------------------------------------------------------
# the loop of neggrad / adv_only / mas_only / adv_mas


def unlearn(
    model: nn.Module,
    data: UnlearnData,
    hp,
    ctx: Context,
    *,
    adversarial: bool,
    importance: bool,
) -> nn.Module:
    """Run one L2UL-family unlearning request on D_f only (spec 1.2-1.5, 5).

    Random numbers, in this order, from ``ctx.generator``: y* (relabel only), then the
    adversarial targets and PGD starts. Without ``adversarial``: full unshuffled passes over D_f
    (NegGrad's schedule), stop rule after every pass. With it: D_adv is built once from the
    model as given; an epoch zips the adversarial batches (``adv_batch``, in D_adv order) with
    the next batches of one unshuffled D_f cycle that runs on across epochs (the reference's
    ``itertools.cycle``), each step makes two forward passes (adversarial, then forget; one
    concatenated pass with ``union_batch``), and the stop rule is checked after every step. The
    model is put in train mode (BatchNorm in eval mode with ``freeze_bn``) before every update;
    the checks use eval mode.
    """
    check_objective(hp)
    forget = data.forget
    y_star = relabel_targets(forget, hp, ctx, data.num_classes)
    if y_star is not None:
        y_star = y_star.to(forget.device)  # once, not per step
    check = objective_check(forget, y_star)
    penalty = None
    if importance:
        omega = normalize_importance(
            mas_importance(model, forget, hp.mas_batch, accumulate=hp.mas_accumulate)
        )
        penalty = MASPenalty(model, omega, hp.lam)
    opt = sgd(model, hp)

    def update(loss: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if penalty is not None:
            penalty.add_grad(
                model
            )  # the gradient of the MAS penalty, fused (bench.unlearning.importance)
        opt.step()

    if adversarial:
        x_adv, y_adv = _adversarial_set(model, forget, hp, ctx, data.num_classes, y_star)
        epoch = _adversarial_epochs(model, forget, hp, y_star, x_adv, y_adv, update)
    else:

        def epoch(_e: int) -> Iterator[None]:
            for x, y, t in forget_batches(forget, hp.forget_batch, y_star):
                train_mode(model, hp)  # every step: a check or probe may have switched the mode
                update(forget_term(model(x), y, t))
                yield

    run_until_forgotten(model, ctx, check, hp.max_epochs, epoch, check_every_step=adversarial)
    report_success(ctx, check, model)
    return model


def _adversarial_set(model, forget, hp, ctx: Context, num_classes: int, y_star):
    """D_adv, built once from the model as given (targets and PGD starts from
    ``ctx.generator``), with its size and attack success reported."""
    if hp.n_adv < 1:
        raise BenchError("adversarial methods need n_adv >= 1 (use neggrad/mas_only without)")
    x_f, y_f = forget.tensors()
    x_adv, y_adv = make_adversarial_set(
        model,
        x_f,
        y_f,
        hp.n_adv,
        num_classes,
        eps=hp.eps,
        step=hp.step,
        iters=hp.iters,
        target_label_range=hp.target_label_range,
        generator=ctx.generator,
        batch_size=hp.attack_batch or None,
        exclude=None if y_star is None else y_star.to(y_f.device),
    )
    ctx.report("n_adversarial", x_adv.shape[0])
    ctx.report("adv_success", adversarial_success(model, x_adv, y_adv, hp.attack_batch))
    return x_adv, y_adv


def _adversarial_epochs(model, forget, hp, y_star, x_adv: Tensor, y_adv: Tensor, update):
    """The epoch of ADV / ADV+IMP: the adversarial batches zipped with the next batches of one
    D_f cycle for the whole call (the reference's ``itertools.cycle``, created before its epoch
    loop: with several forget batches an epoch starts where the last ended)."""
    forget_cycle = cycle(lambda: forget_batches(forget, hp.forget_batch, y_star))

    def adv_step(xa: Tensor, ya: Tensor, x: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
        """-(n_f/n) CE(g(x_f), y_f) + (n_a/n) CE(g(x_a), y_a) (relabel: +CE towards y*)."""
        n_f, n_a = x.shape[0], xa.shape[0]
        n = n_f + n_a
        if hp.union_batch:  # the named deviation: one concatenated pass
            logits = model(torch.cat([x, xa]))
            out_f, out_a = logits[:n_f], logits[n_f:]
        else:  # the reference: adversarial pass first, then the forget pass
            out_a = model(xa)
            out_f = model(x)
        return forget_term(out_f, y, t) * (n_f / n) + F.cross_entropy(out_a, ya) * (n_a / n)

    def adv_epoch(_e: int) -> Iterator[None]:
        for s in range(0, x_adv.shape[0], hp.adv_batch):
            train_mode(model, hp)  # every step, as the reference calls model.train() per step
            xa, ya = x_adv[s : s + hp.adv_batch], y_adv[s : s + hp.adv_batch]
            x, y, t = next(forget_cycle)
            update(adv_step(xa, ya, x, y, t))
            yield

    return adv_epoch
