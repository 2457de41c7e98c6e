"""The plan, the run lock, ``--status`` and the SLURM executor's pieces that need no scheduler
(the real-scheduler tests are in ``tests/test_slurm.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core.errors import BenchError
from bench.core.records import write_records
from bench.core.spec import RunSpec
from bench.execution import cluster
from bench.protocol import plan
from bench.protocol.stages import execute, is_running, prepare, run_lock
from bench.suites.catalog import SUITES
from tests.helpers import tiny_spec

ROOT = Path(__file__).resolve().parents[1]


def test_every_suite_spec_rebuilds_from_its_dict():
    n = 0
    shared = ROOT.parent / "shared" / "data"  # where suites' checkpoints live (data root)
    for name in SUITES.list():
        grid = SUITES.get(name)
        if getattr(grid, "checkpoint", "") and not (shared / grid.checkpoint).is_file():
            continue  # a suite starting from weights that this machine does not have
        for s in grid.expand(data_root=shared):
            assert RunSpec.from_dict(s.to_dict()) == s
            n += 1
    assert n > 1000
    d = tiny_spec("neggrad").to_dict()
    d["seed"] = 99  # no longer the recorded id
    with pytest.raises(BenchError, match="does not rebuild"):
        RunSpec.from_dict(d)


def test_units_are_shared_models_each_once():
    smoke = SUITES.get("smoke").expand()
    units = plan.units_for(smoke)
    # one shared pretraining (all seeds use train seed 0) plus mnemonic's special pretraining
    assert [u.kind for u in units] == ["pretrain", "pretrain"]
    assert len({u.uid for u in units}) == 2
    pool = SUITES.get("metrics-digits").expand()  # pool of 4, k=32, forget seeds 0 and 1
    kinds = [u.kind for u in plan.units_for(pool)]
    assert kinds.count("pretrain") == 1 and kinds.count("oracle") == 8


def test_full_suite_is_every_paper_suite():
    full = SUITES.get("full")
    specs = full.expand()
    assert {s.suite for s in specs} == set(full.parts)
    assert len({s.run_id for s in specs}) == len(specs)
    assert {s.dataset for s in specs} == {"cifar10", "cifar100", "imagenet"}
    narrowed = full.expand(methods=["neggrad"], seeds=[0])
    assert {s.method for s in narrowed} == {"neggrad"} and {s.seed for s in narrowed} == {0}
    with pytest.raises(BenchError, match="spans several datasets"):
        full.expand(dataset="digits")


def test_chunks_keep_pretraining_together_and_arrays_within_limits():
    specs = SUITES.get("smoke").expand()
    groups = plan.chunks(specs, 10)
    assert sum(map(len, groups)) == len(specs) and max(map(len, groups)) == 10
    mnemonic = [i for i, g in enumerate(groups) if any(s.method == "mnemonic" for s in g)]
    assert len(mnemonic) == 1  # its 4 runs (special pretraining) sit in one group
    assert plan.effective_runs_per_job(10, 1) == 1
    assert plan.effective_runs_per_job(5000, 1) == 5  # 1000 tasks at most
    assert plan.effective_runs_per_job(5000, 8) == 8


def test_estimate_counts_only_what_is_left(tmp_path):
    specs = SUITES.get("l2ul-cifar10").expand(methods=["neggrad", "retrain"], seeds=[0])
    p = plan.make_plan(specs, tmp_path / "out", tmp_path / "cache")
    est = plan.estimate(p)
    assert est["pretrain"] > 0 and est["runs"] > 0
    assert est["total"] == pytest.approx(est["pretrain"] + est["oracle"] + est["runs"])
    # a retraining costs about a pretraining (200 epochs over D_r)
    retrain = next(s for s in specs if s.method == "retrain")
    assert plan.run_seconds(retrain) == pytest.approx(plan.unit_seconds(p.units[0]), rel=0.05)
    for s in specs:
        write_records(tmp_path / "out", s.run_id, [{"run_id": s.run_id, "status": "done"}])
    plan.mark_prepared(tmp_path / "cache", p.units[0])
    left = plan.estimate(plan.make_plan(specs, tmp_path / "out", tmp_path / "cache"))
    assert left["total"] == 0


def test_dry_run_full_without_a_scheduler_or_data(tmp_path):
    """The Must-show command: no sbatch on the PATH, no CIFAR/ImageNet, nothing submitted."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable), "BENCH_DATA": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-m", "bench.run", "--suite", "full", "--executor", "slurm",
         "--dry-run", "--out", str(tmp_path / "full")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "1 pretrain" in out and "2 runs" in out and "est. GPU-h" in out
    n = len(SUITES.get("full").expand())
    assert f"{n:7d} {0:7d} {n:7d}" in out  # runs: total, cached, to do
    assert "sbatch would submit" in out and "l2ul-imagenet" in out
    assert not (tmp_path / "full").exists()  # nothing written


