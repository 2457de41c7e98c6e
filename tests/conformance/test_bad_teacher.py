"""Conformance of ``bad_teacher`` with the Bad Teaching reference code:
github.com/vikram2000b/bad-teaching-unlearning @ f1aa988 (``unlearn.py``: ``UnlearnerLoss``,
``unlearning_step``, ``blindspot_unlearner``; ``dataset.py``: ``UnLearningData``;
``CIFARSuper20_Rocket_Unlearn.ipynb`` cells 6 and 15: the teachers, the student, the 30 %
retain subset, Adam lr 1e-4, T = 1, batch 256, 1 epoch).

Restated below in plain torch (written for this test, not copied):

* the incompetent teacher is a **newly constructed** network of the same architecture
  (``ResNet18(num_classes=20, pretrained=False).to(device).eval()``): its constructor's own
  initialisation, in eval mode; the competent teacher is the trained model in eval mode; the
  student is a newly constructed module (so in train mode) loaded with the trained weights;
* ``UnLearningData``: forget rows first (label 1), then the retain subset (label 0), in the
  order ``random.sample`` returned them; one ``DataLoader(shuffle=True)`` over it per epoch;
* per batch: both teachers' logits under ``no_grad``, the student's forward pass,
  ``zero_grad``, loss ``F.kl_div(log_softmax(s/T), l*softmax(u/T) + (1-l)*softmax(f/T))`` with
  the default reduction ("mean" over every element), i.e. KL(teacher || student), backward,
  ``Adam.step``.

The index orders (the retain subset and each epoch's shuffle) are the one thing taken from the
harness: the same draws of a generator seeded as the run's (the reference draws them from the
global RNG). The network is a tiny CNN with BatchNorm computing in float64; parameters and
BatchNorm running statistics must agree to 1e-9 relative after several Adam steps.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import methods.bad_teacher as bt
from bench.core.spec import Recipe
from bench.models.archs import build_model
from bench.unlearning.method import METHODS, Context, make_hparams
from tests.conformance.toys import ToDouble, assert_same_state, toy_data

C = 4
N_F, N_R = 10, 40
FRACTION = 0.5  # 20 retain rows kept: 30 rows, batches of 8 (8, 8, 8, 6)
BATCH, EPOCHS, LR, T = 8, 2, 0.01, 2.0
SEED = 3

#: the reference's ``F.kl_div`` default reduction ("mean") warns on every call
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")


def _build() -> nn.Module:
    """The architecture's constructor (unseeded): what ``Context.model_builder`` is."""
    return nn.Sequential(
        ToDouble(),
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, C),
    ).double()


def _trained() -> nn.Module:
    torch.manual_seed(0)
    net = _build()
    with torch.no_grad():  # a "trained" model: weights and running statistics off their init
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
        net[2].running_mean.uniform_(-0.2, 0.2)
        net[2].running_var.uniform_(0.5, 1.5)
    return net.eval()


def _data():
    data, x, _ = toy_data(N_F, N_R, C, "bad_teacher")
    return data, x


def _ctx() -> Context:
    g = torch.Generator().manual_seed(SEED)
    return Context(torch.device("cpu"), SEED, g, Recipe(), C, model_builder=_build)


def _harness():
    data, _ = _data()
    hp = make_hparams(
        "bad_teacher",
        {"epochs": EPOCHS, "lr": LR, "temperature": T, "batch_size": BATCH,
         "retain_fraction": FRACTION},
    )  # fmt: skip
    ctx = _ctx()
    out = METHODS.get("bad_teacher")(_trained(), data, hp, ctx)
    return out, ctx


# ---------------------------------------------------------------------------------------------
# the reference, restated


def reference_unlearner_loss(output, labels, full_teacher_logits, unlearn_teacher_logits, temp):
    labels = labels.unsqueeze(1)
    f_out = F.softmax(full_teacher_logits / temp, dim=1)
    u_out = F.softmax(unlearn_teacher_logits / temp, dim=1)
    teacher = labels * u_out + (1 - labels) * f_out
    return F.kl_div(F.log_softmax(output / temp, dim=1), teacher)  # reduction "mean"


