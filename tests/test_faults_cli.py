"""Bad command-line input (issue #15 items 5-7): one line on stderr, exit status 2, nothing run
or written; an invocation whose every run fails exits 1; valid edge values still pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import bench.execution.cluster
import bench.execution.executors
import bench.protocol.stages
from bench.run import main

ROOT = Path(__file__).resolve().parent.parent
QUIET = ["--no-progress", "--no-summary", "--no-report"]
SLURM_DRY = ["--executor", "slurm", "--dry-run", "--method", "neggrad"]
ALL_CLASSES = "class=" + "+".join(str(c) for c in range(10))  # digits has 10 classes

# (id, argv); {file} = an existing file, {ro} = a folder nobody may write in
BAD = [
    # item 5: inputs that ended in a traceback
    ("out-is-file", ["--out", "{file}"]),
    ("out-under-proc", ["--out", "/proc/bench-out"]),
    ("out-read-only", ["--out", "{ro}"]),
    ("hp-nan", ["--method", "neggrad", "--hp", "neggrad.lr=nan"]),
    ("hp-inf", ["--method", "neggrad", "--hp", "neggrad.lr=inf"]),
    ("val-fraction-0.999", ["--method", "neggrad", "--val-fraction", "0.999"]),
    ("seed-1e20", ["--method", "neggrad", "--seeds", "100000000000000000000"]),
    ("cache-dir-is-file", ["--method", "neggrad", "--cache-dir", "{file}"]),
    # item 6: meaningless values that ran real work
    ("method-empty", ["--method", ""]),
    ("forget-empty", ["--method", "neggrad", "--forget", ""]),
    ("seeds-negative", ["--method", "neggrad", "--seeds=-1"]),
    ("seeds-empty", ["--method", "neggrad", "--seeds", ""]),
    ("suite-empty", ["--suite", "", "--method", "neggrad"]),
    ("max-epochs-negative", ["--method", "neggrad", "--hp", "neggrad.max_epochs=-5"]),
    ("lr-zero", ["--method", "neggrad", "--hp", "neggrad.lr=0"]),
    ("momentum-negative", ["--method", "neggrad", "--hp", "neggrad.momentum=-0.1"]),
    ("n-adv-zero", ["--method", "adv_only", "--hp", "adv_only.n_adv=0"]),
    ("bn-mode-unknown", ["--method", "nabla_tau", "--hp", "nabla_tau.bn_mode=frozen"]),
    ("augment-unknown", ["--method", "finetune", "--hp", "finetune.augment=rotate"]),
    ("forget-every-class", ["--method", "neggrad", "--forget", ALL_CLASSES]),
    ("workers-0", ["--method", "neggrad", "--workers", "0"]),
    ("workers-negative", ["--method", "neggrad", "--workers", "-1"]),
    ("train-subset-too-large", ["--method", "neggrad", "--train-subset", "100000"]),
    ("slurm-extra-no-value", [*SLURM_DRY, "--slurm-extra", "foo"]),
    ("slurm-time-negative", [*SLURM_DRY, "--time", "-5"]),
    ("slurm-runs-per-job-0", [*SLURM_DRY, "--runs-per-job", "0"]),
    # item 7: names and values found only inside each run
    ("timm-unknown", ["--method", "neggrad", "--arch", "timm/no_such_model_xyz"]),
    ("objective-unknown", ["--method", "neggrad", "--hp", "neggrad.objective=garbage"]),
    ("forget-batch-0", ["--method", "neggrad", "--hp", "neggrad.forget_batch=0"]),
    # plans too large to build (10 million runs filled the memory for 69 s, then a traceback)
    ("seeds-ten-million", ["--seeds", "0-9999999", "--dry-run"]),
    ("plan-over-max-runs", ["--seeds", "0-99", "--max-runs", "50"]),
    ("full-suite-over-limit", ["--suite", "full", "--seeds", "0-999", *SLURM_DRY[:3]]),
    ("max-runs-0", ["--method", "neggrad", "--max-runs", "0"]),
    # smaller: found late, or answered with a page of usage
    ("device-meta", ["--method", "neggrad", "--device", "meta"]),
    ("list-unknown-kind", ["--list", "metric"]),
    ("executor-unknown", ["--method", "neggrad", "--executor", "bogus"]),
]


@pytest.fixture
def nothing_runs(monkeypatch):
    """Stand-ins for the executor and the SLURM launcher: a call is recorded (and a launch
    fails the test), so that no test here runs or submits real work."""
    calls: list[str] = []

    def run_specs(specs, *args, **kwargs):
        calls.append(f"run {len(specs)}")
        return {}

    def launch(*args, **kwargs):
        calls.append("launch")
        raise AssertionError("a bad input was submitted")

    monkeypatch.setattr(bench.execution.executors, "run_specs", run_specs)
    monkeypatch.setattr(bench.execution.cluster, "launch", launch)
    return calls


def _argv(argv: list[str], tmp_path: Path) -> list[str]:
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    ro = "/sys/bench-out"  # root may write anywhere a mode allows, but not in sysfs
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        ro = str(tmp_path / "ro" / "out")
    argv = [a.replace("{file}", str(afile)).replace("{ro}", ro) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    return argv + QUIET


@pytest.mark.parametrize("argv", [a for _, a in BAD], ids=[i for i, _ in BAD])
def test_bad_input_one_line_exit_2_nothing_run(argv, tmp_path, capsys, nothing_runs):
    code = main(_argv(argv, tmp_path))
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if x.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert nothing_runs == []
    assert not (tmp_path / "out").exists()  # no plan, no records
    assert (tmp_path / "afile").read_text() == "not a folder\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["--method", "neggrad", "--hp", "neggrad.lr=nan"],
        ["--method", "neggrad", "--out", "/proc/bench-out"],
        ["--method", "neggrad", "--seeds", "100000000000000000000"],
    ],
    ids=["hp-nan", "out-under-proc", "seed-1e20"],
)
def test_bad_input_through_the_real_cli(argv, tmp_path):
    if "--out" not in argv:
        argv = [*argv, "--out", str(tmp_path / "out")]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", *argv, *QUIET, "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_every_run_failed_exits_1(tmp_path, capsys, monkeypatch):
    def broken(spec, env):
        raise RuntimeError("this run breaks")

    monkeypatch.setattr(bench.protocol.stages, "run", broken)
    argv = ["--method", "neggrad,random_labels", "--seeds", "0", "--forget", "8"]
    code = main([*argv, "--executor", "debug", "--out", str(tmp_path / "out"), *QUIET])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "failed 2" in err and "Traceback" not in err
    assert len(list((tmp_path / "out" / "records").glob("*.jsonl"))) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["--method", "nabla_tau", "--hp", "nabla_tau.alpha0=0"],  # the fine-tuning baseline
        [
            "--method",
            "nabla_tau",
            "--hp",
            "nabla_tau.alpha0=-1",
            "--hp",
            "nabla_tau.forget_epochs=0",
        ],
        ["--method", "nabla_tau_ft", "--hp", "nabla_tau_ft.forget_epochs=0"],
        ["--method", "scrub", "--hp", "scrub.max_epochs=0"],  # min steps only
        ["--method", "adv_mas", "--hp", "adv_mas.attack_batch=0", "--hp", "adv_mas.lam=0"],
        ["--method", "neggrad", "--hp", "neggrad.weight_decay=0", "--hp", "neggrad.momentum=0"],
        ["--method", "l1_sparse", "--hp", "l1_sparse.no_l1_epochs=0"],
        ["--method", "unsir", "--hp", "unsir.repair_epochs=0"],
        ["--method", "neggrad", "--seeds", "0"],
        ["--method", "neggrad", "--seeds", "4294967295", "--workers", "1"],
        ["--method", "neggrad", "--val-fraction", "0", "--forget", "class=0+1+2+3+4+5+6+7+8"],
    ],
    ids=[
        "alpha0-0",
        "alpha0-rule",
        "ft-forget-epochs-rule",
        "scrub-max-epochs-0",
        "attack-batch-0",
        "no-weight-decay-momentum",
        "no-l1-epochs-0",
        "unsir-impair-only",
        "seed-0",
        "seed-max",
        "nine-of-ten-classes",
    ],
)
def test_valid_edge_values_still_run(argv, tmp_path, capsys, nothing_runs):
    code = main([*argv, "--out", str(tmp_path / "out"), *QUIET])
    err = capsys.readouterr().err
    assert code == 0, err
    assert nothing_runs and nothing_runs[0].startswith("run ")
