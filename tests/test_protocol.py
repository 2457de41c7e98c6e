"""The protocol end to end on tiny data: records, rerun skipping, failures, caching."""

from __future__ import annotations

import json

import pytest

from bench.core.records import iter_records, record_path, run_status
from bench.execution.executors import run_specs
from bench.protocol.stages import execute
from bench.unlearning.method import METHODS, register_method
from tests.helpers import tiny_spec

REQUIRED = {"run_id", "method", "dataset", "arch", "seed", "stage", "split", "metric", "value"}


def _lines(env, spec):
    return [json.loads(x) for x in record_path(env.out, spec.run_id).read_text().splitlines()]


def test_run_writes_complete_records(env):
    spec = tiny_spec("neggrad", k=16)
    assert execute(spec, env) == "done"
    lines = _lines(env, spec)
    assert lines[0]["type"] == "meta" and lines[0]["spec"]["method"] == "neggrad"
    assert lines[0]["code_version"] and lines[0]["hardware"]["device"] == "cpu"
    assert lines[-1] == {"run_id": spec.run_id, "status": "done"}
    rows = [r for r in lines if r.get("type") == "metric"]
    assert all(r.keys() >= REQUIRED for r in rows)
    got = {(r["stage"], r["split"], r["metric"]) for r in rows}
    for stage in ("before", "after"):
        for split in ("forget", "retain", "test"):
            assert (stage, split, "accuracy") in got
    for m in ("wall_seconds", "steps", "cap_hit", "peak_memory_mb"):
        assert ("unlearn", "-", m) in got
    after_f = next(r["value"] for r in rows if r["stage"] == "after" and r["split"] == "forget")
    assert after_f == 0.0  # NegGrad stops at exactly 0 % on D_f
    assert all(isinstance(r["value"], float) for r in rows)


def test_pretraining_is_cached_and_shared(env):
    a, b = tiny_spec("neggrad", k=8, seed=0), tiny_spec("random_labels", k=16, seed=1)
    execute(a, env)
    execute(b, env)
    metas = [_lines(env, s)[0] for s in (a, b)]
    assert metas[0]["pretrain"]["cached"] is False
    assert metas[1]["pretrain"]["cached"] is True
    assert metas[0]["pretrain"]["key"] == metas[1]["pretrain"]["key"]
    assert len(list((env.cache / "models").glob("pretrain-*.pt"))) == 1


def test_rerun_skips_done_runs(env):
    specs = [tiny_spec("neggrad", k=8, seed=s) for s in (0, 1)]
    first = run_specs(specs, env, executor="debug")
    assert set(first.values()) == {"done"}
    stamp = {s.run_id: record_path(env.out, s.run_id).stat().st_mtime_ns for s in specs}
    second = run_specs(specs, env, executor="debug")
    assert set(second.values()) == {"skipped"}
    assert stamp == {s.run_id: record_path(env.out, s.run_id).stat().st_mtime_ns for s in specs}


@pytest.fixture
def broken_method():
    @register_method("_test_broken")
    def broken(model, data, hp, ctx):
        raise RuntimeError("boom")

    yield "_test_broken"
    METHODS.remove("_test_broken")


def test_failed_run_is_recorded_and_suite_continues(env, broken_method):
    bad, good = tiny_spec(broken_method, k=8), tiny_spec("neggrad", k=8)
    res = run_specs([bad, good], env, executor="debug")
    assert res == {bad.run_id: "failed", good.run_id: "done"}
    last = _lines(env, bad)[-1]
    assert last["status"] == "failed" and "boom" in last["error"]
    # a rerun retries the failed run (and still skips the good one)
    res2 = run_specs([bad, good], env, executor="debug")
    assert res2 == {bad.run_id: "failed", good.run_id: "skipped"}


def test_non_finite_model_is_a_failure(env):
    import torch

    @register_method("_test_nan")
    def nan(model, data, hp, ctx):
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return model

    try:
        spec = tiny_spec("_test_nan", k=8)
        assert execute(spec, env) == "failed"
        assert "non-finite" in _lines(env, spec)[-1]["error"]
    finally:
        METHODS.remove("_test_nan")


def test_local_executor_runs_in_worker_processes(env):
    specs = [tiny_spec("neggrad", k=8, seed=s) for s in (0, 1)]
    res = run_specs(specs, env, executor="local", workers=2)
    assert set(res.values()) == {"done"}
    assert all(run_status(env.out, s.run_id) == "done" for s in specs)
    pids = {r["hardware"]["host"] for r in iter_records(env.out) if r.get("type") == "meta"}
    assert pids


def test_continual_requests_keep_earlier_ones_forgotten(env):
    spec = tiny_spec("neggrad", k=8, scenario="continual", requests=3)
    assert execute(spec, env) == "done"
    rows = [r for r in _lines(env, spec) if r.get("type") == "metric"]
    after = {
        (r["request"], r["split"]): r["value"]
        for r in rows
        if r["stage"] == "after" and r["metric"] == "accuracy"
    }
    assert sorted({r for r, _ in after}) == [1, 2, 3]
    n_forget = _lines(env, spec)[0]["n_forget"]
    assert n_forget == 24
    for r in (1, 2, 3):
        assert after[(r, "forget_request")] == 0.0
    assert after[(3, "forget")] <= 100 / 24 + 1e-6  # at most one earlier instance relearned


