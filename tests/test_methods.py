"""Every registered method, parametrized over the registry: a new method is tested the moment
it is registered."""

from __future__ import annotations

import copy
import dataclasses
import pkgutil

import pytest
import torch

import methods as methods_pkg
from bench.core.spec import ForgetSpec
from bench.data import View, retain_positions, select_forget
from bench.models.train import accuracy
from bench.unlearning.method import (
    METHODS,
    Context,
    UnlearnData,
    Withheld,
    make_hparams,
    method_needs,
    method_special_pretraining,
)
from tests.helpers import fast_hp, tiny_spec

ALL = METHODS.list()
# methods whose purpose is to lower D_f accuracy on instances the model memorised; methods
# registered with ``retain_only`` (finetune, CF-k, EU-k, Fisher forgetting) aim at the
# retrained model through D_r alone, and on the toy data retraining keeps D_f accuracy too;
# ``weak_unlearning`` ones (nabla_tau) aim at unseen-data loss on D_f, not at misclassifying it
FORGETTING = [
    m
    for m in ALL
    if not any(
        METHODS.entry(m).meta.get(flag) for flag in ("exact", "retain_only", "weak_unlearning")
    )
]


def test_every_method_file_registers_a_method():
    files = {
        m.name for m in pkgutil.iter_modules(methods_pkg.__path__) if not m.name.startswith("_")
    }
    assert set(methods_pkg._MODULES) == files  # discovered, nothing to list by hand
    registered_modules = {
        METHODS.get(n).__module__.split(".")[-1]
        for n in ALL
        if METHODS.get(n).__module__.startswith("methods.")
    }
    assert files <= registered_modules


@pytest.mark.parametrize("name", ALL)
def test_hparams_are_frozen_dataclasses_with_defaults(name):
    hp = make_hparams(name)
    assert dataclasses.is_dataclass(hp) and type(hp).__dataclass_params__.frozen
    assert set(method_needs(name, hp)) <= {"forget", "retain", "val"}
    assert "forget" in method_needs(name, hp)


def _call(name, setup, seed=0, k=16, spy=None, trained_on=None):
    env, spec, bundle, carved, model0 = setup
    # class-removal-only methods (meta forget_kinds=("class",)) get class 0 as forget set;
    # methods with a special pretraining get their own pretrained model and its artifacts
    kinds = METHODS.entry(name).meta.get("forget_kinds", ("instance",))
    forget_spec = (
        ForgetSpec("instance", k=k) if "instance" in kinds else ForgetSpec("class", classes=(0,))
    )
    spec = tiny_spec(name, k=k, seed=seed, forget=forget_spec)
    hp = make_hparams(name, spec.hparams_dict)
    needs = method_needs(name, hp)
    artifacts = {}
    if method_special_pretraining(name, hp):
        from bench.protocol.stages import pretrained_with_artifacts

        model0, _, artifacts = pretrained_with_artifacts(spec, carved, env)
    targets = bundle.train.targets.index_select(0, carved.train)
    f = select_forget(targets, forget_spec, seed)
    train = View(bundle.train, carved.train, env.device, "train")
    forget = train.subset(f, "forget")
    retain = train.subset(retain_positions(len(carved.train), f), "retain")
    data = UnlearnData(
        forget,
        retain if "retain" in needs else Withheld("retain", name),
        # the synthetic data has no validation split: its test split stands in
        View(bundle.test, carved.test, env.device, "val")
        if "val" in needs
        else Withheld("val", name),
        bundle.num_classes,
    )
    if spy is not None:
        data = spy(data)

    def trainer(view):
        from bench.models.train import fresh_model
        from bench.models.train import train as train_fn

        if trained_on is not None:
            trained_on.append(view)
        m = fresh_model(bundle, spec.arch, 0)
        return m, train_fn(m, view, spec.recipe, 0)

    ctx = Context(
        env.device,
        seed,
        torch.Generator().manual_seed(seed),
        spec.recipe,
        bundle.num_classes,
        method=name,
        trainer=trainer,
        pretrain_artifacts=artifacts,
    )
    torch.manual_seed(seed)
    model = METHODS.get(name)(copy.deepcopy(model0), data, hp, ctx)
    return model, forget, retain, ctx, model0


@pytest.mark.parametrize("name", ALL)
def test_method_gives_finite_model_and_is_deterministic(name, setup):
    m1, *_ = _call(name, setup, seed=3)
    m2, *_ = _call(name, setup, seed=3)
    s1, s2 = m1.state_dict(), m2.state_dict()
    for key in s1:
        assert torch.isfinite(s1[key].float()).all(), f"{name}: non-finite {key}"
        assert torch.equal(s1[key], s2[key]), f"{name}: not deterministic under a seed ({key})"


@pytest.mark.parametrize("name", FORGETTING)
def test_forgetting_methods_lower_forget_accuracy(name, setup):
    model, forget, retain, ctx, model0 = _call(name, setup, seed=0)
    before, after = accuracy(model0, forget), accuracy(model, forget)
    assert before >= 75, "fixture: the pretrained model should fit its training points"
    assert after < before - 25, f"{name}: D_f accuracy {before:.1f} -> {after:.1f}"
    assert ctx.steps > 0 or METHODS.entry(name).meta.get("one_shot")


@pytest.mark.parametrize("name", ALL)
def test_methods_without_retain_access_never_see_retain(name, setup):
    hp = make_hparams(name, fast_hp(name))
    if "retain" in method_needs(name, hp):
        pytest.skip("declares retain access")
    seen = []

    def spy(data):
        class Spy(Withheld):
            def __getattr__(self, item):
                seen.append(item)
                return super().__getattr__(item)

        assert isinstance(data.retain, Withheld)
        return dataclasses.replace(data, retain=Spy("retain", name))

    _call(name, setup, spy=spy)
    assert seen == [], f"{name} touched D_r: {seen}"


def test_withheld_data_raises_with_fix():
    w = Withheld("retain", "mymethod")
    assert not w
    with pytest.raises(PermissionError, match="needs="):
        w.loader(32)
    with pytest.raises(PermissionError):
        len(w)


def test_retrain_trains_from_scratch_on_retain_only(setup):
    trained_on = []
    model, forget, retain, ctx, _ = _call("retrain", setup, trained_on=trained_on)
    assert len(trained_on) == 1 and torch.equal(trained_on[0].indices, retain.indices)
    assert not set(forget.indices.tolist()) & set(trained_on[0].indices.tolist())
    assert ctx.steps > 0
    *_, model0 = setup
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), model0.state_dict().values())
    )


def test_unknown_hparam_suggests_field():
    from bench.core.errors import BenchError

    with pytest.raises(BenchError, match="max_epochs"):
        make_hparams("neggrad", {"max_epoch": 3})
    assert make_hparams("neggrad", {"lr": "0.5"}).lr == 0.5
    assert make_hparams("random_labels", {"use_retain": "true"}).use_retain is True


def test_random_labels_use_retain_declares_retain():
    assert method_needs("random_labels", make_hparams("random_labels")) == ("forget",)
    hp = make_hparams("random_labels", {"use_retain": True})
    assert "retain" in method_needs("random_labels", hp)
