"""The L2UL family (neggrad, adv_only, mas_only, adv_mas) and the objective switch shared with
random_labels and finetune: stop rules, relabeling, the importance penalty, continual requests,
bad combinations, and the l2ul suites."""

from __future__ import annotations

import json

import pytest
import torch

from bench.core.errors import BenchError
from bench.core.records import record_path
from bench.models.train import accuracy
from bench.protocol.stages import execute
from bench.suites.catalog import SUITES
from bench.unlearning.importance import mas_importance, normalize_importance
from bench.unlearning.loops import other_labels
from bench.unlearning.method import make_hparams
from tests.helpers import tiny_spec
from tests.test_methods import _call

L2UL = ("neggrad", "adv_only", "mas_only", "adv_mas")
FAMILY = (*L2UL, "random_labels", "finetune")


def _with_hp(monkeypatch, name, **hp):
    """Extra hyperparameters for ``_call`` (it reads tests.helpers.FAST_HP via tiny_spec)."""
    import tests.helpers as helpers

    monkeypatch.setitem(helpers.FAST_HP, name, {**helpers.FAST_HP.get(name, {}), **hp})


@pytest.mark.parametrize("name", L2UL)
def test_misclassify_ends_at_zero_or_records_cap(name, setup):
    model, forget, _, ctx, _ = _call(name, setup, seed=1)
    acc = accuracy(model, forget)
    assert acc == 0.0 or ctx.cap_hit
    assert ctx.steps > 0 and ctx.extra["epochs"] >= 1
    assert ctx.extra["forget_success"] == pytest.approx(100.0 - acc)
    if name.startswith("adv"):
        assert ctx.extra["n_adversarial"] == 16 * make_hparams(name, _fast(name)).n_adv
        assert 0.0 <= ctx.extra["adv_success"] <= 100.0


def test_adversarial_success_counts_target_hits_in_eval_mode():
    from torch import nn

    from bench.unlearning.l2ul import adversarial_success

    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3, bias=False), nn.BatchNorm1d(3))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(3, 2))  # logits (x0, x1, 0)
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 2, 1])  # the last one misses its target
    model.train()
    assert adversarial_success(model, x, y) == 75.0
    assert adversarial_success(model, x, y, batch=3) == 75.0
    assert model.training and model[2].num_batches_tracked == 0  # eval inside, mode restored
    assert adversarial_success(model, x[:0], y[:0]) == 100.0


def _fast(name):
    import tests.helpers as helpers

    return helpers.fast_hp(name)


@pytest.mark.parametrize("name", FAMILY)
def test_relabel_predicts_every_instance_as_its_new_label(name, setup, monkeypatch):
    extra = {"epochs": 20} if name == "finetune" else {}
    _with_hp(monkeypatch, name, objective="relabel", **extra)
    seed = 2
    model, forget, _, ctx, _ = _call(name, setup, seed=seed)
    y = forget.targets
    y_star = other_labels(y, 4, torch.Generator().manual_seed(seed))  # the method's first draw
    assert (y_star != y).all()
    x, _ = forget.tensors()
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    success = 100.0 * (pred == y_star).float().mean().item()
    assert ctx.extra["forget_success"] == pytest.approx(success)
    if name == "finetune":  # fixed epochs, no stop rule: D_f must have moved towards y*
        assert success >= 50
    else:
        assert not ctx.cap_hit, f"{name}: relabel hit the epoch cap"
        assert torch.equal(pred, y_star)


def test_relabel_is_deterministic_and_differs_from_misclassify(setup, monkeypatch):
    a, *_ = _call("adv_mas", setup, seed=4)
    _with_hp(monkeypatch, "adv_mas", objective="relabel")
    b, *_ = _call("adv_mas", setup, seed=4)
    c, *_ = _call("adv_mas", setup, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sb[k], sc[k]) for k in sb)
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)


def _weighted_distance(model, model0, omega_hat):
    p0 = dict(model0.named_parameters())
    return sum(
        ((1 - omega_hat[n]) * (p.detach() - p0[n].detach()).pow(2)).sum().item()
        for n, p in model.named_parameters()
    )


def test_importance_penalty_holds_unimportant_weights(setup, monkeypatch):
    *_, model0 = setup
    _, forget, *_ = _call("neggrad", setup, seed=0)
    omega_hat = normalize_importance(mas_importance(model0, forget, 32))
    dist = {}
    for lam in (0.0, 100.0):  # lr 0.01 * lam 100 = 1: SGD stays stable on the quadratic
        _with_hp(monkeypatch, "adv_mas", lam=lam, max_epochs=5)
        model, _, _, ctx, _ = _call("adv_mas", setup, seed=0)
        assert ctx.steps > 0
        dist[lam] = _weighted_distance(model, model0, omega_hat)
    assert dist[100.0] < 0.5 * dist[0.0], dist


def test_adv_checks_after_every_step(setup, monkeypatch):
    # one epoch = ceil(k * n_adv / adv_batch) steps; with adv_batch 16 that is 4 steps per
    # epoch, and the run may stop in the middle of one
    _with_hp(monkeypatch, "adv_only", adv_batch=16)
    model, forget, _, ctx, _ = _call("adv_only", setup, seed=0)
    assert not ctx.cap_hit and accuracy(model, forget) == 0.0
    assert (ctx.extra["epochs"] - 1) * 4 < ctx.steps <= ctx.extra["epochs"] * 4


