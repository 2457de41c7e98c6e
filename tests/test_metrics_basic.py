"""UA / RA / TA, per-class accuracy, relearn time and the oracle pool, on constructed cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.data.splits import TensorSplit, View
from bench.metrics import METRICS, EvalInput, evaluate
from bench.metrics.basic import per_class, relearn_epochs


def _view(y, name, x=None):
    y = torch.as_tensor(y)
    x = torch.zeros(len(y), 1, 2, 2) if x is None else x
    return View(TensorSplit(x, y), torch.arange(len(y)), torch.device("cpu"), name)


def _ev(**splits):
    """An EvalInput whose logits per split are given: split=(logits, labels)."""
    views = {s: _view(y, s) for s, (_, y) in splits.items()}
    ev = EvalInput(model=nn.Identity(), views=views, num_classes=3)
    ev._logits.update({s: torch.as_tensor(z, dtype=torch.float32) for s, (z, _) in splits.items()})
    return ev


ONE_HOT = torch.eye(3) * 5  # row c predicts class c


def test_ua_ra_ta_known_answers():
    ev = _ev(
        forget=(ONE_HOT[[0, 1, 2, 0]], [0, 2, 2, 1]),  # 2 of 4 right -> UA 50
        retain=(ONE_HOT[[0, 1, 2]], [0, 1, 2]),  # RA 100
        test=(ONE_HOT[[0, 0, 0, 0, 0]], [0, 1, 1, 1, 1]),  # TA 20
    )
    got = {m: v for _, m, v in evaluate_rows(ev, ("ua", "ra", "ta"))}
    assert got == pytest.approx({"ua": 50.0, "ra": 100.0, "ta": 20.0})
    for name in ("ua", "ra", "ta"):
        assert METRICS.entry(name).meta["ideal"] == "match retrain"


def evaluate_rows(ev, names):
    return [row for n in names for row in METRICS.get(n)(ev)]


def test_per_class_accuracy_known_answer_and_missing_classes():
    acc = per_class(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1]), 4)
    assert acc[0] == 100.0 and acc[1] == pytest.approx(100 / 3)
    assert math.isnan(acc[2]) and math.isnan(acc[3])
    ev = _ev(test=(ONE_HOT[[0, 0, 1]], [0, 1, 1]), forget=(ONE_HOT[[2]], [2]))
    rows = {(s, m): v for s, m, v in METRICS.get("per_class_accuracy")(ev)}
    assert rows == {
        ("test", "class_0_accuracy"): 100.0,
        ("test", "class_1_accuracy"): 50.0,
        ("forget", "class_2_accuracy"): 100.0,
    }


def _linear_task(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 2, 2, generator=g) * 0.1
    x[:, 0, 0, 0] += torch.where(y == 1, 1.0, -1.0)
    return _view(y, "forget", x)


def test_relearn_time_zero_for_the_original_and_positive_after_damage():
    forget = _linear_task()
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].weight[1, 0], model[1].weight[0, 0] = 5.0, -5.0  # solves the task
    assert relearn_epochs(model, forget, goal=95.0) == 0
    damaged = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        damaged[1].weight.copy_(-model[1].weight)  # every prediction flipped
        damaged[1].bias.zero_()
    epochs = relearn_epochs(damaged, forget, goal=95.0, lr=0.05)
    assert 1 <= epochs <= 100
    assert relearn_epochs(damaged, forget, goal=95.0, lr=0.0, cap=3) == 4  # cap + 1
    assert torch.equal(damaged[1].weight, -model[1].weight)  # a copy was trained


def test_relearn_time_metric_needs_the_original():
    forget = _linear_task()
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    ev = EvalInput(model=model, views={"forget": forget}, num_classes=2)
    assert METRICS.get("relearn_time")(ev) == []
    ev = EvalInput(model=model, views={"forget": forget}, num_classes=2, original=model)
    [(split, name, value)] = METRICS.get("relearn_time")(ev)
    assert (split, name, value) == ("forget", "relearn_time", 0.0)
    assert METRICS.entry("relearn_time").meta["cost"] == "expensive"


def test_oracle_pool_is_cached_excludes_the_forget_set_and_stores_logits(setup, tmp_path):
    from bench.models.train import fresh_model, predict
    from bench.protocol.oracle import build_oracle_pool

    env, spec, bundle, carved, _ = setup
    forgotten = torch.arange(10)
    pool = build_oracle_pool(spec, carved, forgotten, 2, tmp_path, torch.device("cpu"))
    assert pool.size == 2
    assert pool.logits("train").shape == (2, len(carved.train), bundle.num_classes)
    assert pool.logits("test").shape == (2, len(carved.test), bundle.num_classes)
    assert pool.logits("train", forgotten).shape == (2, 10, bundle.num_classes)
    assert not torch.equal(pool.logits("test")[0], pool.logits("test")[1])  # different seeds
    files = sorted((tmp_path / "oracle").glob("*.pt"))
    assert len(files) == 2
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = build_oracle_pool(spec, carved, forgotten.flip(0), 2, tmp_path, torch.device("cpu"))
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # reused, not retrained
    assert torch.equal(again.logits("test"), pool.logits("test"))
    # the stored logits are those of the stored model
    blob = torch.load(files[0], weights_only=True)
    m = fresh_model(bundle, spec.arch, 0)
    m.load_state_dict(blob["state_dict"])
    from bench.data import View as V

    test_view = V(bundle.test, carved.test, torch.device("cpu"), "test")
    assert torch.allclose(predict(m, test_view), blob["test_logits"], atol=1e-5)
    # another forget set is another pool
    build_oracle_pool(spec, carved, torch.arange(5), 1, tmp_path, torch.device("cpu"))
    assert len(list((tmp_path / "oracle").glob("*.pt"))) == 3


def test_evaluate_passes_context_and_unknown_metric_is_refused():
    ev_rows = evaluate(nn.Identity(), {}, 3, ("ua",))
    assert ev_rows == []
    from bench.core.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        evaluate(nn.Identity(), {}, 3, ("uaa",))
