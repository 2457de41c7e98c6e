"""The command line: listing, bad input (one line, exit 2), a small run and its rerun."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import main
from bench.unlearning.method import METHODS

ROOT = Path(__file__).resolve().parent.parent


def test_list_methods_one_per_line(capsys):
    assert main(["--list", "methods"]) == 0
    out = capsys.readouterr().out.split()
    assert out == METHODS.list()
    for name in ("retrain", "finetune", "neggrad", "random_labels"):
        assert name in out


@pytest.mark.parametrize("kind", ["datasets", "archs", "suites", "metrics"])
def test_list_other_registries(kind, capsys):
    assert main(["--list", kind]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--method", "neggrd"], "neggrad"),
        (["--suite", "smok"], "smoke"),
        (["--dataset", "digitz"], "digits"),
        (["--forget", "5000"], "smaller k"),
        (["--forget", "abc"], "k=16"),
        (["--seeds", "x"], "0-4"),
        (["--hp", "neggrad.lrr=1"], "lr"),
        (["--hp", "nonsense"], "METHOD.KEY=VALUE"),
        (["--arch", "resnet19_cifar"], "resnet18_cifar"),
    ],
)
def test_bad_input_one_line_exit_2(argv, needle, capsys, tmp_path):
    code = main([*argv, "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err
    assert needle in err


def test_missing_data_names_the_fix(capsys, tmp_path):
    code = main(
        [
            "--dataset",
            "cifar10",
            "--data-root",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--data-root" in err and "--download" in err and "nowhere" in err


def test_small_run_then_rerun_runs_nothing_new(tmp_path):
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "bench.run",
        "--suite",
        "smoke",
        "--method",
        "neggrad,random_labels",
        "--seeds",
        "0",
        "--forget",
        "8",
        "--out",
        str(out),
        "--executor",
        "debug",
    ]
    first = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "new 2, skipped 0" in first.stderr
    assert "neggrad" in first.stdout and "±" in first.stdout  # the summary table
    files = sorted((out / "records").glob("*.jsonl"))
    assert len(files) == 2
    # the report is built after the runs (reports.build)
    assert "report: " in first.stdout
    html = (out / "report" / "index.html").read_text()
    assert "neggrad" in html and "data:image/png;base64," in html
    assert (out / "report" / "l2ul.tex").exists() and (out / "report" / "l2ul.csv").exists()
    second = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "new 0, skipped 2" in second.stderr


def test_dry_run_runs_nothing(tmp_path, capsys):
    assert main(["--suite", "smoke", "--out", str(tmp_path), "--dry-run"]) == 0
    assert not (tmp_path / "records").exists()
    assert "neggrad" in capsys.readouterr().out