def test_continual_adv_mas_keeps_earlier_requests_forgotten(env):
    spec = tiny_spec("adv_mas", k=8, scenario="continual", requests=3)
    assert execute(spec, env) == "done"
    lines = [json.loads(x) for x in record_path(env.out, spec.run_id).read_text().splitlines()]
    rows = [r for r in lines if r.get("type") == "metric"]
    after = {
        (r["request"], r["split"]): r["value"]
        for r in rows
        if r["stage"] == "after" and r["metric"] == "accuracy"
    }
    caps = {r["request"]: r["value"] for r in rows if r["metric"] == "cap_hit"}
    assert sorted(caps) == [1, 2, 3]
    for r in (1, 2, 3):
        assert after[(r, "forget_request")] == 0.0 or caps[r] == 1.0
    before = next(r["value"] for r in rows if r["stage"] == "before" and r["split"] == "forget")
    assert before >= 75
    # the union of all 24 forgotten instances stays low (at most 6 relearned)
    assert after[(3, "forget")] <= 25.0


@pytest.mark.parametrize("name", ("adv_only", "adv_mas"))
def test_relabel_with_first10_targets_is_a_clear_error(name, setup, monkeypatch):
    _with_hp(monkeypatch, name, objective="relabel", target_label_range="first10")
    with pytest.raises(BenchError, match="target_label_range='all'"):
        _call(name, setup)


@pytest.mark.parametrize("name", FAMILY)
def test_unknown_objective_is_a_clear_error(name, setup, monkeypatch):
    _with_hp(monkeypatch, name, objective="forget-harder")
    with pytest.raises(BenchError, match="misclassify, relabel"):
        _call(name, setup)


@pytest.mark.parametrize(
    "suite",
    [
        "l2ul-digits",
        "l2ul-cifar10",
        "l2ul-cifar100",
        "l2ul-imagenet",
        "l2ul-digits-continual",
        "l2ul-cifar10-continual",
    ],
)
def test_l2ul_suites_expand(suite):
    specs = SUITES.get(suite).expand()  # validates every hyperparameter override
    assert specs and {s.method for s in specs} >= set(FAMILY)
    assert len({s.train_seed for s in specs}) == 1  # shared pretraining
    if suite.endswith("continual"):
        assert all(s.scenario == "continual" and s.requests == 5 for s in specs)
    if suite == "l2ul-digits":
        assert len(specs) == 7 * 4 * 3
        assert {s.forget.k for s in specs} == {8, 32, 64, 128}


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_bn_keeps_running_statistics(freeze, setup, monkeypatch):
    _with_hp(monkeypatch, "neggrad", freeze_bn=freeze)
    model0 = setup[4]
    before = {k: v.clone() for k, v in model0.state_dict().items() if "running" in k}
    model, forget, _, ctx, _ = _call("neggrad", setup, seed=1)
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    same = all(torch.equal(before[k], after[k]) for k in before)
    assert same == freeze
    assert accuracy(model, forget) == 0.0 or ctx.cap_hit


@pytest.mark.parametrize("name", L2UL)
def test_freeze_bn_holds_on_every_update_step(name, setup, monkeypatch):
    """BatchNorm stays in eval mode in every forward pass that trains (grad enabled, on the
    model itself), not only in the first step of each epoch: the stop check's eval/train
    switch between steps must not put it back in train mode."""
    from torch import nn

    # several steps per epoch (4 adversarial batches; 2 forget batches), so that the check
    # after a step comes before the next step of the same epoch
    extra = {"adv_batch": 16} if name.startswith("adv") else {}
    _with_hp(monkeypatch, name, freeze_bn=True, max_epochs=3, forget_batch=8, **extra)
    model0 = setup[4]
    bns = [m for m in model0.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns, "the tiny model must have BatchNorm for this test to mean anything"
    seen: list[bool] = []
    targets = {id(m) for m in bns}

    def hook(module, _inputs):
        # the MAS importance runs on a deep copy (which carries the hook): count the model's own
        if id(module) in targets and torch.is_grad_enabled():
            seen.append(module.training)

    import bench.unlearning.l2ul as l2ul

    real_unlearn = l2ul.unlearn

    def tracked(model, *args, **kwargs):
        nonlocal targets
        targets = {id(m) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        for m in model.modules():
            if id(m) in targets:
                m.register_forward_pre_hook(hook)
        return real_unlearn(model, *args, **kwargs)

    monkeypatch.setattr(l2ul, "unlearn", tracked)
    for module in ("methods.neggrad", "methods.adv_only", "methods.mas_only", "methods.adv_mas"):
        monkeypatch.setattr(f"{module}.unlearn", tracked)
    _, _, _, ctx, _ = _call(name, setup, seed=1)
    assert ctx.steps >= 2 and seen
    assert not any(seen), f"BatchNorm in train mode in {sum(seen)} of {len(seen)} passes"


def test_progress_trace_ends_at_the_final_forget_accuracy(env):
    spec = tiny_spec("neggrad", k=16, seed=1)
    assert execute(spec, env) == "done"
    rows = [json.loads(x) for x in record_path(env.out, spec.run_id).read_text().splitlines()]
    trace = [r for r in rows if r.get("stage") == "trace" and r["metric"] == "objective_unmet"]
    after = next(
        r["value"]
        for r in rows
        if r.get("stage") == "after" and r["split"] == "forget" and r["metric"] == "accuracy"
    )
    steps = next(r["value"] for r in rows if r.get("metric") == "steps")
    assert trace
    assert trace[0]["step"] == 0 and trace[0]["value"] == 100.0  # the pretrained model fits D_f
    assert trace[-1]["step"] == steps and trace[-1]["value"] == pytest.approx(after)
    assert [r["step"] for r in trace] == sorted(r["step"] for r in trace)
