"""Bad Teacher: distil D_f from a random (incompetent) teacher and D_r from the original."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench import runtime
from bench.method import register_method
from bench.unlearning import seeded_reset


@dataclass(frozen=True)
class BadTeacherHP:
    """Reference defaults (CIFAR experiments): 1 epoch, Adam lr 1e-4, KL temperature 1, batch
    256, a random ``retain_fraction`` = 30 % of D_r."""

    epochs: int = 1
    lr: float = 1e-4
    temperature: float = 1.0
    batch_size: int = 256
    retain_fraction: float = 0.3


def incompetent_teacher(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """A copy of ``model`` with every module's ``reset_parameters()`` called (its fresh
    initialisation), in eval mode on the model's device, seeded from ``generator`` alone
    (:func:`bench.unlearning.seeded_reset`; the global RNG state is left as it was).
    Parameters of modules without ``reset_parameters`` keep the original values (none in the
    harness's architectures; BatchNorm's resets its affine parameters and running statistics).
    """
    teacher = copy.deepcopy(model)
    seeded_reset(teacher.modules(), generator)
    return teacher.eval()


def unlearner_loss(
    student_logits: Tensor,
    is_forget: Tensor,
    competent_logits: Tensor,
    incompetent_logits: Tensor,
    temperature: float,
) -> Tensor:
    """KL(teacher || student) at temperature T, teacher = the incompetent one on forget rows
    and the competent one on retain rows; averaged over every (row, class) element as the
    reference's ``F.kl_div`` default reduction ("mean")."""
    f = is_forget.float().unsqueeze(1)
    target = f * F.softmax(incompetent_logits / temperature, 1) + (1 - f) * F.softmax(
        competent_logits / temperature, 1
    )
    log_s = F.log_softmax(student_logits / temperature, 1)
    return F.kl_div(log_s, target, reduction="sum") / target.numel()


def run_bad_teacher(
    student: nn.Module,
    competent: nn.Module,
    incompetent: nn.Module,
    data,
    hp: BadTeacherHP,
    ctx,
) -> nn.Module:
    """The unlearning loop with explicit teachers (both in eval mode, never updated)."""
    forget, retain = data.forget, data.retain
    if forget.split is not retain.split:
        raise ValueError("bad_teacher: D_f and D_r must be views of the same split")
    n_keep = int(len(retain) * hp.retain_fraction)
    keep = torch.randperm(len(retain), generator=ctx.generator)[:n_keep]
    idx = torch.cat([forget.indices, retain.indices.index_select(0, keep)])
    tag = torch.cat(
        [torch.ones(len(forget), dtype=torch.bool), torch.zeros(n_keep, dtype=torch.bool)]
    )
    competent.eval()
    incompetent.eval()
    opt = torch.optim.Adam(student.parameters(), lr=hp.lr)
    student.train()
    for _ in range(hp.epochs):
        perm = torch.randperm(idx.numel(), generator=ctx.generator)
        view = dataclasses.replace(forget, indices=idx[perm], name="forget+retain_subset")
        tags = tag[perm]
        for b, (x, _) in enumerate(view.loader(hp.batch_size)):
            is_forget = runtime.to_device(
                tags[b * hp.batch_size : b * hp.batch_size + x.shape[0]], x.device
            )
            with torch.no_grad():
                tc, ti = competent(x), incompetent(x)
            loss = unlearner_loss(student(x), is_forget, tc, ti, hp.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ctx.step()
    return student


@register_method(
    "bad_teacher",
    hparams=BadTeacherHP,
    needs=("forget", "retain"),
    citation=(
        "Chundawat, Tarun, Mandal, Kankanhalli, 'Can Bad Teaching Induce Forgetting? Unlearning "
        "in Deep Networks Using an Incompetent Teacher', AAAI 2023"
    ),
    reference="https://github.com/vikram2000b/bad-teaching-unlearning",
    quick_hp={"epochs": 5, "lr": 0.01, "batch_size": 32},
)
def bad_teacher(model, data, hp: BadTeacherHP, ctx):
    """Bad Teacher (Chundawat et al., AAAI 2023; reference
    github.com/vikram2000b/bad-teaching-unlearning, ``blindspot_unlearner``). Needs D_f and
    D_r.

    Competent teacher = a frozen copy of the original; incompetent teacher = a randomly
    re-initialised copy (:func:`incompetent_teacher`, seeded from ``ctx.generator``); student =
    the original. A random ``retain_fraction`` of D_r (drawn with ``ctx.generator``) is merged
    with D_f (forget rows tagged 1), shuffled every epoch; each batch minimises
    KL(teacher_row || student) at temperature T (:func:`unlearner_loss`), with Adam.

    Deviations: the reference's incompetent teacher is a freshly constructed network of the
    same architecture; here it is the original re-initialised with ``reset_parameters`` (same
    distribution, no architecture knowledge needed). The student trains in train mode (the
    reference never sets the mode explicitly)."""
    competent = copy.deepcopy(model).eval()
    incompetent = incompetent_teacher(model, ctx.generator)
    return run_bad_teacher(model, competent, incompetent, data, hp, ctx)
