"""SCRUB: teacher-student unlearning with alternating max (D_f) and min (D_r) passes."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.method import hparam, register_method
from bench.study import IntRange, LogUniform


@dataclass(frozen=True)
class ScrubHP:
    """Settings of the SCRUB baseline in the nabla-tau notebooks (spec section 3.4), which use
    the official code's defaults: SGD lr 5e-4, momentum 0.9, weight decay 5e-4; ``epochs`` = 6
    (``sgda_epochs``); a max pass over D_f in the first ``max_epochs`` = 3 epochs (``msteps``);
    lr x ``lr_decay_rate`` (0.1) after each epoch in ``lr_decay_epochs`` ("3,5,9"); KL
    temperature T = 4; min loss = ``gamma`` (1) * CE + ``alpha`` (0.5) * KL (beta = 0); every
    step adds ``smoothing`` (0.5) * sum_params ||theta - theta_avg||_F; batches of 256."""

    lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 6
    max_epochs: int = hparam(3, ge=0)  # 0: min steps only
    lr_decay_epochs: str = "3,5,9"
    lr_decay_rate: float = hparam(0.1, gt=0)
    temperature: float = 4.0
    gamma: float = hparam(1.0, ge=0)
    alpha: float = hparam(0.5, ge=0)
    smoothing: float = hparam(0.5, ge=0)
    forget_batch: int = 256
    retain_batch: int = 256


def distill_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, summed over classes, mean over the batch (the
    reference's ``DistillKL``)."""
    log_s = F.log_softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_s, p_t, reduction="sum") / student_logits.shape[0]
    return kl * temperature**2


def _param_dist(model: nn.Module, anchor: list[Tensor]) -> Tensor:
    return sum(torch.linalg.vector_norm(p - a) for p, a in zip(model.parameters(), anchor))


def _lr_at(epoch: int, hp: ScrubHP) -> float:
    """lr of 1-based ``epoch``: the reference's ``adjust_learning_rate`` (decay once for every
    decay epoch strictly before ``epoch``)."""
    decays = [int(e) for e in hp.lr_decay_epochs.split(",") if e.strip()]
    return hp.lr * hp.lr_decay_rate ** sum(epoch > d for d in decays)


def run_scrub(student: nn.Module, teacher: nn.Module, data, hp: ScrubHP, ctx) -> nn.Module:
    """SCRUB with an explicit, frozen teacher (``scrub`` passes a copy of the original)."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    anchor = [p.detach().clone() for p in student.parameters()]  # theta_avg (see docstring)
    opt = torch.optim.SGD(
        student.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
    )
    T = hp.temperature
    first_min_kl = None
    last_max_kl = None

    def step(loss: Tensor) -> None:
        if hp.smoothing:
            loss = loss + hp.smoothing * _param_dist(student, anchor)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx.step()

    for epoch in range(1, hp.epochs + 1):
        for group in opt.param_groups:
            group["lr"] = _lr_at(epoch, hp)
        student.train()
        if epoch <= hp.max_epochs:
            for xf, _ in data.forget.loader(hp.forget_batch, shuffle=True, generator=ctx.generator):
                with torch.no_grad():
                    t = teacher(xf)
                kl = distill_kl(student(xf), t, T)
                last_max_kl = kl.detach()  # read once at the end: no host sync per step
                step(-kl)
        for xr, yr in data.retain.loader(hp.retain_batch, shuffle=True, generator=ctx.generator):
            with torch.no_grad():
                t = teacher(xr)
            out = student(xr)
            kl = distill_kl(out, t, T)
            if first_min_kl is None:
                first_min_kl = kl.detach()
            step(hp.gamma * F.cross_entropy(out, yr) + hp.alpha * kl)
    if first_min_kl is not None:
        ctx.report("kl_min_start", float(first_min_kl))
    if last_max_kl is not None:
        ctx.report("kl_max_end", float(last_max_kl))
    return student


#: the search space of ``python -m bench.tune`` (trial 0 is always the defaults): learning rate,
#: epochs, max (forget) epochs and the weight of the distillation term
SEARCH = {
    "lr": LogUniform(1e-5, 1e-1),
    "epochs": IntRange(1, 10),
    "max_epochs": IntRange(0, 6),
    "alpha": LogUniform(0.05, 5.0),
}


@register_method(
    "scrub",
    hparams=ScrubHP,
    search=SEARCH,
    needs=("forget", "retain"),
    citation=(
        "Kurmanji, Triantafillou, Hayes, Triantafillou, 'Towards Unbounded Machine Unlearning', "
        "NeurIPS 2023"
    ),
    reference="https://github.com/meghdadk/SCRUB",
    quick_hp={
        "lr": 0.01,
        "epochs": 6,
        "max_epochs": 3,
        "lr_decay_epochs": "5",
        "forget_batch": 4,
        "retain_batch": 32,
    },
)
def scrub(model, data, hp: ScrubHP, ctx):
    """SCRUB (Kurmanji et al., NeurIPS 2023; reference github.com/meghdadk/SCRUB), in the
    setting of the nabla-tau notebooks (spec section 3.4). Needs D_f and D_r.

    Teacher = a frozen copy of the original model (eval mode, never updated); student = the
    original model (train mode). For epoch e = 1..``epochs``: lr = lr * 0.1^(#decay epochs < e);
    if e <= ``max_epochs`` a "max" pass over shuffled D_f minimising -KL(teacher || student)
    (temperature T, times T^2); then a "min" pass over shuffled D_r minimising
    gamma * CE(student, y) + alpha * KL. Every step also adds smoothing * sum over parameter
    tensors of ||theta - theta_avg||_F.

    Deviations: theta_avg is the original weights throughout; the reference averages the
    student into it (SWA) only from epoch 10 on, which the default 6 epochs never reach (spec
    3.4). No checkpoint selection ("SCRUB+R" falls back to the last epoch, spec 3.4). Reports
    ``kl_min_start`` (KL of the first min batch) and ``kl_max_end`` (KL of the last max batch)."""
    teacher = copy.deepcopy(model)
    return run_scrub(model, teacher, data, hp, ctx)
