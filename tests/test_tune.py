"""Equal-budget tuning (bench.tuning.study, bench.tuning.search, bench.tune): a toy optimum is
found, budgets
are enforced, studies survive kill -9 and parallel workers, the test split is never read."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.tuning.study import (
    DEFAULT,
    SECONDS,
    STALE,
    Budget,
    IntRange,
    LogUniform,
    Uniform,
    load_study,
    optimize,
    spent,
)

ROOT = Path(__file__).resolve().parents[1]


def _toy(params, report):
    """(x - 2)^2 + (n - 3)^2: its optimum x = 2, n = 3."""
    return (params["x"] - 2) ** 2 + (params["n"] - 3) ** 2, 0.0, {}


TOY_SPACE = {"x": Uniform(-5.0, 5.0), "n": IntRange(0, 10)}


def test_toy_optimum_found_and_defaults_first(tmp_path):
    out = optimize(tmp_path, "toy", TOY_SPACE, _toy, Budget(trials=40), {"x": -4.0, "n": 9})
    assert out.new_trials == 40 and out.trials == 40
    assert abs(out.best_params["x"] - 2) < 0.5 and out.best_params["n"] == 3
    first = load_study(tmp_path, "toy").trials[0]
    assert first.params == {"x": -4.0, "n": 9} and first.user_attrs[DEFAULT]
    # a rerun of a spent study adds no trial, and writes nothing to its journal
    journal = (tmp_path / "toy.journal").read_bytes()
    again = optimize(tmp_path, "toy", TOY_SPACE, _toy, Budget(trials=40))
    assert again.new_trials == 0 and len(load_study(tmp_path, "toy").trials) == 40
    assert (tmp_path / "toy.journal").read_bytes() == journal


def test_equal_budgets_enforced(tmp_path):
    """Trials: exactly N per study; seconds: no trial starts once the measured seconds are
    spent, and every study gets the same declared budget."""

    def timed(params, report):
        return params["lr"], 0.4, {}

    space = {"lr": LogUniform(1e-4, 1.0)}
    for method in ("a", "b"):
        out = optimize(tmp_path, method, space, timed, Budget(trials=5), {"lr": 0.01})
        assert out.trials == 5
    for method in ("c", "d"):
        out = optimize(tmp_path, method, space, timed, Budget(seconds=1.0), {"lr": 0.01})
        # 0.4 s each: 3 trials (0, 0.4, 0.8 spent before each start), none after 1.2 s
        assert out.trials == 3 and out.seconds == pytest.approx(1.2)
    out = optimize(tmp_path, "e", space, timed, Budget(trials=10, seconds=1.0), {"lr": 0.01})
    assert out.trials == 3  # whichever is spent first
    with pytest.raises(Exception, match="budget"):
        Budget()
    with pytest.raises(Exception, match="trials"):
        Budget(trials=0)


def test_failing_trials_spend_budget(tmp_path):
    def bad(params, report):
        raise FloatingPointError("diverged")

    out = optimize(tmp_path, "bad", {"lr": LogUniform(1e-3, 1.0)}, bad, Budget(trials=3))
    assert out.trials == 3 and out.best_value is None
    assert all(t.user_attrs.get("error") for t in load_study(tmp_path, "bad").trials)

    def bad_after_work(params, report):  # the evaluator says what the failed trial spent
        exc = FloatingPointError("diverged")
        exc.seconds = 40.0
        raise exc

    out = optimize(tmp_path, "bad2", {"lr": LogUniform(1e-3, 1.0)}, bad_after_work,
                   Budget(seconds=100))  # fmt: skip
    assert out.trials == 3 and out.seconds == pytest.approx(120.0)


def test_median_pruner_is_an_option_off_by_default(tmp_path):
    import optuna

    def stepped(params, report):
        for step in range(3):
            if report(params["x"] * (step + 1), step):
                raise optuna.TrialPruned()
        return params["x"], 0.0, {}

    space = {"x": Uniform(0.0, 1.0)}
    off = optimize(tmp_path, "off", space, stepped, Budget(trials=15), {"x": 0.5})
    on = optimize(tmp_path, "on", space, stepped, Budget(trials=15), {"x": 0.5}, pruner="median")
    states = [t.state.name for t in load_study(tmp_path, "on").trials]
    assert "PRUNED" not in [t.state.name for t in load_study(tmp_path, "off").trials]
    assert "PRUNED" in states and off.trials == on.trials == 15


_WORKER = """
import sys, time
from pathlib import Path
from bench.tuning.study import Budget, IntRange, Uniform, optimize
root, name, n, sleep = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
def f(params, report):
    time.sleep(sleep)
    return (params["x"] - 2) ** 2, sleep, {{}}
