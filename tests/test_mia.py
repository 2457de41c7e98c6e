"""Membership-inference metrics: known answers for the features and the three attacks, the
registered metrics through ``evaluate``, and their rows in a protocol record."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bench.core.records import record_path
from bench.core.spec import DataSpec, ForgetSpec, Recipe, RunSpec
from bench.data import Locations, View, carve, load_dataset
from bench.metrics import METRICS, evaluate, mia
from bench.models.train import fresh_model, train
from bench.protocol.stages import execute

MIA_METRICS = ("mia_loss", "mia_entropy", "mia_svc", "mia_entropy_shadow")
MIA_ROWS = {
    "mia_loss",
    "mia_entropy",
    "mia_entropy_shadow",
    "mia_svc",
    "mia_svc_correctness",
    "mia_svc_entropy",
    "mia_svc_m_entropy",
    "mia_svc_prob",
}
CHANCE_TOL = 0.08  # |accuracy - 0.5| bound at n = 2000 per side (about 3 standard errors)


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    """One torch thread: on a loaded 2-core machine two OpenMP threads wait on each other and
    training runs several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------
# features


def test_features_on_uniform_logits():
    c = 4
    z, y = torch.zeros(3, c), torch.tensor([0, 1, 3])
    np.testing.assert_allclose(mia.entropy(z), math.log(c))
    np.testing.assert_allclose(mia.confidence(z, y), 1 / c)
    np.testing.assert_allclose(mia.ce_loss(z, y), math.log(c))
    want = (1 - 1 / c) * math.log(c) - (c - 1) / c * math.log(1 - 1 / c)
    np.testing.assert_allclose(mia.m_entropy(z, y), want)
    np.testing.assert_allclose(mia.probabilities(z), 1 / c)
    # argmax of a tie is class 0
    np.testing.assert_array_equal(mia.correctness(z, y), [1.0, 0.0, 0.0])


def test_features_on_one_hot_like_and_hand_made_logits():
    z = torch.tensor([[50.0, 0.0, 0.0]])
    assert mia.entropy(z)[0] == pytest.approx(0.0, abs=1e-12)
    assert mia.confidence(z, [0])[0] == pytest.approx(1.0)
    assert mia.ce_loss(z, [0])[0] == pytest.approx(0.0, abs=1e-12)
    assert mia.m_entropy(z, [0])[0] == pytest.approx(0.0, abs=1e-12)
    assert mia.correctness(z, [1])[0] == 0.0
    assert mia.m_entropy(z, [1])[0] > 30  # confidently wrong: large and finite
    assert np.isfinite(mia.m_entropy(torch.tensor([[1e4, 0.0]]), [1])).all()
    # p = (1/2, 1/4, 1/4), given as numpy logits
    p = np.array([[0.5, 0.25, 0.25]])
    z = np.log(p)
    assert mia.entropy(z)[0] == pytest.approx(1.5 * math.log(2))
    assert mia.confidence(z, np.array([1]))[0] == pytest.approx(0.25)
    assert mia.ce_loss(z, [1])[0] == pytest.approx(math.log(4))
    want0 = -0.5 * math.log(0.5) - 2 * 0.25 * math.log(0.75)
    want1 = -0.75 * math.log(0.25) - 0.5 * math.log(0.5) - 0.25 * math.log(0.75)
    np.testing.assert_allclose(mia.m_entropy(z, [0]), [want0])
    np.testing.assert_allclose(mia.m_entropy(np.repeat(z, 2, 0), [0, 1]), [want0, want1])


# ---------------------------------------------------------------------------------------
# attacks


def test_logreg_mia_chance_on_identical_distributions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=2000), rng.normal(size=2000)
    assert abs(mia.logreg_mia(a, b) - 0.5) < CHANCE_TOL
    # unbalanced sets: the larger is subsampled, so predicting the majority gains nothing
    assert abs(mia.logreg_mia(rng.normal(size=4000), b[:500]) - 0.5) < CHANCE_TOL
    assert mia.logreg_mia(a, b) == mia.logreg_mia(a, b)  # seeded


def test_logreg_mia_separated_is_one():
    rng = np.random.default_rng(1)
    members, nonmembers = rng.uniform(0, 1, 2000), rng.uniform(2, 3, 1500)
    assert mia.logreg_mia(members, nonmembers) > 0.99
    assert mia.logreg_mia(torch.tensor(members[:30]), torch.tensor(nonmembers[:30])) > 0.95
    with pytest.raises(ValueError):
        mia.logreg_mia(members[:1], nonmembers)