def test_before_evaluation_is_shared_and_equal_to_a_fresh_one(env):
    """Runs on one forget set share the pretrained model's "before" evaluation (computed once
    per process): the cached rows equal a cold computation, row for row."""
    import json

    import bench.protocol.stages as protocol
    from bench.core.records import record_path
    from tests.helpers import tiny_spec

    def before(spec, out):
        e = type(env)(out=out, cache=env.cache, device=env.device)
        assert protocol.execute(spec, e) == "done"
        rows = [json.loads(x) for x in record_path(out, spec.run_id).read_text().splitlines()]
        return [(r["split"], r["metric"], r["value"]) for r in rows if r.get("stage") == "before"]

    a, b = tiny_spec("neggrad", k=16, seed=1), tiny_spec("finetune", k=16, seed=1)
    protocol._BEFORE.clear()
    cold = before(b, env.out / "cold")
    assert len(protocol._BEFORE) == 1
    protocol._BEFORE.clear()
    before(a, env.out / "a")
    hits = len(protocol._BEFORE)
    hot = before(b, env.out / "hot")
    assert len(protocol._BEFORE) == hits == 1  # reused, not recomputed
    assert hot == cold and len(cold) >= 3, cold


def test_retain_eval_scores_a_fixed_sample_and_unlearns_with_all_of_d_r(env):
    """DataSpec.retain_eval = N: D_r accuracy is that of a fixed seeded sample of N retained
    instances (the same rows for every method), while the method gets all of D_r; the
    pretrained model is the same as without the option (scoring is not training)."""
    import dataclasses

    import torch

    from bench.data import carve, load_dataset, retain_positions, select_forget
    from bench.models.train import predict
    from bench.protocol.stages import pretrained_model

    def accuracy(model, view):
        return 100.0 * (predict(model, view).argmax(1).cpu() == view.targets.cpu()).float().mean()

    from bench.core.spec import DataSpec

    seen = {}

    @register_method("_retain_len", needs=("forget", "retain"))
    def _retain_len(model, data, hp, ctx):
        seen["n"] = len(data.retain)
        with torch.no_grad():  # a damaged model, so that a sample and all of D_r score apart
            g = torch.Generator().manual_seed(3)
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
        seen["model"] = model
        return model

    try:
        full = tiny_spec("_retain_len", k=16)
        spec = dataclasses.replace(full, data=DataSpec("synthetic", retain_eval=50))
        assert spec.run_id != full.run_id
        assert execute(spec, env) == "done"
        bundle = load_dataset("synthetic", env.locations)
        carved = carve(bundle, spec.data)
        assert seen["n"] == len(carved.train) - 16  # all of D_r for the method
        rows = [r for r in _lines(env, spec) if r.get("type") == "metric"]
        got = {(r["stage"], r["split"]): r["value"] for r in rows if r["metric"] == "accuracy"}
        model, info = pretrained_model(spec, carved, env)
        assert info["key"] == pretrained_model(full, carve(bundle, full.data), env)[1]["key"]
        forget = select_forget(bundle.train.targets.index_select(0, carved.train), spec.forget, 0)
        retain = retain_positions(len(carved.train), forget)
        g = torch.Generator().manual_seed(spec.data.split_seed)
        rows50 = retain.index_select(0, torch.randperm(len(retain), generator=g)[:50].sort().values)
        from bench.data import View

        view = View(bundle.train, carved.train, env.device, "train").subset(rows50)
        want = accuracy(model, view)
        assert got[("before", "retain")] == pytest.approx(want)
        after = seen["model"]
        assert got[("after", "retain")] == pytest.approx(float(accuracy(after, view)))
        whole = accuracy(after, View(bundle.train, carved.train, env.device, "t").subset(retain))
        assert got[("after", "retain")] != pytest.approx(float(whole))  # a sample, not all D_r
    finally:
        METHODS.remove("_retain_len")


def test_before_rows_are_kept_on_disk_for_other_processes(env, monkeypatch):
    """A new worker process (empty in-process memo) reads the "before" rows from the cache
    instead of scoring the pretrained model again; the rows are the same."""
    import bench.protocol.stages as protocol

    a, b = tiny_spec("neggrad", k=16, seed=2), tiny_spec("random_labels", k=16, seed=2)
    protocol._BEFORE.clear()
    assert execute(a, env) == "done"
    assert len(list((env.cache / "before").glob("*.json"))) == 1
    protocol._BEFORE.clear()  # as in a fresh worker process
    calls = []
    real = protocol.evaluate
    monkeypatch.setattr(protocol, "evaluate", lambda *x, **k: calls.append(1) or real(*x, **k))
    assert execute(b, env) == "done"
    assert len(calls) == 1  # the "after" evaluation only

    def rows(spec):
        return [
            (r["split"], r["metric"], r["value"])
            for r in _lines(env, spec)
            if r.get("stage") == "before"
        ]

    assert rows(a) == rows(b) and len(rows(a)) >= 3
