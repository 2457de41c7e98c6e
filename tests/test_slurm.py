"""Against a real SLURM scheduler (``scripts/slurm-local.sh`` starts one on this machine; CI
does): a small suite through ``--executor slurm``, a job requeued mid-run with
``scontrol requeue`` that still completes with every record present exactly once, and a
relaunch that submits nothing. Skipped where no scheduler answers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _scheduler_up() -> bool:
    res = subprocess.run(
        ["bash", str(ROOT / "scripts" / "slurm-local.sh"), "--check"], capture_output=True
    )
    return res.returncode == 0


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        not _scheduler_up(),
        reason="no SLURM scheduler answers (start one: sudo bash scripts/slurm-local.sh)",
    ),
]

# the smoke suite narrowed to a few fast runs on the embedded digits
BASE = ["--suite", "smoke", "--forget", "8", "--executor", "slurm", "--cpus-per-job", "1"]


def _bench(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "bench.run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def _records(out: Path) -> dict[str, list[dict]]:
    return {
        p.stem: [json.loads(x) for x in p.read_text().splitlines()]
        for p in (out / "records").glob("*.jsonl")
    }


def _submissions(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "slurm" / "submissions.jsonl").read_text().splitlines()]


def _queue() -> dict[str, str]:
    res = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True)
    return dict(line.split("|", 1) for line in res.stdout.split())


def _wait_for(cond, timeout: float, what: str) -> None:
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def suite_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("slurm") / "out"
    res = _bench(*BASE, "--method", "neggrad,finetune", "--seeds", "0,1", "--out", str(out),
                 "--wait")  # fmt: skip
    return out, res


def test_small_suite_through_slurm(suite_out):
    out, res = suite_out
    assert "submitted prepare array" in res.stdout and "run array" in res.stdout
    recs = _records(out)
    assert len(recs) == 4
    assert all(rows[-1]["status"] == "done" for rows in recs.values())
    stages = [s["stage"] for s in _submissions(out)]
    assert stages == ["prepare", "runs", "runs", "runs", "runs", "report"]
    # the pretrained model was built by the prepare job, so every run found it cached
    metas = [rows[0] for rows in recs.values()]
    assert all(m["pretrain"]["cached"] for m in metas)
    # the report job ran after the runs
    _wait_for(lambda: (out / "report" / "index.html").exists(), 60, "the report job")
    status = _bench("--status", "--out", str(out)).stdout
    assert "4 runs" in status and "4 done, 0 failed, 0 running, 0 queued, 0 missing" in status


def test_relaunch_submits_nothing(suite_out):
    out, _ = suite_out
    before = len(_submissions(out))
    res = _bench(*BASE, "--method", "neggrad,finetune", "--seeds", "0,1", "--out", str(out))
    assert "nothing to submit" in res.stdout
    assert len(_submissions(out)) == before


def test_requeued_job_finishes_every_run_exactly_once(tmp_path):
    out = tmp_path / "out"
    n_runs = 6
    # all runs in one array task, so that the requeue lands in the middle of them
    res = _bench(*BASE, "--method", "neggrad,finetune,random_labels", "--seeds", "0,1",
                 "--runs-per-job", str(n_runs), "--no-report", "--out", str(out))  # fmt: skip
    assert "run array" in res.stdout
    job = next(s for s in _submissions(out) if s["stage"] == "runs")["job_id"]
    assert len(next(s for s in _submissions(out) if s["stage"] == "runs")["runs"]) == n_runs
    _wait_for(lambda: len(_records(out)) >= 1, 240, "the first record")
    done_at_requeue = len(_records(out))
    subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
    assert done_at_requeue < n_runs
    # SLURM holds a requeued job back for a while (BeginTime); let it start again now
    _wait_for(lambda: _queue().get(job) == "PENDING", 60, "the requeued job to be pending")
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], capture_output=True)
    _wait_for(lambda: job not in _queue(), 300, "the requeued job to finish")

    recs = _records(out)
    assert sorted(recs) == sorted(
        next(s for s in _submissions(out) if s["stage"] == "runs")["runs"]
    )
    for rows in recs.values():  # one run, one finished record
        assert [r.get("status") for r in rows if "status" in r] == ["done"]
        assert sum(r.get("type") == "meta" for r in rows) == 1
    assert not list((out / "records").glob(".*"))  # no temporary file left behind
    log = "".join(p.read_text() for p in (out / "slurm" / "logs").rglob("*.out"))
    assert log.count("Starting with JobEnvironment(job_id=" + job.split("_")[0]) >= 2
    assert "SIGTERM: no new run is started" in log
    status = _bench("--status", "--out", str(out)).stdout
    assert f"{n_runs} done" in status
    # and a relaunch finds nothing to do
    res = _bench(*BASE, "--method", "neggrad,finetune,random_labels", "--seeds", "0,1",
                 "--runs-per-job", str(n_runs), "--no-report", "--out", str(out))  # fmt: skip
    assert "nothing to submit" in res.stdout


@pytest.mark.slow
def test_tuning_search_and_evaluations_through_slurm(tmp_path):
    """``bench.tune --executor slurm`` in its three calls: the search as an array of workers on
    one journal; once they are done, the default and tuned evaluation runs as a job array;
    then nothing more (no trial, no run)."""
    out = tmp_path / "out"
    tune = [sys.executable, "-m", "bench.tune", "--suite", "tune-digits", "--method", "neggrad",
            "--forget", "k=32", "--seeds", "0", "--trials", "3", "--executor", "slurm",
            "--workers", "2", "--cpus-per-job", "1", "--no-report", "--out", str(out)]  # fmt: skip

    def call() -> str:
        res = subprocess.run(tune, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout + res.stderr

    def idle() -> bool:
        return not any(j.split("_")[0] in jobs for j in _queue())

    first = call()
    assert "submitted 2 search workers for 1 studies" in first
    jobs = {j.split("_")[0] for j in json.loads((out / "tune" / "slurm-workers.json").read_text())}
    _wait_for(idle, 600, "the search workers")
    second = call()
    assert "run array" in second
    from bench.tuning.study import load_study

    study = load_study(out / "tune", "tune-digits-neggrad-k=32-val-gap")
    assert len(study.get_trials(deepcopy=False)) == 3
    jobs = {s["job_id"].split("_")[0] for s in _submissions(out)}
    _wait_for(idle, 600, "the evaluation runs")
    recs = _records(out)
    assert len(recs) == 3  # neggrad default, retrain, neggrad tuned (seed 0)
    assert all(rows[-1]["status"] == "done" for rows in recs.values())
    assert sum(bool(rows[0]["spec"].get("tuned")) for rows in recs.values()) == 1
    third = call()
    assert "nothing to submit" in third
    assert len(load_study(out / "tune", study.study_name).get_trials(deepcopy=False)) == 3
