"""Defining invariants of six literature baselines on toy cases: SCRUB, SalUn, l1-sparse, SSD,
Bad Teacher and Amnesiac (random relabelling)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bench.core.spec import Recipe
from bench.data import View
from bench.data.splits import TensorSplit
from bench.unlearning.method import Context, UnlearnData, Withheld, make_hparams
from methods.amnesiac import amnesiac, wrong_labels
from methods.bad_teacher import incompetent_teacher, reset_teacher, run_bad_teacher
from methods.l1_sparse import add_l1_grad, l1_norm, l1_sparse, l1_weight
from methods.salun import saliency_mask, salun
from methods.scrub import _lr_at, distill_kl, run_scrub, scrub
from methods.ssd import dampen, ssd

CPU = torch.device("cpu")


def toy_data(n_f: int = 8, n_r: int = 40, classes: int = 4, seed: int = 0) -> UnlearnData:
    g = torch.Generator().manual_seed(seed)
    n = n_f + n_r
    x = torch.rand(n, 1, 4, 4, generator=g)
    y = torch.arange(n) % classes
    train = View(TensorSplit(x, y), torch.arange(n), CPU, "train")
    forget = train.subset(torch.arange(n_f), "forget")
    retain = train.subset(torch.arange(n_f, n), "retain")
    return UnlearnData(forget, retain, Withheld("val", "test"), classes)


def toy_ctx(seed: int = 0, classes: int = 4) -> Context:
    return Context(CPU, seed, torch.Generator().manual_seed(seed), Recipe(), classes)


def linear(seed: int = 0, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, classes))


def mlp_bn(seed: int = 0, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, classes)
    )


def same_params(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@torch.no_grad()
def forget_kl(student, teacher, data, temperature=4.0) -> float:
    x, _ = data.forget.tensors()
    return float(distill_kl(student.eval()(x), teacher.eval()(x), temperature))


# --- SCRUB -------------------------------------------------------------------------------


def test_scrub_lr_schedule_matches_reference_decay():
    hp = make_hparams("scrub")
    assert [_lr_at(e, hp) for e in range(1, 7)] == pytest.approx(
        [5e-4, 5e-4, 5e-4, 5e-5, 5e-5, 5e-6], rel=1e-12
    )


def test_scrub_min_step_kl_is_zero_at_start_without_max_steps():
    data, ctx = toy_data(), toy_ctx()
    hp = make_hparams("scrub", {"max_epochs": 0, "epochs": 1, "lr": 0.1, "retain_batch": 8})
    scrub(linear(), data, hp, ctx)
    assert ctx.extra["kl_min_start"] == pytest.approx(0.0, abs=1e-7)
    assert "kl_max_end" not in ctx.extra and ctx.steps == 5  # 40 retain / 8, no max step


def test_scrub_never_updates_teacher_and_max_step_raises_forget_kl():
    data, teacher = toy_data(), linear()
    frozen = copy.deepcopy(teacher.state_dict())
    student = copy.deepcopy(teacher)
    with torch.no_grad():  # -KL has zero gradient at an identical student: start next to it
        for p in student.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    kl0 = forget_kl(student, teacher, data)
    hp = {"epochs": 1, "lr": 1.0, "forget_batch": 2, "smoothing": 0.0}
    with_max = run_scrub(
        copy.deepcopy(student),
        teacher,
        data,
        make_hparams("scrub", {**hp, "max_epochs": 1}),
        toy_ctx(),
    )
    assert all(torch.equal(v, frozen[k]) for k, v in teacher.state_dict().items())
    no_max = run_scrub(
        copy.deepcopy(student),
        teacher,
        data,
        make_hparams("scrub", {**hp, "max_epochs": 0}),
        toy_ctx(),
    )
    kl_max, kl_min_only = forget_kl(with_max, teacher, data), forget_kl(no_max, teacher, data)
    assert kl_max > 10 * max(kl0, kl_min_only)


# --- SalUn -------------------------------------------------------------------------------


def test_salun_weights_outside_mask_never_move():
    data, model = toy_data(), mlp_bn()
    hp = make_hparams("salun", {"epochs": 2, "lr": 0.1, "batch_size": 8})
    masks = saliency_mask(copy.deepcopy(model), data.forget, hp)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ctx = toy_ctx()
    out = salun(model, data, hp, ctx)
    n_total = sum(m.numel() for m in masks.values())
    n_masked = sum(int(m.sum()) for m in masks.values())
    assert n_masked == int(n_total * 0.5) and ctx.extra["mask_fraction"] == n_masked / n_total
    moved = 0
    for n, p in out.named_parameters():
        assert torch.equal(p[~masks[n]], before[n][~masks[n]]), n  # bitwise unchanged
        moved += int((p[masks[n]] != before[n][masks[n]]).sum())
    assert moved > n_masked // 2  # the salient half does train


def test_salun_mask_keeps_the_largest_forget_gradients():
    data, model = toy_data(), mlp_bn()
    hp = make_hparams("salun", {"mask_ratio": 0.3})
    masks = saliency_mask(model, data.forget, hp)
    model.eval()
    x, y = data.forget.tensors()
    grads = torch.autograd.grad(-F.cross_entropy(model(x), y), list(model.parameters()))
    g = {n: gr.abs() for (n, _), gr in zip(model.named_parameters(), grads)}
    inside = torch.cat([g[n][m] for n, m in masks.items()])
    outside = torch.cat([g[n][~m] for n, m in masks.items()])
    assert inside.min() >= outside.max()


# --- l1-sparse ---------------------------------------------------------------------------


def test_l1_sparse_penalty_decays_linearly():
    hp = make_hparams("l1_sparse")
    assert [l1_weight(e, hp) for e in range(10)] == pytest.approx(
        [5e-4 * (1 - e / 10) for e in range(10)], rel=1e-12
    )
    hp2 = make_hparams("l1_sparse", {"no_l1_epochs": 2, "gamma": 1.0})
    assert [l1_weight(e, hp2) for e in range(10)] == pytest.approx(
        [1 - e / 8 for e in range(8)] + [0.0, 0.0]
    )


def test_l1_sparse_gives_smaller_l1_norm_than_plain_finetuning():
    data = toy_data()
    base = {"epochs": 3, "lr": 0.05, "batch_size": 8, "weight_decay": 0.0}
    plain = l1_sparse(linear(), data, make_hparams("l1_sparse", {**base, "gamma": 0.0}), toy_ctx())
    sparse = l1_sparse(
        linear(), data, make_hparams("l1_sparse", {**base, "gamma": 0.01}), toy_ctx()
    )
    with torch.no_grad():
        assert float(l1_norm(sparse)) < 0.9 * float(l1_norm(plain))


# --- SSD ---------------------------------------------------------------------------------


def test_ssd_dampening_on_constructed_importances():
    p = torch.tensor([1.0, 2.0, -3.0, 4.0, 5.0])
    forget = torch.tensor([1.0, 30.0, 50.0, 0.0, 100.0])
    full = torch.tensor([1.0, 2.0, 10.0, 0.0, 20.0])
    # alpha 2: selected where forget > 2 * full -> entries 1 (30 > 4), 2 (50 > 20), 4 (100 > 40)
    # (not 0: 1 > 2 false; not 3: 0 > 0 false); lambda 1.5: factors 1.5 * full / forget =
    # 0.1, 0.3, 0.3 (all below the cap of 1)
    n = dampen([p], [forget], [full], alpha=2.0, dampening=1.5)
    assert n == 3
    assert torch.allclose(p, torch.tensor([1.0, 0.2, -0.9, 4.0, 1.5]))
    q = torch.tensor([2.0])  # selected but lambda * full / forget > 1: factor capped at 1
    dampen([q], [torch.tensor([3.0])], [torch.tensor([1.0])], alpha=1.0, dampening=10.0)
    assert torch.equal(q, torch.tensor([2.0]))


def test_ssd_changes_exactly_the_selected_weights():
    data, model = toy_data(), linear()
    # index order: one loader over D_r then D_f (40 + 8 rows: no batch straddles the two)
    hp = make_hparams("ssd", {"alpha": 1.0, "dampening": 1.0, "batch_size": 8, "order": "index"})
    before = [p.detach().clone() for p in model.parameters()]

    def imp(batches):  # independent re-implementation: mean over batches of squared grads
        acc = [torch.zeros_like(p) for p in before]
        for x, y in batches:
            gs = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
            acc = [a + g**2 for a, g in zip(acc, gs)]
        return [a / len(batches) for a in acc]

    model.eval()
    f_imp = imp(list(data.forget.loader(8)))
    d_imp = imp(list(data.retain.loader(8)) + list(data.forget.loader(8)))
    ctx = toy_ctx()
    out = ssd(model, data, hp, ctx)
    n_sel = 0
    for p, b, f, d in zip(out.parameters(), before, f_imp, d_imp):
        sel = f > d
        n_sel += int(sel.sum())
        assert torch.equal(p[~sel], b[~sel])
        assert torch.allclose(p[sel], b[sel] * (d[sel] / f[sel]).clamp(max=1), rtol=1e-5)
    assert n_sel > 0 and ctx.extra["selected"] == n_sel


# --- Bad Teacher -------------------------------------------------------------------------


def _js(p_logits, q_logits) -> float:
    p, q = F.softmax(p_logits, 1), F.softmax(q_logits, 1)
    m = (p + q) / 2
    return float(0.5 * (F.kl_div(m.log(), p, reduction="batchmean")
                        + F.kl_div(m.log(), q, reduction="batchmean")))  # fmt: skip


def test_bad_teacher_moves_forget_outputs_towards_incompetent_teacher():
    data, model = toy_data(), mlp_bn()
    rng = torch.get_rng_state()
    bad = reset_teacher(model, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), rng)  # global RNG untouched
    bad2 = reset_teacher(model, torch.Generator().manual_seed(5))
    assert same_params(bad, bad2) and not same_params(bad, model)
    good = copy.deepcopy(model).eval()
    good_sd, bad_sd = copy.deepcopy(good.state_dict()), copy.deepcopy(bad.state_dict())
    x, _ = data.forget.tensors()
    with torch.no_grad():
        js0 = _js(model.eval()(x), bad(x))
    hp = make_hparams("bad_teacher", {"epochs": 5, "lr": 0.01, "batch_size": 8})
    student = run_bad_teacher(model, good, bad, data, hp, toy_ctx())
    with torch.no_grad():
        js1 = _js(student.eval()(x), bad(x))
    assert js1 < 0.5 * js0
    for sd, ref in ((good.state_dict(), good_sd), (bad.state_dict(), bad_sd)):
        assert all(torch.equal(v, ref[k]) for k, v in sd.items())


def test_protocol_context_builds_fresh_models_of_the_runs_architecture():
    """The protocol's context carries the run's architecture (``Context.model_builder``), so
    Bad Teacher's incompetent teacher is a newly constructed network, not a reset copy."""
    from types import SimpleNamespace

    from bench.models.archs import build_model
    from bench.protocol.stages import RunState
    from tests.helpers import tiny_spec

    spec = tiny_spec("bad_teacher", k=16, seed=0)
    bundle = SimpleNamespace(num_classes=4, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.2,) * 3)
    st = SimpleNamespace(spec=spec, env=SimpleNamespace(device=CPU), bundle=bundle, carved=None)
    st.artifacts = {}
    ctx = RunState.context(st, 7, 0)
    teacher = incompetent_teacher(linear(), ctx)
    assert ctx.extra["teacher_fresh"] == 1.0 and not teacher.training
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=torch.Generator().manual_seed(7)))
    torch.manual_seed(seed)
    fresh = build_model(spec.arch, 4, (3, 8, 8), (0.5,) * 3, (0.2,) * 3)
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(),
                                                 fresh.state_dict().values()))  # fmt: skip
    # a context made outside the protocol has no builder: the reset copy, reported
    ctx2 = toy_ctx()
    incompetent_teacher(linear(), ctx2)
    assert ctx2.extra["teacher_fresh"] == 0.0


# --- Amnesiac ----------------------------------------------------------------------------


def test_amnesiac_labels_are_wrong_and_seeded():
    y = torch.arange(2000) % 10
    a = wrong_labels(y, 10, torch.Generator().manual_seed(1))
    b = wrong_labels(y, 10, torch.Generator().manual_seed(1))
    c = wrong_labels(y, 10, torch.Generator().manual_seed(2))
    assert (a != y).all() and torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.tolist()) == set(range(10))  # every class reachable
    data, ctx = toy_data(), toy_ctx()
    amnesiac(linear(), data, make_hparams("amnesiac", {"batch_size": 16}), ctx)
    assert ctx.extra["relabel_changed"] == 1.0 and ctx.steps == 3 * 3  # 48 rows / 16, 3 epochs


def test_add_l1_grad_equals_the_norm_backpropagated():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    with torch.no_grad():
        model[0].weight[0, 0] = 0.0  # |.| at 0: autograd's subgradient is 0
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    (F.cross_entropy(model(x), y) + 0.3 * l1_norm(model)).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    add_l1_grad(model, 0.3)
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=1e-7)
