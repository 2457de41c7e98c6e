"""∇τ (nabla_tau): the alpha and LR schedules, the forget-epoch rule, the ReLU switch-off of the
memory term, L_v refreshes, D_r iterator restarts, the BatchNorm-mode switch, and on the toy
problem: the forget loss is raised to the validation level while D_r accuracy is kept. Also the
notebooks' fine-tuning baseline (nabla_tau_ft) and data layout (``DataSpec.val_from="test"``)
and their use in the nablatau-* suites (parameter-level conformance with the notebooks:
tests/conformance/test_nabla_tau_notebooks.py)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import methods.nabla_tau as nt
import methods.nabla_tau_ft as ft
from bench.core.errors import BenchError
from bench.core.records import record_path
from bench.core.spec import DataSpec, ForgetSpec, RunSpec, canonical_json
from bench.data import View, carve, load_dataset, retain_positions, select_forget
from bench.data.datasets import Locations
from bench.models.train import accuracy
from bench.protocol.stages import execute
from bench.suites.catalog import SUITES
from bench.unlearning.method import METHODS, Context, UnlearnData, Withheld, make_hparams
from tests.helpers import tiny_spec


def _run(setup, k=64, seed=0, **hp):
    """nabla_tau on the shared tiny model; D_v = the synthetic test split (as in the notebooks,
    a held-out split that was never trained on)."""
    env, spec, bundle, carved, model0 = setup
    train = View(bundle.train, carved.train, env.device, "train")
    f = select_forget(train.targets, ForgetSpec("instance", k=k), seed)
    forget = train.subset(f, "forget")
    retain = train.subset(retain_positions(len(carved.train), f), "retain")
    val = View(bundle.test, carved.test, env.device, "val")
    data = UnlearnData(forget, retain, val, bundle.num_classes)
    ctx = Context(
        env.device, seed, torch.Generator().manual_seed(seed), spec.recipe, 4, method="nabla_tau"
    )
    model = METHODS.get("nabla_tau")(
        copy.deepcopy(model0), data, make_hparams("nabla_tau", hp), ctx
    )
    return model, data, ctx


def test_registered_with_forget_retain_val():
    entry = METHODS.entry("nabla_tau")
    assert tuple(entry.meta["needs"]) == ("forget", "retain", "val")
    hp = make_hparams("nabla_tau")
    assert (hp.lr, hp.weight_decay, hp.lr_end_factor, hp.batch_size) == (1e-3, 0.01, 0.1, 256)
    assert (hp.val_every, hp.bn_mode, hp.compute_epochs) == (5, "eval", 6.0)


def test_alpha_schedule_start_middle_end():
    for split, alpha0 in ((0.03, 0.05), (0.15, 0.25), (0.30, 0.50)):
        assert 5 / 3 * split == pytest.approx(alpha0)
    a = nt.alpha_schedule(0.25, 16)
    assert len(a) == 16
    assert a[0] == 0.25 and a[8] == pytest.approx(0.125) and a[15] == pytest.approx(0.25 / 16)
    # the notebooks' recursion alpha <- alpha - alpha0/E after every forget-epoch
    rec, alpha = [], 0.25
    for _ in range(16):
        rec.append(alpha)
        alpha -= 0.25 / 16
    assert a == pytest.approx(rec) and alpha == pytest.approx(0.0, abs=1e-12)


def test_lr_factors_match_torch_linear_lr():
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.1, total_iters=7)
    seen = []
    for _ in range(7):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [1e-3 * f for f in nt.lr_factors(0.1, 7)] == pytest.approx(seen)
    assert nt.lr_factors(0.1, 10)[0] == 1.0 and nt.lr_factors(0.1, 10)[5] == pytest.approx(0.55)


def test_forget_epoch_rule_reproduces_the_cifar_counts():
    # CIFAR 50k, batch 256 (spec 3.2 step 5): 3 % -> 190/6 batches, 15 % -> 167/30, 30 % -> 137/59
    assert nt.forget_epoch_count(190, 6) == 95
    assert nt.forget_epoch_count(167, 30) == 16
    assert nt.forget_epoch_count(137, 59) == 6
    assert nt.forget_epoch_count(1, 10) == 1  # guard: never 0 epochs
    assert nt.forget_epoch_count(190, 6, compute=12.0) == 190  # the fine-tuning baseline's 2x


def test_memory_term_switches_off_when_forget_loss_reaches_val_loss():
    retain = torch.tensor([0.5, 1.5], requires_grad=True)
    # L_f = 1.5 >= L_v = 1.0: ReLU is flat, only the retain term has a gradient
    forget = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = nt.nabla_tau_loss(forget, retain, 1.0, alpha=0.4)
    loss.backward()
    assert torch.equal(forget.grad, torch.zeros(2))
    assert retain.grad == pytest.approx(torch.tensor([0.3, 0.3]))
    assert loss.item() == pytest.approx(0.6 * 1.0)
    # L_f = 0.2 < L_v = 1.0: gradient ascent on each forget loss, d/dl_i = -2 alpha (L_v-L_f)/n
    forget = torch.tensor([0.1, 0.3], requires_grad=True)
    loss = nt.nabla_tau_loss(forget, retain.detach(), 1.0, alpha=0.4)
    loss.backward()
    assert forget.grad == pytest.approx(torch.tensor([-0.32, -0.32]))
    assert loss.item() == pytest.approx(0.4 * 0.64 + 0.6)


def test_switch_off_on_a_model_leaves_only_the_retain_gradient():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    xf, yf = torch.randn(8, 5), torch.randint(0, 3, (8,))
    xr, yr = torch.randn(8, 5), torch.randint(0, 3, (8,))
    ce = nn.functional.cross_entropy
    lf = ce(model(xf), yf, reduction="none")
    lr_ = ce(model(xr), yr, reduction="none")
    nt.nabla_tau_loss(lf, lr_, lf.mean().item() - 0.01, alpha=0.3).backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    (0.7 * ce(model(xr), yr)).backward()
    for g, want in zip(got, [p.grad for p in model.parameters()]):
        assert torch.allclose(g, want, atol=1e-7)


def test_uses_schedule_val_refresh_and_retain_restarts(setup, monkeypatch):
    calls = []
    real = nt.nabla_tau_loss

    def spy(forget_losses, retain_losses, val_loss, alpha):
        calls.append((alpha, val_loss, forget_losses.numel(), retain_losses.numel()))
        return real(forget_losses, retain_losses, val_loss, alpha)

    monkeypatch.setattr(nt, "nabla_tau_loss", spy)
    loaders = []
    real_loader = View.loader

    def count(self, *a, **kw):
        if self.name == "retain":
            loaders.append(len(calls))
        return real_loader(self, *a, **kw)

    monkeypatch.setattr(View, "loader", count)
    # k=64 of 256, batch 32: F = 2, R = 6 batches -> int(6/4*6) = 9 forget-epochs of 2 steps,
    # D_r restarted every floor(6/2) = 3 forget-epochs
    model, data, ctx = _run(setup, k=64, batch_size=32, bn_mode="train")
    alpha0 = 5 / 3 * 64 / 256
    assert ctx.extra["alpha0"] == pytest.approx(alpha0) and ctx.extra["forget_epochs"] == 9
    assert ctx.steps == len(calls) == 18
    alphas = [c[0] for c in calls]
    assert alphas == pytest.approx([a for a in nt.alpha_schedule(alpha0, 9) for _ in range(2)])
    assert all(c[2] == 32 and c[3] == 32 for c in calls)
    vals = [c[1] for c in calls[::2]]  # one per forget-epoch
    assert vals[0] == pytest.approx(ctx.extra["val_loss_start"])
    assert vals[0] == vals[4] and vals[5] == vals[8]  # constant between refreshes ...
    assert vals[4] != vals[5]  # ... recomputed at forget-epoch 5 (the model has changed)
    assert loaders == [0, 6, 12]  # new D_r passes before steps 0, 6, 12 (epochs 0, 3, 6)


def _bn_stats(model):
    return {
        k: v.clone()
        for k, v in model.state_dict().items()
        if "running" in k or "num_batches_tracked" in k
    }


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_bn_mode_freezes_or_updates_running_stats(setup, mode):
    *_, model0 = setup
    before = _bn_stats(model0)
    assert before, "fixture: the tiny model has BatchNorm"
    model, _, ctx = _run(setup, k=32, batch_size=32, forget_epochs=2, bn_mode=mode)
    after = _bn_stats(model)
    same = all(torch.equal(before[k], after[k]) for k in before)
    assert same == (mode == "eval")
    assert not model.training


def test_bad_bn_mode_raises(setup):
    with pytest.raises(BenchError, match="bn_mode"):
        _run(setup, k=16, batch_size=32, bn_mode="frozen")


def test_finite_and_deterministic_with_a_validation_set(setup):
    # what tests/test_methods.py cannot check while it withholds D_v from every method
    quick = METHODS.entry("nabla_tau").meta["quick_hp"]
    m1, *_ = _run(setup, k=16, seed=3, **quick)
    m2, *_ = _run(setup, k=16, seed=3, **quick)
    for (key, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.isfinite(a.float()).all() and torch.equal(a, b), key


@pytest.mark.parametrize("seed", [0, 1])
def test_raises_forget_loss_to_val_level_and_keeps_retain_accuracy(setup, seed):
    # split 25 %, paper lr, split-sweep notebook's train-mode BN, batch 32 on the toy data
    hp = {"batch_size": 32, "bn_mode": "train"}
    model, data, ctx = _run(setup, k=64, seed=seed, **hp)
    x = ctx.extra
    assert x["forget_loss_start"] < 0.05 < 0.3 < x["val_loss_start"]  # memorised D_f
    assert abs(x["forget_loss_end"] - x["val_loss_end"]) < 0.35 * x["val_loss_end"]
    assert accuracy(model, data.retain) >= 95.0
    # the same routine without the memory term (alpha0 = 0, fine-tuning) leaves D_f memorised
    _, _, ctx0 = _run(setup, k=64, seed=seed, alpha0=0.0, **hp)
    assert ctx0.extra["forget_loss_end"] < 0.1


# --- the notebooks' fine-tuning baseline (nabla_tau_ft) --------------------------------------


def test_finetune_baseline_registered_with_the_notebook_settings():
    entry = METHODS.entry("nabla_tau_ft")
    assert tuple(entry.meta["needs"]) == ("forget", "retain") and entry.meta["retain_only"]
    hp = make_hparams("nabla_tau_ft")
    assert (hp.lr, hp.weight_decay, hp.lr_end_factor, hp.batch_size) == (1e-3, 0.01, 0.1, 256)
    assert (hp.bn_mode, hp.augment, hp.compute_epochs, hp.forget_epochs) == (
        "eval",
        "none",
        6.0,
        0,
    )


def test_finetune_epoch_rule_is_the_notebooks_not_twice_the_rounded_count():
    # int(R / F * 6) on the CIFAR counts: 15 % -> 33 forget-epochs, not 2 * 16
    assert ft.finetune_epoch_count(190, 6) == 190
    assert ft.finetune_epoch_count(167, 30) == 33 != 2 * nt.forget_epoch_count(167, 30)
    assert ft.finetune_epoch_count(137, 59) == 13
    assert ft.finetune_epoch_count(1, 10) == 1


def _run_ft(setup, k=64, seed=0, **hp):
    env, spec, bundle, carved, model0 = setup
    train = View(bundle.train, carved.train, env.device, "train")
    f = select_forget(train.targets, ForgetSpec("instance", k=k), seed)
    data = UnlearnData(
        train.subset(f, "forget"),
        train.subset(retain_positions(len(carved.train), f), "retain"),
        Withheld("val", "nabla_tau_ft"),
        bundle.num_classes,
    )
    ctx = Context(
        env.device, seed, torch.Generator().manual_seed(seed), spec.recipe, 4, method="nabla_tau_ft"
    )
    hp = make_hparams("nabla_tau_ft", hp)
    return METHODS.get("nabla_tau_ft")(copy.deepcopy(model0), data, hp, ctx), ctx


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_finetune_baseline_steps_and_forget_forward_only_in_bn_train_mode(setup, mode, monkeypatch):
    calls = []
    real = nt.nabla_tau_loss

    def spy(forget_losses, retain_losses, val_loss, alpha):
        calls.append((alpha, val_loss))
        return real(forget_losses, retain_losses, val_loss, alpha)

    monkeypatch.setattr(nt, "nabla_tau_loss", spy)
    # k=64 of 256, batch 32: F = 2, R = 6 -> int(6 / 2 * 6) = 18 forget-epochs of 2 steps
    _, ctx = _run_ft(setup, batch_size=32, bn_mode=mode)
    assert ctx.extra["forget_epochs"] == 18 and ctx.steps == 36
    assert "val_loss_start" not in ctx.extra  # no D_v, no L_v
    assert calls == ([] if mode == "eval" else [(0.0, 0.0)] * 36)


# --- the notebooks' data layout: D_v = half of the test set ----------------------------------


def test_val_from_is_left_out_of_hashes_while_default():
    assert "val_from" not in canonical_json(DataSpec("digits", val_fraction=0.1))
    spec = RunSpec("nabla_tau", data=DataSpec("digits", val_fraction=0.5, val_from="test"))
    assert '"val_from":"test"' in canonical_json(spec)
    assert spec.run_id != RunSpec("nabla_tau", data=DataSpec("digits", val_fraction=0.5)).run_id
    assert RunSpec.from_dict(spec.to_dict()) == spec


def test_carve_val_from_test_splits_the_test_set_and_keeps_all_of_train(tmp_path):
    bundle = load_dataset("synthetic", Locations(None, tmp_path))
    c = carve(bundle, DataSpec("synthetic", val_fraction=0.5, val_from="test", split_seed=3))
    assert c.train.tolist() == list(range(len(bundle.train)))
    assert c.val_split is bundle.test and c.val_from == "test"
    assert len(c.test) == len(c.val) == len(bundle.test) // 2
    assert sorted(c.test.tolist() + c.val.tolist()) == list(range(len(bundle.test)))
    again = carve(bundle, DataSpec("synthetic", val_fraction=0.5, val_from="test", split_seed=3))
    assert torch.equal(again.val, c.val)
    other = carve(bundle, DataSpec("synthetic", val_fraction=0.5, val_from="test", split_seed=4))
    assert not torch.equal(other.val, c.val)
    # test_subset first, then the split; the default layout is unchanged (val from train)
    sub = carve(bundle, DataSpec("synthetic", val_fraction=0.25, val_from="test", test_subset=40))
    assert (len(sub.test), len(sub.val)) == (30, 10)
    assert set(sub.test.tolist() + sub.val.tolist()) <= set(range(len(bundle.test)))
    old = carve(bundle, DataSpec("synthetic", val_fraction=0.25))
    assert old.val_split is bundle.train and len(old.train) + len(old.val) == len(bundle.train)


def test_carve_val_from_errors(tmp_path):
    bundle = load_dataset("synthetic", Locations(None, tmp_path))
    with pytest.raises(BenchError, match="val_fraction"):
        carve(bundle, DataSpec("synthetic", val_from="test"))
    with pytest.raises(BenchError, match="val_from"):
        carve(bundle, DataSpec("synthetic", val_fraction=0.5, val_from="holdout"))


def test_plan_estimates_count_the_test_half_not_a_smaller_train():
    from bench.protocol.plan import _sizes

    spec = RunSpec("nabla_tau", data=DataSpec("cifar10", val_fraction=0.5, val_from="test"))
    assert _sizes(spec) == (50_000, 5_000)


def test_protocol_hands_the_held_out_test_half_to_the_method(env, monkeypatch):
    seen = {}
    real = nt.unlearning_loop

    def spy(model, forget, retain, val, *a):
        seen["val"] = val
        return real(model, forget, retain, val, *a)

    monkeypatch.setattr(nt, "unlearning_loop", spy)
    data = DataSpec("synthetic", val_fraction=0.5, val_from="test")
    spec = tiny_spec("nabla_tau", k=16, data=data)
    assert execute(spec, env) == "done"
    bundle = load_dataset("synthetic", env.locations)
    carved = carve(bundle, data)
    val = seen["val"]
    assert val.split is bundle.test and torch.equal(val.indices, carved.val)
    meta = json.loads(record_path(env.out, spec.run_id).read_text().splitlines()[0])
    assert meta["n_test"] == len(carved.test) == 64


def test_nablatau_suites_use_the_notebooks_baseline_and_layout():
    for name, seed in (("digits", 0), ("cifar10", 42), ("cifar100", 44)):
        grid = SUITES.get(f"nablatau-{name}")
        assert grid.methods == ("nabla_tau", "nabla_tau_ft", "retrain")
        assert grid.data == DataSpec(name, val_fraction=0.5, val_from="test", split_seed=seed)
