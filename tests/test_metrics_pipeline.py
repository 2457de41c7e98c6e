"""Every registered metric through the protocol on tiny data: rows, artifacts, the pool tier,
and the retrained model scoring as unlearned where NegGrad does not."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.core.records import record_path
from bench.metrics import METRICS
from bench.protocol.stages import execute
from tests.helpers import tiny_spec

POOL_METRICS = ("klom", "klom_easydub", "challenge_score", "fqs", "ulira")
ALL = tuple(METRICS.list())


def _after(env, spec):
    lines = [json.loads(x) for x in record_path(env.out, spec.run_id).read_text().splitlines()]
    assert lines[-1]["status"] == "done", lines[-1]
    return {
        (r["split"], r["metric"]): r["value"]
        for r in lines
        if r.get("type") == "metric" and r["stage"] == "after"
    }


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    """neggrad and retrain with every metric and a pool of 3 (one shared oracle pool)."""
    from bench.protocol.stages import Env

    env = Env(out=tmp_path_factory.mktemp("out"), cache=tmp_path_factory.mktemp("cache"))
    got = {}
    for method in ("neggrad", "retrain"):
        spec = tiny_spec(method, k=16, metrics=ALL, pool_size=3)
        assert execute(spec, env) == "done"
        got[method] = (spec, _after(env, spec))
    return env, got


def test_every_metric_records_rows_after_unlearning(pooled):
    _, got = pooled
    _, rows = got["neggrad"]
    names = {m for _, m in rows}
    for expected in (
        "accuracy",
        "ua",
        "ra",
        "ta",
        "class_0_accuracy",
        "mia_svc",
        "mia_svc_prob",
        "mia_loss",
        "mia_entropy",
        "mia_entropy_shadow",
        "mia_entropy_shadow_svc",
        "zrf",
        "klom",
        "klom_p95",
        "klom_undefined",
        "klom_reverse",
        "klom_reverse_p95",
        "klom_easydub",
        "klom_easydub_p95",
        "klom_easydub_empty",
        "challenge_score",
        "challenge_forget_score",
        "challenge_eps",
        "fqs",
        "ulira",
        "relearn_time",
        "flip_rate",
    ):
        assert expected in names, expected
    assert any(m.startswith("cka_") for m in names)
    assert rows[("forget", "ua")] == pytest.approx(100 - rows[("forget", "accuracy")])
    for key in (("forget", "zrf"),):
        assert 1 - np.log(2) - 1e-9 <= rows[key] <= 1.0


def test_retrained_model_scores_as_unlearned_and_neggrad_does_not(pooled):
    """Only what a pool of K = M = 3 decides. On D_f every NegGrad replica's margin lies below
    every oracle's (NegGrad misclassifies all of D_f, the oracles mostly do not), so KLOM sits
    at its disjoint-support ceiling there: ln(1/eps) - H(P) >= ln(1/eps) - ln 3 per point in
    both forms (ln(1/eps) = 11.5 nats in EasyDUB's where NegGrad's three margins share a bin,
    as at every point measured). A retrained model is a draw from the oracle distribution,
    whose margins interleave with the oracles': 9.1-9.7 nats over five forget seeds, NegGrad
    11.04-11.12 (EasyDUB's: 9.2-9.7 against 11.51). On D_r and test no ordering is decided:
    3 against 3 samples in 20 bins give 8.4-10.1 nats for either method (test-split KLOM put
    NegGrad below retraining on 4 of those 5 seeds), so those splits are not compared."""
    _, got = pooled
    ng, rt = got["neggrad"][1], got["retrain"][1]
    ceiling = math.log(1 / 1e-5)
    for name in ("klom", "klom_easydub"):  # ln(1/eps) - H(P), P on at most 3 bins
        assert ng[("forget", name)] >= ceiling - math.log(3), name
        assert rt[("forget", name)] < ng[("forget", name)], name
    for rows in (ng, rt):  # every split: finite, within [0, ln((1 + eps) / eps)]
        for split in ("forget", "retain", "test"):
            for name in ("klom", "klom_easydub"):
                assert 0.0 <= rows[(split, name)] <= ceiling + 1e-4, (split, name)
    # NegGrad's D_f is perfectly separable from the oracles' (every epsilon at the cap: score
    # 0); a retrained model's is not (0.28-0.41 over five seeds)
    assert ng[("forget", "challenge_forget_score")] == 0.0
    assert rt[("forget", "challenge_forget_score")] > ng[("forget", "challenge_forget_score")]
    # NegGrad's D_f entropies and confidences are far from oracle 0's (FQS 0.33-0.47 over five
    # seeds), a retrained model's are not (0.68-0.82)
    assert rt[("forget", "fqs")] >= ng[("forget", "fqs")]
    # U-LiRA tells NegGrad's replicas from the oracles on every D_f point (1.0, its extreme);
    # a retrained model's it cannot (0.38-0.48)
    assert ng[("forget", "ulira")] == 1.0
    assert abs(rt[("forget", "ulira")] - 0.5) < abs(ng[("forget", "ulira")] - 0.5)
    # the retrained model never saw D_f: its representation of D_f moved from the original's
    assert rt[("retain", "cka_net.11")] < 0.999
    assert ng[("forget", "flip_rate")] == 100.0  # NegGrad misclassifies all of D_f


def test_artifacts_hold_confusion_and_embeddings(pooled):
    env, got = pooled
    spec, rows = got["neggrad"]
    art = env.out / "artifacts" / spec.run_id
    conf = np.load(art / "confusion.npz")
    assert conf["matrix"].shape == (4, 4) and conf["matrix"].sum() == 16
    assert np.trace(conf["matrix"]) == 0  # every D_f prediction changed (flip rate 100 %)
    emb = np.load(art / "embeddings.npz")
    assert emb["forget_original"].shape == emb["forget_unlearned"].shape == (16, 128)
    assert emb["retain_labels"].shape[0] == emb["retain_original"].shape[0]


def test_oracle_pool_is_built_once_for_both_methods(pooled):
    env, _ = pooled
    assert len(list((env.cache / "oracle").glob("*.pt"))) == 3


def test_pool_metrics_skip_without_a_pool(env):
    spec = tiny_spec("neggrad", k=16, metrics=("accuracy", *POOL_METRICS))
    assert execute(spec, env) == "done"
    names = {m for _, m in _after(env, spec)}
    assert names == {"accuracy"}


def test_every_registered_metric_documents_its_ideal_and_cost():
    for name in METRICS.list():
        meta = METRICS.entry(name).meta
        assert meta["ideal"] in {"match retrain", "0.5", "0", "1"}, name
        assert meta["cost"] in {"cheap", "expensive"}, name
        assert METRICS.get(name).__doc__, name


def test_suite_metric_tiers_cover_the_registry():
    from bench.suites.catalog import CHEAP_METRICS, EXPENSIVE_METRICS, SUITES

    by_cost = {
        c: {n for n in METRICS.list() if METRICS.entry(n).meta["cost"] == c}
        for c in ("cheap", "expensive")
    }
    assert set(CHEAP_METRICS) == by_cost["cheap"]
    assert set(EXPENSIVE_METRICS) == by_cost["expensive"]
    assert SUITES.get("smoke").metrics == CHEAP_METRICS
    assert SUITES.get("metrics-digits").pool_size >= 3


def test_smoke_records_mia_metrics_for_every_run(tmp_path):
    from bench.suites.catalog import SUITES

    specs = SUITES.get("smoke").expand()
    mias = {"mia_svc", "mia_loss", "mia_entropy", "mia_entropy_shadow"}
    assert specs and all(mias <= set(s.metrics) for s in specs)


@pytest.mark.slow
def test_a_smoke_run_writes_mia_rows(tmp_path):
    from bench.protocol.stages import Env
    from bench.suites.catalog import SUITES

    specs = SUITES.get("smoke").expand()
    mias = {"mia_svc", "mia_loss", "mia_entropy", "mia_entropy_shadow"}

    env = Env(out=tmp_path / "out", cache=tmp_path / "cache")
    spec = next(s for s in specs if s.method == "neggrad" and s.forget.k == 8 and s.seed == 0)
    assert execute(spec, env) == "done"
    assert mias <= {m for _, m in _after(env, spec)}