optimize(root, name, {{"x": Uniform(-5.0, 5.0), "n": IntRange(0, 3)}}, f, Budget(trials=n),
         {{"x": 0.0, "n": 1}})
"""


def _worker(tmp_path: Path, name: str, n: int, sleep: float) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_WORKER.format()))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), name, str(n), str(sleep)], env=env
    )


def _complete(tmp_path: Path, name: str) -> list:
    from optuna.trial import TrialState

    try:
        return [t for t in load_study(tmp_path, name).trials if t.state == TrialState.COMPLETE]
    except Exception:  # noqa: BLE001 - the journal may not exist yet
        return []


def test_kill_9_resume_keeps_every_finished_trial_once(tmp_path):
    from optuna.trial import TrialState

    proc = _worker(tmp_path, "killed", 8, 0.3)
    deadline = time.monotonic() + 40
    while len(_complete(tmp_path, "killed")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: t.params for t in _complete(tmp_path, "killed")}
    assert len(before) >= 2
    out = optimize(
        tmp_path, "killed", {"x": Uniform(-5.0, 5.0), "n": IntRange(0, 3)}, _toy_x, Budget(trials=8)
    )
    trials = load_study(tmp_path, "killed").trials
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 8 and spent(trials)[0] == 8
    kept = {t.number: t.params for t in done}
    assert all(kept[k] == v for k, v in before.items())  # finished trials kept, once each
    assert len({t.number for t in trials}) == len(trials)
    stale = [t for t in trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs.get(STALE) for t in stale) and out.stale == len(stale) <= 1
    assert out.new_trials == 8 - len(before)


def _toy_x(params, report):
    return (params["x"] - 2) ** 2, 0.0, {}


def test_parallel_workers_share_one_journal_without_losing_trials(tmp_path):
    procs = [_worker(tmp_path, "shared", 10, 0.2) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    trials = load_study(tmp_path, "shared").trials
    assert len(trials) == 10 and len({t.number for t in trials}) == 10
    assert len(_complete(tmp_path, "shared")) == 10
    assert sum(t.user_attrs[SECONDS] for t in trials) == pytest.approx(2.0)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2  # both did some of the work


def test_search_never_reads_the_test_split(tmp_path, monkeypatch):
    """A trial on the tiny synthetic data runs with the test split withheld; a scorer that
    reads it fails the trial with the guard's message."""
    import torch

    from bench.core.spec import DataSpec, Recipe
    from bench.protocol.stages import Env
    from bench.tuning import search as tuning
    from tests.helpers import tiny_spec

    env = Env(out=tmp_path / "out", cache=tmp_path / "cache", device=torch.device("cpu"))
    spec = tiny_spec(
        "neggrad",
        k=8,
        data=DataSpec("synthetic", val_fraction=0.2),
        recipe=Recipe(epochs=3, batch_size=32, lr=0.05),
        suite="t",
    )
    setup = tuning.SearchSetup(spec, (0, 1), tuning.search_seeds(1))
    seen = []
    real = tuning.score

    def spy(objective, model, scored):
        seen.extend(view.split for view, _ in scored.values())
        return real(objective, model, scored)

    carved_seen = []
    real_guarded = tuning._guarded

    def keep(carved):
        carved_seen.append(real_guarded(carved))
        return carved_seen[-1]

    monkeypatch.setattr(tuning, "score", spy)
    monkeypatch.setattr(tuning, "_guarded", keep)
    value, seconds, details = tuning.trial(setup, {"lr": 0.01, "max_epochs": 5}, env)
    assert value >= 0 and seconds > 0 and set(details) >= {"forget_gap", "val_gap"}
    assert seen and all(not isinstance(s, tuning.TestWithheld) for s in seen)
    du = dataclasses.replace(setup, objective="deepunlearn")
    value_du, _, details_du = tuning.trial(du, {"lr": 0.01, "max_epochs": 5}, env)
    assert 0 <= details_du["discernibility"] <= 100
    assert value_du == pytest.approx(value + details_du["discernibility"], abs=1e-6)
    test = carved_seen[0].bundle.test
    with pytest.raises(PermissionError, match="test split was read during a hyperparameter"):
        test.targets  # noqa: B018
    with pytest.raises(PermissionError):
        test.batches(torch.arange(2), 2, torch.device("cpu"))


