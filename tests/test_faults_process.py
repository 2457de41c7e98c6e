"""Process faults (issue #15 items 1, 9, 10): SIGTERM / kill -9 of a local-executor run leaves
no process behind, stale leftovers of dead processes are cleaned on start, and atomically
written files honour the umask."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINUX = sys.platform.startswith("linux")


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state, ppid, start time) of ``pid`` from /proc, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), fields[19]


def _descendants(root: int) -> dict[int, str]:
    """pid -> start time of every live descendant of ``root``."""
    tree: dict[int, list[int]] = {}
    info: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st and st[0] != "Z":
                tree.setdefault(st[1], []).append(int(entry))
                info[int(entry)] = st[2]
    out, todo = {}, [root]
    while todo:
        for child in tree.get(todo.pop(), []):
            out[child] = info[child]
            todo.append(child)
    return out


def _alive(procs: dict[int, str]) -> list[int]:
    """Those of ``procs`` still running (same pid and start time, not a zombie)."""
    return [p for p, start in procs.items() if (st := _stat(p)) and st[0] != "Z" and st[2] == start]


def _start_run(tmp_path: Path) -> tuple[subprocess.Popen, dict[int, str]]:
    """``bench.run --workers 2`` on the synthetic data (1 pretrain + 4 oracle models in stage 1,
    so both workers are busy); returns once two workers have run for a few seconds, with every
    descendant seen so far (workers and the resource tracker)."""
    argv = [
        sys.executable,
        "-m",
        "bench.run",
        "--suite",
        "metrics-digits",
        "--dataset",
        "synthetic",
        "--seeds",
        "0",
        "--forget",
        "8",
        "--workers",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
        "--no-summary",
        "--no-report",
    ]
    # files, not pipes: an orphaned worker would hold a pipe open
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err, env=env)
    seen: dict[int, str] = {}
    deadline = time.monotonic() + 120
    workers_since = None
    while time.monotonic() < deadline and proc.poll() is None:
        kids = _descendants(proc.pid)
        seen.update(kids)
        n_workers = sum(
            "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
            for p in kids
            if _stat(p)
        )
        if n_workers >= 2:
            workers_since = workers_since or time.monotonic()
            if time.monotonic() - workers_since > 4:
                return proc, seen
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no two workers came up: {(tmp_path / 'stderr').read_text()[-2000:]}")


def _wait_gone(procs: dict[int, str], limit: float) -> tuple[float, list[int]]:
    t0 = time.monotonic()
    while (left := _alive(procs)) and time.monotonic() - t0 < limit:
        time.sleep(0.1)
    return time.monotonic() - t0, left


def _kill_all(procs: dict[int, str]) -> None:
    """Clean up after a failing test: no 0.9 GB orphan may outlive it."""
    for p in _alive(procs):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


@pytest.mark.skipif(not LINUX, reason="scans /proc")
def test_sigterm_stops_run_and_workers(tmp_path):
    proc, seen = _start_run(tmp_path)
    try:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        waited, left = _wait_gone(seen, max(0.0, 10 - (time.monotonic() - t0)))
        print(
            f"SIGTERM: main exited in {time.monotonic() - t0 - waited:.1f} s, "
            f"no process left after {time.monotonic() - t0:.1f} s"
        )
        err = (tmp_path / "stderr").read_text()
        assert code in (130, 143), err
        assert "rerun the same command to resume" in err.strip().splitlines()[-1], err
        assert not left, f"still alive 10 s after SIGTERM: {left}"
    finally:
        proc.kill()
        _kill_all(seen)


@pytest.mark.skipif(not LINUX, reason="scans /proc")
def test_kill9_of_main_workers_exit_on_their_own(tmp_path):
    proc, seen = _start_run(tmp_path)
    try:
        seen.pop(proc.pid, None)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        waited, left = _wait_gone(seen, 10)
        print(f"kill -9: no process left after {time.monotonic() - t0:.1f} s")
        assert not left, f"still alive 10 s after kill -9 of the main process: {left}"
    finally:
        _kill_all(seen)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_leftovers_cleaned_on_start_live_ones_kept(tmp_path, capsys):
    from bench.core.files import owner_tag
    from bench.run import main

    out, cache = tmp_path / "out", tmp_path / "cache"
    dead, live = owner_tag(_dead_pid()), owner_tag(os.getpid())
    (out / "records").mkdir(parents=True)
    (cache / "models").mkdir(parents=True)
    (cache / "data").mkdir(parents=True)
    stale = [
        out / "records" / f".abc.jsonl.{dead}.k3j_x9qa.tmp",
        out / f".plan.json.{dead}.aaaaaaaa.tmp",
        cache / "models" / f".pretrain-x.pt.{dead}.bbbbbbbb.tmp",
        cache / "data" / f"cifar10_jpeg-123.tmp{dead}",  # an unpack folder
    ]
    kept = [
        out / "records" / f".abc.jsonl.{live}.k3j_x9qa.tmp",
        cache / "data" / f"cifar10_jpeg-123.tmp{live}",
        out / "records" / f".abc.jsonl.{owner_tag(os.getpid(), 'otherhost')}.zzzzzzzz.tmp",
        out / "records" / "abc.jsonl",
    ]
    for p in stale + kept:
        if p.name.startswith("cifar10"):
            (p / "train").mkdir(parents=True)
            (p / "train" / "x.png").write_bytes(b"x" * 1000)
        else:
            p.write_text("partial")
    # an unpack folder of the code before owner tags (pid only), untouched for two hours
    old = cache / "data" / f"cifar10_jpeg-456.tmp{_dead_pid()}"
    old.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    stale.append(old)
    # the start of a run (here one that then stops on missing data)
    code = main(
        [
            "--dataset",
            "cifar10",
            "--data-root",
            str(tmp_path / "nowhere"),
            "--out",
            str(out),
            "--cache-dir",
            str(cache),
            "--no-progress",
        ]
    )
    assert code == 2
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in kept)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_atomic_writes_honour_umask(tmp_path, umask, mode):
    from bench.core.records import atomic_torch_save, atomic_write_text, write_records

    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_torch_save({"x": 1}, tmp_path / "m.pt")
        write_records(tmp_path, "r1", [{"run_id": "r1", "status": "done"}])
    finally:
        os.umask(previous)
    for p in (tmp_path / "a.txt", tmp_path / "m.pt", tmp_path / "records" / "r1.jsonl"):
        assert p.stat().st_mode & 0o777 == mode, (p, oct(p.stat().st_mode))


# -- a worker that dies takes only its own run down --------------------------------------------

_CRASHY = '''
import os, signal, time
from dataclasses import dataclass
from pathlib import Path
from bench.unlearning.method import register_method

@dataclass(frozen=True)
class HP:
    marker: str = ""
    die: bool = False

@register_method("crashy", hparams=HP, no_reference="a test fixture")
def crashy(model, data, hp, ctx):
    """A test method: touches ``marker`` and dies (SIGKILL to itself), or waits until
    ``marker`` exists (the other run is dying) and returns the model."""
    if hp.die:
        Path(hp.marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not Path(hp.marker).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the other worker is dead by now, and the pool broken
    return model
'''


@pytest.fixture
def crashy(tmp_path, monkeypatch):
    """The ``crashy`` method as an installed entry-point plugin, visible to spawned workers
    (a hand-written dist-info on PYTHONPATH)."""
    import importlib

    from bench.unlearning.method import METHODS

    site = tmp_path / "site"
    (site / "crashy_plugin-0.0.dist-info").mkdir(parents=True)
    (site / "crashy_plugin.py").write_text(_CRASHY)
    info = site / "crashy_plugin-0.0.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: crashy-plugin\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[unlearning_bench.methods]\ncrashy = crashy_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT)]))
    importlib.invalidate_caches()
    METHODS.list()
    from bench.core.registry import load_entry_point_methods

    load_entry_point_methods(METHODS)
    yield
    METHODS.remove("crashy")
    sys.modules.pop("crashy_plugin", None)


def test_a_dying_worker_fails_only_its_own_run(crashy, tmp_path):
    """Two workers: one run's worker dies (SIGKILL) while the other's run is in flight. The
    pool breaks and both futures fail; only the run that dies again alone is recorded failed,
    the other completes."""
    import torch

    from bench.core.records import run_status
    from bench.execution.executors import run_specs
    from bench.protocol.stages import Env
    from tests.helpers import tiny_spec

    marker = str(tmp_path / "dying")
    ok = tiny_spec("crashy", hp={"marker": marker})
    dies = tiny_spec("crashy", seed=1, hp={"marker": marker, "die": True})
    env = Env(out=tmp_path / "out", cache=tmp_path / "cache", device=torch.device("cpu"))
    results = run_specs([ok, dies], env, "local", workers=2)
    assert results == {ok.run_id: "done", dies.run_id: "failed"}
    assert run_status(env.out, ok.run_id) == "done"
    assert run_status(env.out, dies.run_id) == "failed"
