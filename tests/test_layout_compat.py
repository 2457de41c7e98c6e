"""The move from the flat ``bench/`` to its packages changed no run id and no record format: a
suite written by the flat layout's code, rerun with today's, runs nothing new. And the former
module paths still import, with a DeprecationWarning that names the new home."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the last commit of the flat layout (every module directly under bench/)
FLAT_LAYOUT = "8a9565e"


def _run(argv: list[str], cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_records_of_the_flat_layout_are_done_for_the_packaged_one(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    archive = tmp_path / "flat.tar"
    made = subprocess.run(
        ["git", "archive", "-o", str(archive), FLAT_LAYOUT],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:  # a shallow clone without that commit
        pytest.skip(f"commit {FLAT_LAYOUT} is not in this clone: {made.stderr.strip()}")
    old = tmp_path / "flat"
    with tarfile.open(archive) as tar:
        tar.extractall(old, filter="data")
    assert (old / "bench" / "method.py").read_text().startswith('"""The method interface')
    out = tmp_path / "out"
    argv = ["-m", "bench.run", "--suite", "smoke", "--method", "neggrad", "--seeds", "0"]
    argv += ["--forget", "8", "--out", str(out), "--executor", "debug"]
    argv += ["--no-progress", "--no-report", "--no-summary"]
    env = {**os.environ, "CI": "1"}
    first = _run(argv, old, {**env, "PYTHONPATH": str(old)})  # the flat layout's code
    assert first.returncode == 0, first.stderr[-2000:]
    assert "new 1, skipped 0" in first.stderr
    again = _run(argv, ROOT, {**env, "PYTHONPATH": str(ROOT)})  # today's
    assert again.returncode == 0, again.stderr[-2000:]
    assert "(1 already done)" in again.stderr and "new 0, skipped 1" in again.stderr


@pytest.mark.parametrize(
    "old, new, name",
    [
        ("bench.method", "bench.unlearning.method", "register_method"),
        ("bench.spec", "bench.core.spec", "RunSpec"),
        ("bench.study", "bench.tuning.study", "LogUniform"),
        ("bench.executors", "bench.execution.executors", "run_specs"),
    ],
)
def test_former_module_paths_import_with_a_deprecation_warning(old, new, name):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)
