"""∇τ (Nabla-tau): adaptive gradient ascent on D_f towards the validation loss level, with
gradient descent on D_r (Trippa et al., arXiv 2403.14339)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from bench.core import runtime
from bench.core.errors import BenchError
from bench.core.reference import Reference
from bench.data import View
from bench.tuning.study import LogUniform
from bench.unlearning.method import hparam, register_method

BN_MODES = ("eval", "train")
REFERENCE = "https://github.com/dnl-trpp/Nabla-Tau/tree/1012093bbaf445e683d4dc40794ef0a611fb91bf"


@dataclass(frozen=True)
class NablaTauHP:
    """Paper / official-notebook defaults for images (spec section 3.2): AdamW lr 1e-3 with
    PyTorch's default weight decay 0.01 and betas, LR decayed linearly by the factor 1.0 -> 0.1
    over the forget-epochs (stepped once per forget-epoch), batch 256 for D_f, D_r and D_v.

    * ``alpha0 < 0`` (default) = the paper's rule alpha0 = ``alpha_per_split`` * split with
      ``alpha_per_split`` = 5/3 and split = |D_f| / (|D_f| + |D_r|); ``alpha0 >= 0`` fixes it
      (``alpha0 = 0`` with forget_epochs = int(R / F * 6) is the notebooks' fine-tuning
      baseline, registered as ``nabla_tau_ft``).
    * ``forget_epochs = 0`` (default) = the rule int(R / (2 F) * ``compute_epochs``) with R, F
      the numbers of D_r and D_f batches and ``compute_epochs`` = 6; ``> 0`` fixes it.
    * ``val_every`` = 5: L_v is recomputed (eval mode) at forget-epochs 0, 5, 10, ...
    * ``bn_mode``: ``eval`` (main CIFAR notebooks: BatchNorm statistics frozen, dropout off
      during the updates) or ``train`` (the split/alpha sweep notebook).
    * ``augment``: none, as in the notebooks (every unlearning loader is un-augmented).
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    lr_end_factor: float = hparam(0.1, ge=0, le=1)
    batch_size: int = 256
    alpha0: float = hparam(-1.0)  # < 0: the paper's rule; 0 (fine-tuning) and > 0 fix it
    alpha_per_split: float = hparam(5 / 3, ge=0)
    forget_epochs: int = hparam(0, ge=0)  # 0: the rule
    compute_epochs: float = hparam(6.0, gt=0)
    val_every: int = hparam(5, ge=1)
    bn_mode: str = hparam("eval", choices=BN_MODES)
    augment: str = hparam("none", choices=("none", "crop", "crop_flip"))


def forget_epoch_count(n_retain_batches: int, n_forget_batches: int, compute: float = 6.0) -> int:
    """The notebooks' rule int(R / (2 F) * 6): about 3 passes over D_r in total (each forget
    batch is paired with one retain batch). At least 1 (project guard for R << F)."""
    return max(1, int(n_retain_batches / (2 * n_forget_batches) * compute))


def alpha_schedule(alpha0: float, epochs: int) -> list[float]:
    """alpha used in forget-epoch e = 0..epochs-1: alpha0 decreased by alpha0/epochs after each
    epoch (so it would reach 0 right after the last one)."""
    return [alpha0 * (1 - e / epochs) for e in range(epochs)]


def lr_factors(end_factor: float, epochs: int) -> list[float]:
    """LinearLR(start_factor=1, end_factor, total_iters=epochs), stepped once per epoch."""
    return [1.0 + (end_factor - 1.0) * e / epochs for e in range(epochs)]


def nabla_tau_loss(
    forget_losses: torch.Tensor, retain_losses: torch.Tensor, val_loss: float, alpha: float
) -> torch.Tensor:
    """L = alpha * ReLU(L_v - L_f)^2 + (1 - alpha) * L_r with L_f, L_r the batch means of the
    per-sample losses and L_v a constant: the forget term pushes L_f up (gradient ascent of
    size proportional to the gap) and switches off once L_f >= L_v."""
    gap = F.relu(val_loss - forget_losses.mean())
    return alpha * gap**2 + (1 - alpha) * retain_losses.mean()


@torch.no_grad()
@runtime.full_precision
def mean_loss(model: nn.Module, view: View, batch_size: int) -> float:
    """Mean per-sample cross-entropy over a view, in eval mode (mode restored), in fp32 under
    any precision: L_v is the level at which the ascent term switches off, a decision that
    bf16 rounding of the logits would move."""
    was = model.training
    model.eval()
    total, n = None, 0
    for x, y in view.loader(batch_size):
        s = F.cross_entropy(model(x), y, reduction="sum")
        total = s if total is None else total + s
        n += y.numel()
    model.train(was)
    return float(total) / n


def _retain_stream(view: View, hp, ctx) -> Iterator:
    loader = view.loader(hp.batch_size, shuffle=True, generator=ctx.generator, augment=hp.augment)
    return iter(loader)