def test_entropy_mia_shadow():
    rng = np.random.default_rng(2)
    n = 2000
    # identical distributions: D_f and unseen data get the same membership rate (no advantage)
    r, t = rng.exponential(size=n), rng.exponential(size=n)
    on_members = mia.entropy_mia_shadow(r, t, rng.exponential(size=n))
    on_nonmembers = mia.entropy_mia_shadow(r, t, rng.exponential(size=n))
    assert abs(0.5 * (on_members + 1 - on_nonmembers) - 0.5) < CHANCE_TOL / 2
    # separated: members have low entropy
    r, t = rng.uniform(0, 0.5, n), rng.uniform(1, 2, 500)
    for classifier in mia.ENTROPY_SHADOW_CLASSIFIERS:
        assert mia.entropy_mia_shadow(r, t, rng.uniform(0, 0.5, 100), classifier) > 0.98
        assert mia.entropy_mia_shadow(r, t, rng.uniform(1, 2, 100), classifier) < 0.02


def test_entropy_mia_shadow_svc_is_unbalanced_and_capped():
    # Bad Teacher's SVC has no class weights: with 9x more members than non-members on one
    # identical distribution it calls (almost) everything a member; the balanced LogReg does not
    rng = np.random.default_rng(5)
    r, t, f = rng.exponential(size=900), rng.exponential(size=100), rng.exponential(size=200)
    assert mia.entropy_mia_shadow(r, t, f, "svc") > 0.95
    assert mia.entropy_mia_shadow(r, t, f, "logreg") < 0.9
    capped = mia.entropy_mia_shadow(r, t, f, "svc", max_rows=100)  # 100 per side: balanced
    assert capped < 0.9
    assert capped == mia.entropy_mia_shadow(r, t, f, "svc", max_rows=100)  # seeded
    with pytest.raises(ValueError, match="classifier"):
        mia.entropy_mia_shadow(r, t, f, "forest")
    with pytest.raises(ValueError, match="max_rows"):
        mia.entropy_mia_shadow(r, t, f, "svc", max_rows=0)


def _logits(n: int, scale: float, gen: torch.Generator, c: int = 10):
    """Logits whose true class leads by ``scale`` (plus noise): larger = more confident."""
    y = torch.randint(0, c, (n,), generator=gen)
    z = torch.randn(n, c, generator=gen)
    z[torch.arange(n), y] += scale
    return z, y


def test_svc_mia_efficacy_known_answers():
    g = torch.Generator().manual_seed(3)
    retain, test = _logits(1500, 8.0, g), _logits(500, 0.5, g)
    for feature in mia.SVC_FEATURES:
        if feature == "correctness":
            continue  # a 0/1 feature cannot separate these completely
        like_retain = mia.svc_mia_efficacy(*retain, *test, *_logits(200, 8.0, g), feature=feature)
        like_test = mia.svc_mia_efficacy(*retain, *test, *_logits(200, 0.5, g), feature=feature)
        assert like_retain < 0.05, feature
        assert like_test > 0.8, feature
    with pytest.raises(ValueError):
        mia.svc_mia_efficacy(*retain, *test, *retain, feature="nope")


def test_svc_mia_efficacy_uses_the_first_test_size_retain_rows():
    """Unlearn-Sparse / SalUn take the first |D_test| rows of D_r as members and all of D_test
    as non-members; a seeded random subset of D_r (the former protocol) gives another SVC."""
    conf_logit = np.log([0.99 / 0.01, 0.6 / 0.4, 0.3 / 0.7])  # margins for p_y 0.99, 0.6, 0.3

    def rows(margin: float, n: int):
        return torch.tensor([[margin, 0.0]] * n), torch.zeros(n, dtype=torch.long)

    first, rest = rows(conf_logit[0], 100), rows(conf_logit[1], 200)
    retain = (torch.cat([first[0], rest[0]]), torch.cat([first[1], rest[1]]))
    test, forget = rows(conf_logit[2], 100), rows(conf_logit[1], 10)
    # members at p_y = 0.99 vs non-members at 0.3: D_f at 0.6 lies on the non-member side
    assert mia.svc_mia_efficacy(*retain, *test, *forget) == 1.0
    # members drawn from all of D_r are mostly at 0.6: D_f looks like members
    assert mia.svc_mia_efficacy(*first, *test, *forget) == 1.0
    assert mia.svc_mia_efficacy(*rest, *test, *forget) == 0.0