def _reference():
    data, x = _data()
    g = torch.Generator().manual_seed(SEED)
    # the teacher: a new network, its constructor's initialisation from a seeded RNG
    teacher_seed = int(torch.randint(0, 2**63 - 1, (1,), generator=g))
    torch.manual_seed(teacher_seed)
    unlearning_teacher = _build().eval()
    model = _trained().eval()  # the competent teacher
    student = _build()  # a new module: train mode
    student.load_state_dict(model.state_dict())
    n_keep = int(N_R * FRACTION)
    subset = torch.randperm(N_R, generator=g)[:n_keep] + N_F  # random.sample's order
    rows = torch.cat([torch.arange(N_F), subset])  # UnLearningData: forget rows first
    labels = torch.cat([torch.ones(N_F), torch.zeros(n_keep)]).double()
    opt = torch.optim.Adam(student.parameters(), lr=LR)
    steps = 0
    for _ in range(EPOCHS):
        perm = torch.randperm(len(rows), generator=g)  # DataLoader(shuffle=True)
        for b in perm.split(BATCH):
            xb, lb = x[rows[b]], labels[b]
            with torch.no_grad():
                full_logits = model(xb)
                unlearn_logits = unlearning_teacher(xb)
            output = student(xb)
            opt.zero_grad()
            loss = reference_unlearner_loss(output, lb, full_logits, unlearn_logits, T)
            loss.backward()
            opt.step()
            steps += 1
    return student, unlearning_teacher, steps


# ---------------------------------------------------------------------------------------------


def test_incompetent_teacher_is_a_newly_constructed_network(monkeypatch):
    seen = {}
    real = bt.run_bad_teacher

    def spy(student, competent, incompetent, data, hp, ctx):
        seen["teacher"] = copy.deepcopy(incompetent)
        return real(student, competent, incompetent, data, hp, ctx)

    monkeypatch.setattr(bt, "run_bad_teacher", spy)
    _, ctx = _harness()
    _, teacher, _ = _reference()
    assert not seen["teacher"].training and ctx.extra["teacher_fresh"] == 1.0
    assert_same_state(seen["teacher"], teacher, rtol=0.0)


def test_bad_teacher_equals_the_reference_loop():
    ours, ctx = _harness()
    ref, _, steps = _reference()
    assert ctx.steps == steps == EPOCHS * 4
    assert_same_state(ours, ref)
    # the weights moved, and so did the BatchNorm running statistics (train-mode student)
    moved = _trained().state_dict()
    assert float((ours.state_dict()["2.running_mean"] - moved["2.running_mean"]).abs().max()) > 0
    assert float((ours.state_dict()["5.weight"] - moved["5.weight"]).abs().max()) > 1e-3


def test_unlearner_loss_is_kl_teacher_to_student_mean_over_elements():
    g = torch.Generator().manual_seed(0)
    s, f, u = (torch.randn(6, C, generator=g, dtype=torch.float64) for _ in range(3))
    tag = torch.tensor([1, 0, 1, 0, 0, 1], dtype=torch.bool)
    ours = bt.unlearner_loss(s, tag, f, u, T)
    ref = reference_unlearner_loss(s, tag.double(), f, u, T)
    assert float(ours) == pytest.approx(float(ref), rel=1e-12)
    # not the other direction: KL(student || teacher)
    teacher = torch.where(tag.unsqueeze(1), F.softmax(u / T, 1), F.softmax(f / T, 1))
    reverse = F.kl_div(teacher.log(), F.log_softmax(s / T, 1), log_target=True)
    assert abs(float(ours) - float(reverse)) > 1e-3


def test_fresh_teacher_has_the_constructors_init_not_reset_parameters():
    """On the harness's own ResNet-20 (the finding: a reset copy's convs have 0.41x the std of
    a fresh network's, and its outputs are near uniform: mean max-prob 0.125 vs 0.999)."""
    build = functools.partial(
        build_model, "resnet20_cifar", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3
    )
    g = torch.Generator().manual_seed(0)
    ctx = Context(torch.device("cpu"), 0, g, Recipe(), 10, model_builder=build)
    torch.manual_seed(1)
    original = build()
    teacher = bt.incompetent_teacher(original, ctx, "fresh")
    torch.manual_seed(int(torch.randint(0, 2**63 - 1, (1,), generator=g.manual_seed(0))))
    fresh = build()
    assert_same_state(teacher, fresh, rtol=0.0)
    reset = bt.reset_teacher(original, torch.Generator().manual_seed(0))
    convs = [n for n, m in fresh.named_modules() if isinstance(m, nn.Conv2d)]
    stds = {
        k: float(dict(m.named_modules())[convs[3]].weight.detach().std())
        for k, m in (("fresh", teacher), ("reset", reset))
    }
    assert stds["reset"] < 0.6 * stds["fresh"]
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        top = {k: float(m(x).softmax(1).max(1).values.mean()) for k, m in
               (("fresh", teacher), ("reset", reset.eval()))}  # fmt: skip
    assert top["fresh"] > 0.9 and top["reset"] < 0.3