def test_launch_without_sbatch_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    p = plan.make_plan([tiny_spec("neggrad")], tmp_path / "o", tmp_path / "c")
    with pytest.raises(BenchError, match="slurm-local.sh"):
        cluster.launch(
            p, cluster.JobEnv(str(tmp_path), str(tmp_path)), cluster.SlurmOptions(), tmp_path
        )


def test_slurm_options():
    assert cluster.parse_extra(["qos=high", "--constraint=h100"]) == {
        "qos": "high",
        "constraint": "h100",
    }
    with pytest.raises(BenchError, match="KEY=VALUE"):
        cluster.parse_extra(["qos"])
    cifar = SUITES.get("l2ul-cifar10").expand(methods=["neggrad"], seeds=[0])
    digits = SUITES.get("smoke").expand(methods=["neggrad"], seeds=[0])
    assert cluster.SlurmOptions().parameters(cifar)["gpus_per_node"] == 1
    assert "gpus_per_node" not in cluster.SlurmOptions().parameters(digits)
    p = cluster.SlurmOptions(gpus_per_job=2, partition="gpu", mem="32G", extra={"qos": "x"})
    params = p.parameters(digits)
    assert params["gpus_per_node"] == 2 and params["partition"] == "gpu"
    assert params["mem"] == "32G" and params["additional_parameters"] == {"qos": "x"}


def test_job_state_reads_expanded_and_compressed_array_ids():
    states = {"12_0": "RUNNING", "12_[3-5,9%2]": "PENDING", "13": "PENDING"}
    assert cluster.job_state("12_0", states) == "RUNNING"
    assert cluster.job_state("12_4", states) == "PENDING"
    assert cluster.job_state("12_9", states) == "PENDING"
    assert cluster.job_state("12_6", states) is None
    assert cluster.job_state("13", states) == "PENDING"
    assert cluster.job_state("14", states) is None


def test_run_lock_is_exclusive_and_execute_skips_a_held_run(env):
    spec = tiny_spec("neggrad")
    with run_lock(env.out, spec.run_id) as mine:
        assert mine
        assert is_running(env.out, spec.run_id)
        with run_lock(env.out, spec.run_id) as second:
            assert not second  # another open file description: as another process would be
        assert execute(spec, env) == "running"
    assert not is_running(env.out, spec.run_id)


def test_prepare_builds_once_and_marks_the_unit(env):
    spec = tiny_spec("neggrad")
    (unit,) = plan.units_for([spec])
    assert not plan.is_prepared(env.cache, unit)
    info = prepare(unit, env)
    assert info["cached"] is False and plan.is_prepared(env.cache, unit)
    assert prepare(unit, env)["cached"] is True
    oracle = plan.Unit("oracle", spec, 1)
    prepare(oracle, env)
    assert len(list((env.cache / "oracle").glob("oracle-*.pt"))) == 1
    assert plan.is_prepared(env.cache, oracle)


def test_status_counts_and_uses_the_last_launch(tmp_path, capsys, monkeypatch):
    from bench.run import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue: records and locks only
    out = tmp_path / "o"
    specs = SUITES.get("smoke").expand(methods=["neggrad"], seeds=[0])  # 2 runs
    plan.save_plan(out, specs, "smoke")
    write_records(out, specs[0].run_id, [{"run_id": specs[0].run_id, "status": "done"}])
    assert main(["--status", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 runs" in text and "1 done, 0 failed, 0 running, 0 queued, 1 missing" in text
    with run_lock(out, specs[1].run_id):
        assert cluster.run_states(out, specs)[specs[1].run_id] == "running"
    write_records(out, specs[1].run_id, [{"run_id": specs[1].run_id, "status": "failed"}])
    assert main(["--status", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 done, 1 failed" in text and specs[1].run_id in text
    assert main(["--status", "--out", str(tmp_path / "nothing")]) == 2  # no launch recorded


def test_status_reads_live_jobs(tmp_path, monkeypatch):
    out = tmp_path / "o"
    specs = SUITES.get("smoke").expand(methods=["neggrad"], seeds=[0, 1])[:3]
    cluster._append_submissions(
        out,
        [
            {"stage": "runs", "job_id": "7_0", "runs": [specs[0].run_id]},
            {"stage": "runs", "job_id": "7_1", "runs": [specs[1].run_id]},
            {"stage": "runs", "job_id": "6_0", "runs": [specs[2].run_id]},  # finished
        ],
    )
    monkeypatch.setattr(cluster, "queue_states", lambda: {"7_0": "RUNNING", "7_[1]": "PENDING"})
    states = cluster.run_states(out, specs)
    assert [states[s.run_id] for s in specs] == ["running", "queued", "missing"]
