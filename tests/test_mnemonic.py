"""Mnemonic-code unlearning (bench/unlearning/mnemonic.py, methods/mnemonic.py): codes and mixing in
pretraining, the Fisher ratio and perturbation rules on hand-computed cases, the sign choice,
the single weight update, and class removal on the toy data."""

from __future__ import annotations

import copy
import dataclasses
import os

import pytest
import torch
from torch import nn

from bench.core.errors import BenchError
from bench.core.spec import ForgetSpec
from bench.data import View, carve, load_dataset
from bench.models.train import train
from bench.protocol.stages import Env, pretrain_key, pretrained_with_artifacts, run
from bench.unlearning import mnemonic as mn
from bench.unlearning.method import METHODS, Context, UnlearnData, Withheld, make_hparams
from tests.helpers import TINY_RECIPE, tiny_spec

CLASS0 = ForgetSpec("class", classes=(0,))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The synthetic data pretrained with mnemonic codes (quick_hp: t_mix 0.3)."""
    # module fixtures run before the function-scoped thread setting of conftest
    torch.set_num_threads(int(os.environ.get("BENCH_TEST_THREADS", "2")))
    env = Env(out=tmp_path_factory.mktemp("out"), cache=tmp_path_factory.mktemp("cache"))
    spec = tiny_spec("mnemonic", forget=CLASS0)
    bundle = load_dataset("synthetic", env.locations)
    carved = carve(bundle, spec.data)
    model, info, artifacts = pretrained_with_artifacts(spec, carved, env)
    return env, spec, bundle, carved, model, info, artifacts


def _ctx(artifacts, seed=0, num_classes=4):
    return Context(
        torch.device("cpu"),
        seed,
        torch.Generator().manual_seed(seed),
        TINY_RECIPE,
        num_classes,
        method="mnemonic",
        pretrain_artifacts=dict(artifacts),
    )


def _data(bundle, carved, cls=0):
    train_view = View(bundle.train, carved.train, torch.device("cpu"), "train")
    y = bundle.train.targets.index_select(0, carved.train)
    forget = train_view.subset(torch.nonzero(y == cls).flatten(), "forget")
    return UnlearnData(forget, Withheld("retain", "mnemonic"), Withheld("val", "mnemonic"), 4)


# ---------------------------------------------------------------------------------------
# pretraining: codes, cache key, mixing


def test_codes_are_seeded_stored_with_the_checkpoint_and_keyed(toy, tmp_path):
    env, spec, bundle, carved, model, info, artifacts = toy
    codes = artifacts[mn.CODES]
    assert codes.shape == (4, 1, 8, 8) and codes.dtype == torch.float32
    assert torch.equal(codes, mn.make_codes(4, (1, 8, 8), spec.train_seed))  # seeded
    assert codes.min() >= 0 and codes.max() < 1  # U[0, 1) pixels by default
    assert not torch.equal(codes, mn.make_codes(4, (1, 8, 8), spec.train_seed + 1))
    assert artifacts[mn.SPECIAL] == "mnemonic:t_mix=0.3,space=pixel,v=1"
    # stored in the checkpoint blob and handed back from the cache
    blob = torch.load(env.cache / "models" / f"pretrain-{info['key']}.pt", weights_only=True)
    assert torch.equal(blob["artifacts"][mn.CODES], codes)
    _, info2, again = pretrained_with_artifacts(spec, carved, env)
    assert info2["cached"] and torch.equal(again[mn.CODES], codes)
    # the variant is part of the key: ordinary methods share theirs; t_mix / space change it
    n = len(carved.train)
    plain = pretrain_key(tiny_spec("neggrad", forget=CLASS0), n)
    assert plain == pretrain_key(tiny_spec("retrain", forget=CLASS0), n)
    keys = {
        plain,
        pretrain_key(spec, n),
        pretrain_key(tiny_spec("mnemonic", forget=CLASS0, hp={"t_mix": 0.5}), n),
        pretrain_key(tiny_spec("mnemonic", forget=CLASS0, hp={"code_space": "input"}), n),
    }
    assert len(keys) == 4
    # ordinary pretraining stores no artifacts
    env2 = Env(out=tmp_path / "o", cache=tmp_path / "c")
    m2, info3, art2 = pretrained_with_artifacts(tiny_spec("neggrad", forget=CLASS0), carved, env2)
    assert art2 == {}
    blob2 = torch.load(env2.cache / "models" / f"pretrain-{info3['key']}.pt", weights_only=True)
    assert "artifacts" not in blob2


def test_input_space_codes_are_uniform_after_the_models_normalisation():
    codes = mn.make_codes(2, (3, 4, 4), 0, "input", (0.5, 0.4, 0.3), (0.2, 0.1, 0.25))
    u = (codes - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.1, 0.25]
    ).view(1, 3, 1, 1)
    assert torch.allclose(u, mn.make_codes(2, (3, 4, 4), 0, "pixel"), atol=1e-6)
    with pytest.raises(BenchError, match="t_mix"):
        mn.special_name(1.5)
    assert mn.parse_special(mn.special_name(0.8, "input")) == {
        "t_mix": 0.8,
        "space": "input",
        "v": 1,
    }


def test_mixing_replaces_about_t_mix_of_samples_by_their_class_code():
    codes = torch.rand(3, 1, 2, 2, generator=torch.Generator().manual_seed(5)) + 10  # distinct
    mixer = mn.CodeMixer(codes, 0.3, seed=0)
    y = torch.arange(20_000) % 3
    x = torch.rand(20_000, 1, 2, 2, generator=torch.Generator().manual_seed(6))
    y0 = y.clone()
    out = mixer(x, y)
    replaced = (out != x).flatten(1).all(1)
    assert torch.equal(y, y0)  # labels unchanged
    assert torch.equal(out[replaced], codes[y[replaced]])  # by the sample's own class's code
    assert torch.equal(out[~replaced], x[~replaced])
    assert abs(replaced.float().mean().item() - 0.3) < 0.015  # about t_mix (sd 0.003)
    assert mixer.replaced == int(replaced.sum()) and mixer.seen == 20_000
    again = mn.CodeMixer(codes, 0.3, seed=0)(x, y)
    assert torch.equal(again, out)  # seeded
    assert torch.equal(mn.CodeMixer(codes, 0.0, 0)(x, y), x)
    assert torch.equal(mn.CodeMixer(codes, 1.0, 0)(x, y), codes[y])


def test_train_applies_the_batch_hook_to_every_batch(toy):
    bundle = toy[2]
    view = View(bundle.train, torch.arange(64), torch.device("cpu"), "train")
    seen = []

    def hook(x, y):
        seen.append(y.clone())
        return x

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    steps = train(model, view, dataclasses.replace(TINY_RECIPE, epochs=2), 0, batch_hook=hook)
    assert steps == len(seen) == 4 and sum(len(s) for s in seen) == 128


# ---------------------------------------------------------------------------------------
# the one-shot step on constructed models


class Neg(nn.Module):
    def forward(self, x):
        return -x


def _linear(w, negate=False):
    lin = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
    return nn.Sequential(nn.Flatten(), lin, *([Neg()] if negate else []))


CODES3 = torch.eye(3).view(3, 1, 1, 3)  # code c = e_c


def test_fishers_from_codes_hand_computed():
    # W = 0: p = 1/3 everywhere; grad of CE(W e_c, c) wrt W = (p - e_c) e_c^T (column c)
    f_f, f_r = mn.code_fishers(_linear(torch.zeros(3, 3)), CODES3, [0])
    (ff,), (fr,) = f_f.values(), f_r.values()
    eps = 1e-16
    want_f = torch.full((3, 3), eps)
    want_f[:, 0] = torch.tensor([4 / 9, 1 / 9, 1 / 9]) + eps
    want_r = torch.full((3, 3), eps / 2)  # (1e-16 + nothing) / |C_R|
    want_r[:, 1] = (torch.tensor([1 / 9, 4 / 9, 1 / 9]) + eps) / 2
    want_r[:, 2] = (torch.tensor([1 / 9, 1 / 9, 4 / 9]) + eps) / 2
    assert torch.allclose(ff, want_f, rtol=1e-6, atol=0)
    assert torch.allclose(fr, want_r, rtol=1e-6, atol=0)


def test_amplitude_nan_inf_rules_and_alpha():
    f_f = torch.tensor([0.0, 2.0, float("nan"), 4.0, 3.0])
    f_r = torch.tensor([1.0, 1.0, 1.0, 0.0, 6.0])
    # log ratio [-inf, log 2, nan, +inf, log 0.5] -> nan: 0, +-inf: max finite (log 2)
    eta = mn.amplitude(f_f, f_r)
    assert torch.allclose(eta, torch.tensor([2.0, 2.0, 1.0, 2.0, 0.5], dtype=torch.float64))
    assert mn.alpha(eta, lambda1=1.0, lambda2=1.0) == 0.5  # lambda2 / max eta
    assert mn.alpha(eta, lambda1=0.1, lambda2=1.0) == 0.1  # capped by lambda1
    d = mn.perturbation({"w": f_f}, {"w": f_r}, 1.0, 1.0)["w"]
    assert torch.allclose(d, 0.5 * eta)
    assert d.max() == 1.0  # lambda2 bounds the largest change of a tensor


@pytest.mark.parametrize(
    "negate, sign",
    [(False, -1.0), (True, 1.0)],
    ids=["minus-forgets", "plus-forgets"],
)
def test_both_signs_are_tried_and_the_better_kept(negate, sign):
    # W = I (or -I after a negation): the codes are classified correctly. The forget class's
    # column gets d = [2, .5, .5] (eta ratio 4:1:1, lambda2 = 2); only one sign flips code 0.
    w0 = -torch.eye(3) if negate else torch.eye(3)
    model = _linear(w0, negate)
    assert mn.code_accuracies(model, CODES3, [0]) == (1.0, 1.0)
    f_f, f_r = mn.code_fishers(model, CODES3, [0])
    (d,) = mn.perturbation(f_f, f_r, lambda1=1.0, lambda2=2.0).values()
    assert torch.allclose(d[:, 0].float(), torch.tensor([2.0, 0.5, 0.5]), rtol=1e-5)
    assert d[:, 1:].abs().max() < 1e-12
    info = mn.one_shot_forget(model, CODES3, [0], lambda1=1.0, lambda2=2.0)
    assert info["sign"] == sign
    assert (info["code_forget_acc"], info["code_remain_acc"]) == (0.0, 1.0)
    assert {info["code_score_plus"], info["code_score_minus"]} == {2.0, 1.0}
    assert torch.equal(model[1].weight, (w0.double() + sign * d).float())


def test_ties_keep_the_minus_candidate():
    model = _linear(torch.eye(3))
    f_f, f_r = mn.code_fishers(model, CODES3, [0])
    (d,) = mn.perturbation(f_f, f_r, 1.0, 1e-3).values()
    info = mn.one_shot_forget(model, CODES3, [0], 1.0, 1e-3)  # too small to flip anything
    assert info["code_score_plus"] == info["code_score_minus"] == 1.0
    assert info["sign"] == -1.0
    assert torch.equal(model[1].weight, (torch.eye(3).double() - d).float())


# ---------------------------------------------------------------------------------------
# the method


def test_one_shot_step_changes_the_weights_exactly_once(toy, monkeypatch):
    env, spec, bundle, carved, model0, info, artifacts = toy
    hp = make_hparams("mnemonic", spec.hparams_dict)
    codes = artifacts[mn.CODES]
    f_f, f_r = mn.code_fishers(copy.deepcopy(model0), codes, [0])
    delta = mn.perturbation(f_f, f_r, hp.lambda1, hp.lambda2)

    def no_optimizer(*a, **k):
        raise AssertionError("the one-shot step must not build an optimizer")

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", no_optimizer)
    ctx = _ctx(artifacts)
    model = METHODS.get("mnemonic")(copy.deepcopy(model0), _data(bundle, carved), hp, ctx)
    sign = ctx.extra["sign"]
    assert sign in (1.0, -1.0) and ctx.steps == 1 and ctx.extra["one_shot_seconds"] > 0
    before, after = dict(model0.named_parameters()), dict(model.named_parameters())
    for name, d in delta.items():
        assert torch.equal(after[name], (before[name].double() + sign * d).float()), name
    for name, buf in model0.named_buffers():  # BN statistics untouched
        assert torch.equal(dict(model.named_buffers())[name], buf)


def test_reads_only_forget_labels_and_requires_one_class_and_codes(toy):
    env, spec, bundle, carved, model0, info, artifacts = toy
    hp = make_hparams("mnemonic", spec.hparams_dict)

    class LabelsOnly:  # any access to images (loader, tensors, ...) raises AttributeError
        def __init__(self, targets):
            self.targets = targets

    fn = METHODS.get("mnemonic")
    data = UnlearnData(LabelsOnly(torch.full((5,), 2)), Withheld("r", "m"), Withheld("v", "m"), 4)
    fn(copy.deepcopy(model0), data, hp, _ctx(artifacts))
    data = dataclasses.replace(data, forget=LabelsOnly(torch.tensor([0, 1])))
    with pytest.raises(BenchError, match="exactly one class"):
        fn(copy.deepcopy(model0), data, hp, _ctx(artifacts))
    with pytest.raises(BenchError, match="pretrained with mnemonic codes"):
        fn(copy.deepcopy(model0), _data(bundle, carved), hp, _ctx({}))
    other = make_hparams("mnemonic", {**spec.hparams_dict, "t_mix": 0.5})
    with pytest.raises(BenchError, match="pretrained as"):
        fn(copy.deepcopy(model0), _data(bundle, carved), other, _ctx(artifacts))


def test_forgets_class_zero_and_keeps_the_others_on_the_toy(toy):
    env, spec, bundle, carved, model0, info, artifacts = toy
    rows = run(spec, env)  # the protocol end to end, pretraining from the cache
    meta = rows[0]
    assert meta["pretrain"]["cached"] and meta["special_pretraining"] == artifacts[mn.SPECIAL]
    got = {(r["stage"], r["split"], r["metric"]): r["value"] for r in rows[1:-1]}
    assert (
        got[("before", "forget", "accuracy")] >= 90 and got[("before", "retain", "accuracy")] >= 90
    )
    assert got[("after", "forget", "accuracy")] <= 5  # D_f = every training image of class 0
    assert got[("after", "retain", "accuracy")] >= 80
    assert got[("unlearn", "-", "steps")] == 1 and ("unlearn", "-", "one_shot_seconds") in got
    # on held-out test images: class 0 near 0, the other classes stay high
    hp = make_hparams("mnemonic", spec.hparams_dict)
    model = METHODS.get("mnemonic")(
        copy.deepcopy(model0), _data(bundle, carved), hp, _ctx(artifacts)
    )
    x, y = View(bundle.test, carved.test, torch.device("cpu"), "test").tensors()
    with torch.no_grad():
        pred0, pred = model0(x).argmax(1), model(x).argmax(1)
    acc = [float((pred[y == c] == c).float().mean()) for c in range(4)]
    acc0 = [float((pred0[y == c] == c).float().mean()) for c in range(4)]
    assert acc[0] <= 0.1 < acc0[0] - 0.4
    assert sum(acc[1:]) / 3 >= 0.7 and sum(acc[1:]) / 3 >= sum(acc0[1:]) / 3 - 0.1
