"""submitit (SLURM) and optuna (tuning) are optional at run time: an offline GPU node without them
runs suites locally, and asking for SLURM or tuning there says so in one line, with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("submitit", "optuna")


@pytest.fixture(scope="module")
def blocked_env(tmp_path_factory) -> dict[str, str]:
    """An environment in which ``import submitit`` and ``import optuna`` fail as if they were not
    installed, in this process's children and in theirs (a module of that name that raises
    ModuleNotFoundError, first on PYTHONPATH)."""
    shim = tmp_path_factory.mktemp("blocked")
    for name in BLOCKED:
        (shim / f"{name}.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n"
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), str(ROOT), env.get("PYTHONPATH", "")])
    env["CI"] = "1"
    return env


def _run(argv: list[str], env: dict[str, str], timeout: int = 300):
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_shim_really_blocks(blocked_env):
    probe = _run(["-c", "import submitit"], blocked_env)
    assert probe.returncode != 0 and "No module named 'submitit'" in probe.stderr


def test_every_module_but_the_slurm_tasks_imports_without_them(blocked_env):
    """Only ``bench.execution.slurm_tasks`` (what SLURM jobs run) may need submitit at import
    time."""
    code = (
        "import importlib, json, pkgutil\n"
        "import bench, methods, reports\n"
        "bad = {}\n"
        "for pkg in (bench, methods, reports):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if m.name.endswith('__main__'):\n"
        "            continue\n"
        "        try:\n"
        "            importlib.import_module(m.name)\n"
        "        except ImportError as exc:\n"
        "            bad[m.name] = str(exc)\n"
        "print(json.dumps(bad))\n"
    )
    res = _run(["-c", code], blocked_env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {
        "bench.execution.slurm_tasks": "No module named 'submitit'"
    }


def test_smoke_suite_runs_without_submitit_and_optuna(blocked_env, tmp_path):
    out = tmp_path / "out"
    argv = ["-m", "bench.run", "--suite", "smoke", "--method", "neggrad", "--seeds", "0"]
    argv += ["--forget", "8", "--out", str(out), "--no-progress"]
    res = _run(argv, blocked_env)
    assert res.returncode == 0, res.stderr[-3000:]
    from bench.core.records import run_status

    records = list((out / "records").glob("*.jsonl"))
    assert len(records) == 1
    assert run_status(out, records[0].stem) == "done"
    assert (out / "report" / "index.html").exists()
    # --status and --dry-run of a SLURM launch need no submitit either
    status = _run(["-m", "bench.run", "--status", "--out", str(out)], blocked_env)
    assert status.returncode == 0, status.stderr
    dry = _run([*argv, "--executor", "slurm", "--dry-run"], blocked_env)
    assert dry.returncode == 0, dry.stderr


@pytest.mark.parametrize(
    "argv, needs",
    [
        (["-m", "bench.run", "--suite", "smoke", "--executor", "slurm"], "submitit"),
        (["-m", "bench.tune", "--suite", "tune-digits"], "optuna"),
    ],
)
def test_asking_for_slurm_or_tuning_without_them_is_one_line_and_exit_2(
    blocked_env, tmp_path, argv, needs
):
    res = _run([*argv, "--out", str(tmp_path / "out")], blocked_env, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert f"needs {needs}, which is not installed" in lines[0]
    assert f"pip install {needs}" in lines[0]
    assert not (tmp_path / "out" / "records").exists()  # refused before any work