def batch_count(n: int, batch_size: int) -> int:
    """len(DataLoader) without drop_last: the notebooks' R and F."""
    return -(-n // batch_size)


def unlearning_loop(
    model: nn.Module,
    forget: View,
    retain: View,
    val: View | None,
    hp,
    ctx,
    alpha0: float,
    epochs: int,
) -> nn.Module:
    """The notebooks' ``unlearning`` routine (``Unlearning_main_Cifar10.ipynb`` cell 5),
    shared by ``nabla_tau`` and its fine-tuning baseline ``nabla_tau_ft``: ``epochs``
    forget-epochs of one AdamW step per forget batch on
    alpha * ReLU(L_v - L_f)^2 + (1 - alpha) * L_r (see :func:`nabla_tau`).

    ``hp`` needs ``lr``, ``weight_decay``, ``lr_end_factor``, ``batch_size``, ``val_every``,
    ``bn_mode`` and ``augment``. ``val=None`` (only with ``alpha0 == 0``, where the memory term
    is 0): L_v is not computed. With ``alpha0 == 0`` and BatchNorm in eval mode the forget
    batch is drawn but not forwarded (its loss has no gradient and, in eval mode, no effect
    on the model; the notebooks compute it anyway); with BatchNorm in train mode it is
    forwarded, since that moves the running statistics."""
    if hp.bn_mode not in BN_MODES:
        raise BenchError(f"{ctx.method}: bn_mode must be one of {BN_MODES}, got {hp.bn_mode!r}")
    if hp.val_every < 1:
        raise BenchError(f"{ctx.method}: val_every must be >= 1, got {hp.val_every}")
    if val is None and alpha0 != 0:
        raise ValueError("unlearning_loop: alpha0 > 0 needs a validation view for L_v")
    f_batches = batch_count(len(forget), hp.batch_size)
    r_batches = batch_count(len(retain), hp.batch_size)
    restart_every = max(1, r_batches // f_batches)
    memory_forward = alpha0 != 0 or hp.bn_mode == "train"
    ctx.report("forget_epochs", epochs)
    ctx.report("forget_loss_start", mean_loss(model, forget, hp.batch_size))

    opt = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    alphas, factors = alpha_schedule(alpha0, epochs), lr_factors(hp.lr_end_factor, epochs)
    retain_it = _retain_stream(retain, hp, ctx)
    val_loss = 0.0
    for e in range(epochs):
        if val is not None and e % hp.val_every == 0:
            val_loss = mean_loss(model, val, hp.batch_size)
            if e == 0:
                ctx.report("val_loss_start", val_loss)
        if e % restart_every == 0 and e > 0:
            retain_it = _retain_stream(retain, hp, ctx)
        for g in opt.param_groups:
            g["lr"] = hp.lr * factors[e]
        model.train(hp.bn_mode == "train")
        for xf, yf in forget.loader(
            hp.batch_size, shuffle=True, generator=ctx.generator, augment=hp.augment
        ):
            batch = next(retain_it, None)
            if batch is None:  # only when R < F (project guard)
                retain_it = _retain_stream(retain, hp, ctx)
                batch = next(retain_it)
            xr, yr = batch
            if memory_forward:  # forget batch first, as in the notebooks (BN train mode)
                forget_losses = F.cross_entropy(model(xf), yf, reduction="none")
                retain_losses = F.cross_entropy(model(xr), yr, reduction="none")
                loss = nabla_tau_loss(forget_losses, retain_losses, val_loss, alphas[e])
            else:  # (1 - 0) * L_r: the same gradient
                loss = F.cross_entropy(model(xr), yr, reduction="none").mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ctx.step()
    if val is not None:
        ctx.report("val_loss_end", mean_loss(model, val, hp.batch_size))
    ctx.report("forget_loss_end", mean_loss(model, forget, hp.batch_size))
    model.eval()
    return model


#: the search space of ``python -m bench.tune`` (trial 0 is always the defaults): learning rate,
#: the ascent weight per forgotten fraction (alpha0 = alpha_per_split * split) and the compute
#: that sets the number of forget-epochs
SEARCH = {
    "lr": LogUniform(1e-5, 1e-2),
    "alpha_per_split": LogUniform(0.1, 10.0),
    "compute_epochs": LogUniform(1.0, 12.0),
}


@register_method(
    "nabla_tau",
    hparams=NablaTauHP,
    search=SEARCH,
    needs=("forget", "retain", "val"),
    citation="Trippa, Campagnano, Bucarelli, Tolomei, Silvestri: Nabla-tau: Gradient-based and "
    "Task-Agnostic machine Unlearning, arXiv 2403.14339 (2024)",
    reference=REFERENCE,
    references=(
        Reference(
            "dnl-trpp/Nabla-Tau",
            "1012093bbaf445e683d4dc40794ef0a611fb91bf",
            "Unlearning_main_Cifar10.ipynb: cells 5-6 (unlearning); "
            "Unlearning_main_experiments_split_and_alpha.ipynb: cell 4 (BN train mode)",
            conformance="tests/conformance/test_nabla_tau_notebooks.py",
        ),
    ),
    deviations=(
        (
            "split = |D_f| / (|D_f| + |D_r|) as the method sees them (the notebooks pass their "
            "SPLIT constant)"
        ),
        (
            "batches shuffled by one randperm per pass from the run's generator (notebooks: "
            "DataLoaders on one seeded generator; same distribution, other order)"
        ),
        "the D_r iterator restarts early if it runs out (R < F, where the notebooks crash)",
        (
            "alpha and the LR factor in closed form (the notebooks update them recursively: equal "
            "up to rounding)"
        ),
        (
            "the notebooks' per-epoch MIA/accuracy traces are not computed; images only (no "
            "GoEmotions variant)"
        ),
    ),
    weak_unlearning=True,
    quick_hp={"batch_size": 32},
)
def nabla_tau(model, data, hp: NablaTauHP, ctx):
    """∇τ: for ``forget_epochs`` passes over D_f (shuffled, batch 256), pair each forget batch
    with the next batch of a shuffled D_r iterator and take one AdamW step on

        L = alpha * ReLU(L_v - L_f)^2 + (1 - alpha) * L_r

    (L_f, L_r: mean per-sample CE on the batches; L_v: mean per-sample CE on the validation set
    D_v, a constant recomputed in eval mode every ``val_every`` forget-epochs). The memory term
    is adaptive gradient ascent on D_f that stops once the forget loss reaches the unseen-data
    level ("weak unlearning": D_f should look like unseen data to a membership attack, not be
    misclassified). alpha0 = 5/3 * split, decreased linearly by alpha0/forget_epochs after every
    forget-epoch; the LR decays linearly 1.0 -> 0.1 likewise. The D_r iterator is restarted at
    forget-epochs 0, k, 2k, ... with k = floor(R/F) (R, F = numbers of D_r/D_f batches).
    Default forget_epochs = int(R/(2F) * 6). The model is in eval mode during the updates
    (BatchNorm statistics frozen) unless ``bn_mode='train'``. Data: D_f, D_r, D_v.

    Reference: github.com/dnl-trpp/Nabla-Tau @ 1012093 (``Unlearning_main_Cifar10.ipynb`` cells
    5-6, ``unlearning``; BN train mode: ``Unlearning_main_experiments_split_and_alpha.ipynb``).
    tests/conformance/test_nabla_tau_notebooks.py restates that loop and checks equal
    parameters (both BN modes) and the alpha / LR schedules. The notebooks' fine-tuning
    baseline is ``nabla_tau_ft``; their data layout (D_v = half of the test set, the other
    half the test set, pretraining on all of train) is ``DataSpec(val_fraction=0.5,
    val_from="test")``, used by the ``nablatau-*`` suites.

    Deviations: split = |D_f| / (|D_f| + |D_r|) as the method sees them (the notebooks pass
    their SPLIT constant; equal up to the rounding of the forget-set size); D_v is whatever
    validation split the run has (the notebooks': half the test set, as in the ``nablatau-*``
    suites; ``val_from="train"`` holds it out of train instead); batches are shuffled by one
    ``randperm`` per pass from the run's generator (the notebooks' DataLoaders share one
    seeded generator: same distribution, other order); the D_r iterator is restarted early if
    it runs out (only possible when R < F, where the notebooks would crash) and the epoch rule
    is at least 1; alpha and the LR factor use the closed forms alpha0 * (1 - e/E) and
    1 - 0.9 e/E (the notebooks subtract/multiply recursively: equal up to rounding); with
    ``alpha0 = 0`` in BN eval mode the forget batch is not forwarded (no effect on the
    model); the notebooks' per-epoch MIA/accuracy traces are not computed (the harness's
    progress probe records traces); images only (the GoEmotions variant: two-sided memory
    term, alpha0 0.5, lr 3e-4, no schedule, is not implemented). Reports ``alpha0``,
    ``split``, ``forget_epochs``, ``val_loss_start``, ``val_loss_end``, ``forget_loss_start``
    and ``forget_loss_end`` (eval-mode means)."""
    n_f, n_r = len(data.forget), len(data.retain)
    split = n_f / (n_f + n_r)
    alpha0 = hp.alpha0 if hp.alpha0 >= 0 else hp.alpha_per_split * split
    epochs = hp.forget_epochs or forget_epoch_count(
        batch_count(n_r, hp.batch_size), batch_count(n_f, hp.batch_size), hp.compute_epochs
    )
    ctx.report("alpha0", alpha0)
    ctx.report("split", split)
    return unlearning_loop(model, data.forget, data.retain, data.val, hp, ctx, alpha0, epochs)
