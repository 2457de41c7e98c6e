"""Faults around records (issue #15 items 4, 5, 8): a full disk for records or the model cache,
damaged record files and plan.json, reports that must add up with the plan, duplicate specs and
runs done by another launcher. Small runs of one fast method on the synthetic data."""

from __future__ import annotations

import concurrent.futures as cf
import errno
import json
import shutil
from pathlib import Path

import pytest

from bench.core import records
from bench.core.records import record_path, run_status, write_records
from bench.core.spec import DataSpec, ForgetSpec
from bench.protocol.stages import run_lock
from bench.run import main
from bench.suites.catalog import SUITES, Grid
from tests.helpers import TINY_RECIPE, fast_hp

SUITE = "faults-tiny"
GRID = Grid(
    name=SUITE,
    description="one fast method on the synthetic data (tests)",
    data=DataSpec("synthetic"),
    recipe=TINY_RECIPE,
    methods=("random_labels",),
    forgets=(ForgetSpec("instance", k=8),),
    seeds=(0, 1),
    metrics=("accuracy",),
    hparams={"random_labels": fast_hp("random_labels")},
)


@pytest.fixture(autouse=True)
def tiny_suite(monkeypatch):
    real = SUITES.get
    monkeypatch.setattr(SUITES, "get", lambda name: GRID if name == SUITE else real(name))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One model cache for the module: the tiny model is pretrained once."""
    return tmp_path_factory.mktemp("cache")


def _specs(seeds):
    return GRID.expand(seeds=seeds)


def _main(out: Path, cache: Path, *extra: str) -> int:
    argv = ["--suite", SUITE, "--out", str(out), "--cache-dir", str(cache), "--executor", "debug"]
    return main([*argv, "--no-progress", "--no-summary", "--no-report", *extra])


def _errors(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


@pytest.fixture(scope="module")
def done_out(tmp_path_factory, cache) -> Path:
    """An output root with both seeds' runs done (copied by the tests that damage it)."""
    out = tmp_path_factory.mktemp("done") / "out"
    real = SUITES.get
    SUITES.get = lambda name: GRID if name == SUITE else real(name)
    try:
        assert _main(out, cache) == 0
    finally:
        del SUITES.get
    return out


@pytest.fixture
def no_figures(monkeypatch):
    """reports.build without figures (slow, and not what these tests are about)."""
    import reports.figures

    monkeypatch.setattr(reports.figures, "all_figures", lambda *a, **kw: [])