def test_svc_mia_efficacy_max_rows_caps_the_test_side():
    g = torch.Generator().manual_seed(6)
    retain, test, forget = _logits(400, 4.0, g), _logits(300, 0.5, g), _logits(50, 2.0, g)
    full = mia.svc_mia_efficacy(*retain, *test, *forget)
    assert full == mia.svc_mia_efficacy(*retain, *test, *forget, max_rows=300)  # no-op cap
    capped = mia.svc_mia_efficacy(*retain, *test, *forget, max_rows=100, seed=1)
    assert capped == mia.svc_mia_efficacy(*retain, *test, *forget, max_rows=100, seed=1)
    # the cap keeps the first 100 retain rows: the same as passing them explicitly
    pick = np.sort(np.random.default_rng(1).choice(300, 100, replace=False))
    sub = (test[0][pick], test[1][pick])
    assert capped == mia.svc_mia_efficacy(retain[0][:100], retain[1][:100], *sub, *forget)
    with pytest.raises(ValueError, match="max_rows"):
        mia.svc_mia_efficacy(*retain, *test, *forget, max_rows=0)


def test_svc_mia_efficacy_chance_on_identical_distributions():
    g = torch.Generator().manual_seed(4)
    retain, test = _logits(1000, 2.0, g), _logits(1000, 2.0, g)
    fresh_a, fresh_b = _logits(1000, 2.0, g), _logits(1000, 2.0, g)
    for feature in ("confidence", "entropy"):
        a = mia.svc_mia_efficacy(*retain, *test, *fresh_a, feature=feature)
        b = mia.svc_mia_efficacy(*retain, *test, *fresh_b, feature=feature)
        assert abs(a - b) < CHANCE_TOL, feature  # no advantage on D_f over unseen data
        assert a == mia.svc_mia_efficacy(*retain, *test, *fresh_a, feature=feature)  # seeded


# ---------------------------------------------------------------------------------------
# registered metrics


@pytest.fixture(scope="module")
def small_eval(tmp_path_factory):
    bundle = load_dataset("synthetic", Locations(None, tmp_path_factory.mktemp("cache")))
    carved = carve(bundle, DataSpec("synthetic"))
    model = fresh_model(bundle, "smallcnn", 0)
    train_view = View(bundle.train, carved.train, name="train")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see _one_thread
    try:
        train(model, train_view, Recipe(epochs=3, batch_size=32, lr=0.05), 0)
    finally:
        torch.set_num_threads(before)
    n = len(carved.train)
    views = {
        "forget": train_view.subset(torch.arange(16), "forget"),
        "retain": train_view.subset(torch.arange(16, n), "retain"),
        "test": View(bundle.test, carved.test, name="test"),
    }
    return model.eval(), views, bundle.num_classes


def test_registered_metrics_through_evaluate(small_eval):
    for name in MIA_METRICS:
        assert METRICS.entry(name).meta["cost"] == "cheap"
        assert METRICS.entry(name).meta["ideal"] in ("0.5", "match retrain")
        assert METRICS.get(name).__doc__
    assert METRICS.entry("mia_entropy_shadow_svc").meta["cost"] == "expensive"  # opt-in
    rows = evaluate(*small_eval, MIA_METRICS)
    assert {m for _, m, _ in rows} == MIA_ROWS and len(rows) == len(MIA_ROWS)
    (svc,) = evaluate(*small_eval, ("mia_entropy_shadow_svc",))
    assert svc[:2] == ("forget", "mia_entropy_shadow_svc") and 0.0 <= svc[2] <= 1.0
    assert all(split == "forget" for split, _, _ in rows)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for _, _, v in rows)
    assert rows == evaluate(*small_eval, MIA_METRICS)  # deterministic


def test_registered_metrics_skip_empty_views(small_eval):
    model, views, c = small_eval
    empty = views["forget"].subset(torch.empty(0, dtype=torch.long))
    assert evaluate(model, {**views, "forget": empty}, c, MIA_METRICS) == []
    names = ("mia_svc", "mia_entropy_shadow", "mia_entropy_shadow_svc")
    assert evaluate(model, {**views, "retain": empty}, c, names) == []
    no_test = {k: v for k, v in views.items() if k != "test"}
    assert evaluate(model, no_test, c, MIA_METRICS) == []


def test_protocol_records_mia_rows(env):
    spec = RunSpec(
        method="neggrad",
        data=DataSpec("synthetic"),
        recipe=Recipe(epochs=5, batch_size=32, lr=0.05),
        forget=ForgetSpec("instance", k=16),
        metrics=("accuracy", *MIA_METRICS),
    )
    assert execute(spec, env) == "done"
    lines = [json.loads(x) for x in record_path(env.out, spec.run_id).read_text().splitlines()]
    rows = [r for r in lines if r.get("type") == "metric"]
    for stage in ("before", "after"):
        got = {r["metric"]: r["value"] for r in rows if r["stage"] == stage}
        assert got.keys() >= MIA_ROWS, stage
        assert all(0.0 <= got[m] <= 1.0 for m in MIA_ROWS)
        assert all(
            r["split"] == "forget" for r in rows if r["stage"] == stage and r["metric"] in MIA_ROWS
        )
