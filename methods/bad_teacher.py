"""Bad Teacher: distil D_f from a random (incompetent) teacher and D_r from the original."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.core import runtime
from bench.core.reference import Reference
from bench.unlearning.loops import seeded_reset
from bench.unlearning.method import hparam, register_method


@dataclass(frozen=True)
class BadTeacherHP:
    """Reference defaults (CIFAR experiments): 1 epoch, Adam lr 1e-4, KL temperature 1, batch
    256, a random ``retain_fraction`` = 30 % of D_r. ``teacher_init``: ``"fresh"`` (the
    reference's) = a newly constructed network of the run's architecture
    (:meth:`bench.unlearning.method.Context.fresh_model`); ``"reset"`` = a copy of the original
    with every
    module's ``reset_parameters()`` called (the harness before this was fixed: on the ResNets
    conv weights at 0.41x a fresh net's std and a near-uniform teacher)."""

    epochs: int = 1
    lr: float = 1e-4
    temperature: float = 1.0
    batch_size: int = 256
    retain_fraction: float = 0.3
    teacher_init: str = hparam("fresh", choices=("fresh", "reset"))


def reset_teacher(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """A copy of ``model`` with every module's ``reset_parameters()`` called, in eval mode on
    the model's device, seeded from ``generator`` alone
    (:func:`bench.unlearning.loops.seeded_reset`;
    the global RNG state is left as it was). Not the constructor's initialisation: a ResNet's
    constructor draws its convs Kaiming-normal (fan_out), ``Conv2d.reset_parameters`` draws
    Kaiming-uniform(a=sqrt(5)) (``teacher_init="reset"``)."""
    teacher = copy.deepcopy(model)
    seeded_reset(teacher.modules(), generator)
    return teacher.eval()


def incompetent_teacher(model: nn.Module, ctx, init: str = "fresh") -> nn.Module:
    """The incompetent teacher: with ``init="fresh"`` a new network of the run's architecture
    with its constructor's initialisation, seeded from ``ctx.generator``
    (:meth:`~bench.unlearning.method.Context.fresh_model`), as the reference's
    ``ResNet18(num_classes=..., pretrained=False).eval()``; with ``init="reset"``, or when the
    context has no model builder (a context made outside the protocol), :func:`reset_teacher`
    (then ``teacher_fresh`` = 0 is reported). Eval mode, never updated."""
    fresh = init == "fresh" and ctx.model_builder is not None
    if init == "fresh" and not fresh:
        ctx.log("bad_teacher: no model builder in this context; the teacher is a reset copy")
    ctx.report("teacher_fresh", float(fresh))
    if fresh:
        return ctx.fresh_model().to(next(model.parameters()).device)
    return reset_teacher(model, ctx.generator)


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
    references=(
        Reference(
            "vikram2000b/bad-teaching-unlearning",
            "f1aa988",
            "unlearn.py: UnlearnerLoss, blindspot_unlearner; dataset.py: UnLearningData; "
            "CIFARSuper20_Rocket_Unlearn.ipynb (the teachers, 30 % retain subset)",
            conformance="tests/conformance/test_bad_teacher.py",
        ),
    ),
    deviations=(
        "data order: the 30 % retain subset and each epoch's shuffle are drawn with the run's "
        "generator (the reference: random.sample and a DataLoader on the global RNG)",
        "the incompetent teacher's seed is one draw of the run's generator (the reference's "
        "comes from the global RNG after torch.manual_seed(seed))",
    ),
    quick_hp={"epochs": 5, "lr": 0.01, "batch_size": 32},
)
def bad_teacher(model, data, hp: BadTeacherHP, ctx):
    """Bad Teacher (Chundawat et al., AAAI 2023; reference
    github.com/vikram2000b/bad-teaching-unlearning, ``blindspot_unlearner``). Needs D_f and
    D_r.

    Competent teacher = a frozen copy of the original (eval mode); incompetent teacher = a
    newly constructed network of the run's architecture with its constructor's initialisation,
    in eval mode (:func:`incompetent_teacher`, seeded from ``ctx.generator``), as the
    reference's ``ResNet18(num_classes=..., pretrained=False).eval()``; student = the original,
    in train mode (the reference's student is a newly constructed module, so in train mode,
    loaded with the original's weights). A random ``retain_fraction`` of D_r (drawn with
    ``ctx.generator``) is merged with D_f (forget rows first, tagged 1), shuffled every epoch;
    each batch minimises KL(teacher_row || student) at temperature T, averaged over every
    (row, class) element (:func:`unlearner_loss`), with Adam. Reports ``teacher_fresh``.

    Deviations (``deviations=`` of the registration): the data order and the teacher's seed
    come from the run's generator, not the global RNG; the loss, the loop and the teacher's
    construction are restated step by step by ``tests/conformance/test_bad_teacher.py``."""
    competent = copy.deepcopy(model).eval()
    incompetent = incompetent_teacher(model, ctx, hp.teacher_init)
    return run_bad_teacher(model, competent, incompetent, data, hp, ctx)