def _copy(done_out: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(done_out, out)
    return out


# ---------------------------------------------------------------------------------------------
# a full disk


def test_record_write_enospc_fails_that_run_and_stops_the_suite(
    tmp_path, cache, monkeypatch, capsys
):
    specs = _specs([0, 1, 2, 3])
    real = records.atomic_write_bytes
    calls = []

    def writer(path, data):
        if Path(path).parent.name == "records":
            calls.append(Path(path))
            if len(calls) == 3:  # the third run's records do not fit; its short failure does
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(records, "atomic_write_bytes", writer)
    out = tmp_path / "out"
    code = _main(out, cache, "--seeds", "0-3")
    err = capsys.readouterr().err
    assert code != 0
    lines = _errors(err)
    assert len(lines) == 1, err
    third = record_path(out, specs[2].run_id)
    assert str(third.resolve()) in lines[0] and "free" in lines[0]
    assert [run_status(out, s.run_id) for s in specs] == ["done", "done", "failed", "missing"]
    last = json.loads(third.read_text().splitlines()[-1])
    assert "No space left" in last["error"]
    assert "Traceback" not in err


def test_cache_save_on_a_full_disk_fails_that_run_and_stops_the_suite(
    tmp_path, monkeypatch, capsys
):
    import torch

    specs = _specs([0, 1])

    def full(obj, f, *a, **kw):  # what torch.save says when the disk fills up mid-write
        raise RuntimeError(
            "[enforce fail at inline_container.cc:603] . unexpected pos 81024 vs 80920"
        )

    monkeypatch.setattr(torch, "save", full)
    out, cache = tmp_path / "out", tmp_path / "fresh-cache"
    code = _main(out, cache)
    err = capsys.readouterr().err
    assert code != 0
    lines = _errors(err)
    assert len(lines) == 1, err
    assert str((cache / "models").resolve()) in lines[0] and ".pt" in lines[0]
    assert "free" in lines[0] and "unexpected pos" not in err.replace(lines[0], "")
    assert [run_status(out, s.run_id) for s in specs] == ["failed", "missing"]
    assert not list((cache / "models").glob("*.tmp"))


class _ThreadPool(cf.ThreadPoolExecutor):
    """The local executor's pool in threads, so that the injected fault reaches the workers."""

    def __init__(self, workers, mp_context=None, initializer=None, initargs=()):
        super().__init__(workers)


def test_local_executor_stops_submitting_on_a_full_disk(tmp_path, cache, monkeypatch):
    from bench.core.errors import DiskFullError
    from bench.execution.executors import run_specs
    from bench.protocol.stages import Env

    specs = _specs([0, 1, 2])
    real = records.atomic_write_bytes
    n = []

    def writer(path, data):
        if Path(path).parent.name == "records":
            n.append(path)
            if len(n) >= 2:  # from the second run on, nothing fits any more
                raise OSError(errno.EDQUOT, "Disk quota exceeded")
        real(path, data)

    monkeypatch.setattr(records, "atomic_write_bytes", writer)
    monkeypatch.setattr(cf, "ProcessPoolExecutor", _ThreadPool)
    env = Env(out=tmp_path / "out", cache=cache)
    seen = []
    with pytest.raises(DiskFullError, match="free") as info:
        run_specs(specs, env, "local", 1, on_result=lambda s, st: seen.append(st))
    assert str(record_path(env.out, specs[1].run_id).resolve()) in str(info.value)
    assert seen == ["done", "failed"]  # the third run was never launched
    assert [run_status(env.out, s.run_id) for s in specs] == ["done", "missing", "missing"]


# ---------------------------------------------------------------------------------------------
# damaged plan.json and records


@pytest.mark.parametrize("text", ["{not json", "[1, 2]\n", '{"runs": [{"x": 1}]}\n'])
def test_status_with_a_damaged_plan_json_is_one_line(tmp_path, text, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "plan.json").write_text(text)
    code = main(["--status", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "plan.json" in err


DAMAGE = {
    "last line a list": lambda lines: [*lines[:-1], "[1, 2]"],
    "last line a string": lambda lines: [*lines[:-1], '"done"'],
    "middle line cut": lambda lines: [lines[0], lines[1][: len(lines[1]) // 2], *lines[2:]],
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_damaged_record_is_reported_and_rerun(done_out, tmp_path, cache, how, capsys, no_figures):
    from reports.build import build

    out = _copy(done_out, tmp_path)
    victim = _specs([0, 1])[1]
    path = record_path(out, victim.run_id)
    path.write_text("\n".join(DAMAGE[how](path.read_text().splitlines())) + "\n")
    assert run_status(out, victim.run_id) == "damaged"
    build(out)  # no traceback
    runs_md = (out / "report" / "runs.md").read_text()
    assert "Every" not in runs_md
    assert any(victim.run_id in ln and "damaged" in ln for ln in runs_md.splitlines())
    capsys.readouterr()
    assert _main(out, cache, "--seeds", "0,1") == 0
    assert "new 1, skipped 1" in capsys.readouterr().err
    assert run_status(out, victim.run_id) == "done"


@pytest.mark.parametrize("fault", ["missing", "truncated"])
def test_runs_md_lists_planned_runs_without_a_valid_record(done_out, tmp_path, fault, no_figures):
    from reports.build import build

    out = _copy(done_out, tmp_path)
    build(out)
    assert "Every planned run finished" in (out / "report" / "runs.md").read_text()
    victim = _specs([0, 1])[0]
    path = record_path(out, victim.run_id)
    if fault == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    build(out)
    runs_md = (out / "report" / "runs.md").read_text()
    assert "Every" not in runs_md
    status = "missing" if fault == "missing" else "damaged"
    assert any(victim.run_id in ln and status in ln for ln in runs_md.splitlines()), runs_md


# ---------------------------------------------------------------------------------------------
# summaries that add up


def test_duplicate_seeds_are_planned_once_and_said_so(done_out, tmp_path, cache, capsys):
    out = _copy(done_out, tmp_path)
    assert _main(out, cache, "--seeds", "0,0") == 0
    err = capsys.readouterr().err
    assert "1 runs in suite" in err and "duplicate" in err
    assert "new 0, skipped 1" in err
    assert len(json.loads((out / "plan.json").read_text())["runs"]) == 1


def test_runs_done_or_running_in_another_launcher_are_counted(tmp_path, cache, monkeypatch, capsys):
    import bench.execution.executors as executors

    specs = _specs([0, 1, 2])
    out = tmp_path / "out"
    real = executors.execute

    def execute(spec, env, *a, **kw):
        if spec.run_id == specs[1].run_id:  # the other launcher finished it meanwhile
            rows = [{"type": "meta", "run_id": spec.run_id, "spec": spec.to_dict()}]
            write_records(out, spec.run_id, [*rows, {"run_id": spec.run_id, "status": "done"}])
        return real(spec, env, *a, **kw)

    monkeypatch.setattr(executors, "execute", execute)
    with run_lock(out, specs[2].run_id) as mine:  # ... and is running this one now
        assert mine
        assert _main(out, cache, "--seeds", "0-2") == 0
    err = capsys.readouterr().err
    assert "new 1, skipped 0" in err
    assert "done by another launcher 1" in err
    assert "running in another launcher 1" in err