def test_validation_forget_set_is_disjoint_and_seeds_apart():
    import torch

    from bench.core.spec import ForgetSpec
    from bench.data import select_forget
    from bench.tuning.search import SEARCH_SEED0, validation_forget

    targets = torch.arange(200) % 4
    fs = ForgetSpec("instance", k=16)
    vf = set(validation_forget(targets, fs, (0, 1, 2), SEARCH_SEED0).tolist())
    for s in (0, 1, 2):
        assert not vf & set(select_forget(targets, fs, s).tolist())
    assert len(vf) == 16
    cls = validation_forget(targets, ForgetSpec("class", classes=(0,)), (0, 1), SEARCH_SEED0)
    assert cls.tolist() == torch.nonzero(targets == 0).flatten().tolist()


def test_class_forgetting_is_scored_on_the_class_validation_images():
    """For a class the search forgets the class itself but scores forgetting on its
    validation images (never the train images behind the final UA) and utility on the other
    classes' validation images, each against the search oracle's correctness there."""
    import torch

    from bench.core.errors import BenchError
    from bench.core.spec import ForgetSpec
    from bench.data import View
    from bench.data.splits import TensorSplit
    from bench.tuning.search import scored_views

    val_targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3])
    split = TensorSplit(torch.zeros(8, 1, 2, 2), val_targets)
    val = View(split, torch.arange(8), torch.device("cpu"), "val")
    oracle = {"val": {"correct": torch.tensor([0.0, 1, 1, 0, 1, 0, 0, 1])}, "train": {}}
    fs = ForgetSpec("class", classes=(0,))
    scored = scored_views(fs, None, None, val, oracle)
    fview, fcorrect = scored["forget"]
    vview, vcorrect = scored["val"]
    assert fview.targets.tolist() == [0, 0, 0] and fcorrect.tolist() == [0, 0, 0]
    assert vview.targets.tolist() == [1, 2, 1, 2, 3] and vcorrect.tolist() == [1, 1, 1, 0, 1]
    with pytest.raises(BenchError, match="val-fraction"):
        scored_views(ForgetSpec("class", classes=(5,)), None, None, val, oracle)


def test_setup_rejects_clashing_seeds_and_missing_validation():
    from bench.core.errors import BenchError
    from bench.core.spec import DataSpec
    from bench.tuning.search import SearchSetup
    from tests.helpers import tiny_spec

    spec = tiny_spec("neggrad", data=DataSpec("synthetic", val_fraction=0.2))
    with pytest.raises(BenchError, match="evaluation seeds"):
        SearchSetup(spec, (0, 5), (5,))
    with pytest.raises(BenchError, match="validation split"):
        SearchSetup(tiny_spec("neggrad"), (0,), (1_000_000,))
    with pytest.raises(BenchError, match="objective"):
        SearchSetup(spec, (0,), (1_000_000,), objective="test-acc")


def test_search_spaces_declared_and_valid():
    from bench.suites.catalog import TUNE_METHODS
    from bench.tuning.search import search_space
    from bench.unlearning.method import make_hparams

    for m in TUNE_METHODS:
        space = search_space(m)
        assert space, f"{m} declares no search space"
        hp = make_hparams(m)
        for name, dist in space.items():
            assert dist.contains(getattr(hp, name)), f"{m}.{name}: default outside its space"


def test_tuned_spec_keeps_default_ids_and_marks_records():
    from bench.tuning.search import tuned_spec
    from tests.helpers import pinned_spec

    base = pinned_spec()
    assert base.run_id == "9b7346e3682aba43" and "tuned" not in base.to_dict()
    t = tuned_spec(base, {"lr": 0.001}, "s-neggrad")
    assert t.tuned == "s-neggrad" and t.run_id != base.run_id
    assert dataclasses.replace(t, tuned="").hparams == t.hparams


def test_reports_keep_tuned_rows_apart_and_out_of_reproduction():
    import pandas as pd

    from reports.reproduction import reproduction_markdown
    from reports.tuning import tuning_table

    rows = []
    runs = (("retrain", None, 90.0), ("neggrad", None, 0.0), ("neggrad (tuned)", "s", 88.0))
    terms = (
        ("forget", "accuracy"),
        ("retain", "accuracy"),
        ("test", "accuracy"),
        ("forget", "mia_svc"),
    )
    for method, tuned, fa in runs:
        for (split, metric), v in zip(terms, (fa, 99.0, 95.0, 0.5)):
            rows.append({"run_id": method, "suite": "x", "dataset": "d", "arch": "a",
                         "method": method, "forget": "k=8", "scenario": "single", "seed": 0,
                         "request": 1, "stage": "after", "split": split, "metric": metric,
                         "value": v, "tuned": tuned})  # fmt: skip
    metrics = pd.DataFrame(rows)
    table = tuning_table(metrics, [{"method": "neggrad", "forget": "k=8", "trials": 5,
                                    "seconds": 1.0, "objective": "val-gap"}])  # fmt: skip
    row = table.iloc[0]
    assert row["method"] == "neggrad" and row["trials"] == 5
    assert row["Avg. Gap default"] == pytest.approx(90 / 4)
    assert row["Avg. Gap tuned"] == pytest.approx(2 / 4)
    from reports.tables import leaderboard

    board = leaderboard(metrics, studies=[{"method": "neggrad", "forget": "k=8", "trials": 5,
                                           "seconds": 12.4}])  # fmt: skip
    labels = dict(zip(board["method"], board["hyperparameters"]))
    assert labels == {"retrain": "defaults", "neggrad": "defaults",
                      "neggrad (tuned)": "tuned: 5 trials, 12 s"}  # fmt: skip
    assert "hyperparameters" not in leaderboard(metrics[metrics["tuned"].isna()]).columns
    seen = []
    import reports.reproduction as rep

    def spy(m, meta):
        seen.append(m)
        return pd.DataFrame(), [], []

    old = rep.COMPARISONS
    rep.COMPARISONS = {"salun": spy}
    try:
        reproduction_markdown(metrics, [], {"salun": {}})
    finally:
        rep.COMPARISONS = old
    assert seen and seen[0]["tuned"].isna().all()


def test_cli_help_exits_0():
    r = subprocess.run(
        [sys.executable, "-m", "bench.tune", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "--trials" in r.stdout and "--budget" in r.stdout


def test_cpu_budget_clock_counts_this_process_work_not_waiting():
    """On the CPU a study's seconds are this process's CPU time: time spent waiting (as when
    other jobs hold the cores) is not charged, work is."""
    import time

    import torch

    from bench.tuning.search import device_clock

    cpu = torch.device("cpu")
    t0 = device_clock(cpu)
    time.sleep(0.3)
    waited = device_clock(cpu) - t0
    t0 = device_clock(cpu)
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        pass
    worked = device_clock(cpu) - t0
    assert waited < 0.1 and worked > 0.01  # the loop gets some CPU even on busy cores


# -- a damaged journal (fault battery) -----------------------------------------------------------


def _tune_cli(out: Path, trials: int) -> list[str]:
    return [
        "--suite", "tune-digits", "--method", "neggrad", "--forget", "32", "--seeds", "0",
        "--trials", str(trials), "--out", str(out), "--search-only", "--executor", "debug",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tuned_once(tmp_path_factory):
    """One 2-trial search through the CLI; each test damages a copy of its output."""
    from bench.tune import main

    out = tmp_path_factory.mktemp("tuned") / "out"
    assert main(_tune_cli(out, 2)) == 0
    return out


def _journal(out: Path) -> Path:
    (path,) = (out / "tune").glob("*.journal")
    return path


@pytest.mark.parametrize("damage", ["torn", "garbage"])
def test_a_journal_with_a_damaged_last_record_is_repaired_and_the_search_resumes(
    tuned_once, tmp_path, capsys, caplog, damage
):
    """A kill or a full disk mid-write leaves a cut last line: Optuna then raised
    JSONDecodeError on every later call. Now the record is dropped with one warning."""
    import shutil

    from optuna.trial import TrialState

    from bench.tune import main

    out = tmp_path / "out"
    shutil.copytree(tuned_once, out)
    path = _journal(out)
    good = path.read_bytes()
    if damage == "torn":
        path.write_bytes(good + good.splitlines(keepends=True)[-1][:25])
    else:
        path.write_bytes(good + b"\x00garbage{\n")
    with caplog.at_level("WARNING"):
        assert main(_tune_cli(out, 3)) == 0, capsys.readouterr().err
    warnings = [r for r in caplog.records if "torn last record" in r.getMessage()]
    assert len(warnings) == 1
    assert list(out.glob("tune/*.journal.torn-*"))  # the dropped bytes are kept aside
    trials = load_study(out / "tune", path.stem).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert path.read_bytes().startswith(good)


def test_a_journal_damaged_before_its_last_record_is_one_line_exit_2(tuned_once, tmp_path, capsys):
    import shutil

    from bench.tune import main

    out = tmp_path / "out"
    shutil.copytree(tuned_once, out)
    path = _journal(out)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = b"not json\n"
    path.write_bytes(b"".join(lines))
    assert main(_tune_cli(out, 3)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "damaged at line 2" in err and "move the file aside" in err
