"""Resumable, budgeted hyperparameter studies on Optuna's journal file storage.

Optuna (Akiba et al., KDD 2019; https://optuna.org) samples the hyperparameters; this module
adds what a fair benchmark needs on top of it, for any objective ``evaluate(params, report)``:

* search spaces declared as data (:class:`LogUniform`, :class:`Uniform`, :class:`IntRange`,
  :class:`Choice`) next to each method's hyperparameters (``register_method(search=...)``);
* the defaults always evaluated first (trial 0, ``enqueue_trial``);
* an equal, declared budget (:class:`Budget`: trials and/or measured seconds), enforced under a
  lock so that several workers never overshoot it: no trial starts once it is spent;
* persistence in ``OUT/tune/<study>.journal`` (``JournalStorage`` + ``JournalFileBackend``):
  SLURM array tasks or local worker processes share one study through the file; a trial killed
  half-way (``kill -9``, preemption) is found by its free lock file, marked failed (``stale``,
  not counted) and its defaults re-queued, so a rerun resumes without losing or repeating a
  finished trial, and a rerun of a finished study adds none.

Nothing here imports torch, so that the study machinery is cheap to start and to test.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError

log = logging.getLogger(__name__)

#: user attributes Optuna stores with each trial
SECONDS, DEFAULT, STALE, WORKER, ERROR = "seconds", "default", "stale", "worker", "error"


# ---------------------------------------------------------------------------------------------
# search spaces


@dataclass(frozen=True)
class LogUniform:
    """A float drawn log-uniformly from [low, high] (learning rates, penalty weights)."""

    low: float
    high: float

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=True)

    def contains(self, v: Any) -> bool:
        return isinstance(v, (int, float)) and self.low <= v <= self.high


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high] (mask ratios, mixing weights)."""

    low: float
    high: float

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high)

    def contains(self, v: Any) -> bool:
        return isinstance(v, (int, float)) and self.low <= v <= self.high


@dataclass(frozen=True)
class IntRange:
    """An integer in [low, high], log-spaced with ``log=True`` (epoch counts, caps)."""

    low: int
    high: int
    log: bool = False

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def contains(self, v: Any) -> bool:
        return isinstance(v, int) and self.low <= v <= self.high


@dataclass(frozen=True)
class Choice:
    """One of a few values (modes, switches)."""

    options: tuple[Any, ...]

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))

    def contains(self, v: Any) -> bool:
        return v in self.options


Space = dict[str, Any]  # name -> LogUniform | Uniform | IntRange | Choice


def suggest(trial, space: Space) -> dict[str, Any]:
    """The trial's values for every name of ``space`` (enqueued values come back as given)."""
    return {name: dist.suggest(trial, name) for name, dist in space.items()}


# ---------------------------------------------------------------------------------------------
# budget


@dataclass(frozen=True)
class Budget:
    """What each study may spend: at most ``trials`` trials and/or ``seconds`` of measured
    compute (the sum of the trials' own timing, e.g. the method's unlearning wall time). A trial
    starts only while both are unspent, so a study overshoots ``seconds`` by at most one trial
    per worker, and never overshoots ``trials``."""

    trials: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.trials is None and self.seconds is None:
            raise BenchError("a study needs a budget: --trials N and/or --budget SECONDS")
        if self.trials is not None and self.trials < 1:
            raise BenchError(f"--trials must be >= 1 (got {self.trials})")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise BenchError(f"--budget must be a number of seconds > 0 (got {self.seconds})")

    def left(self, trials: int, seconds: float) -> bool:
        if self.trials is not None and trials >= self.trials:
            return False
        return self.seconds is None or seconds < self.seconds

    @property
    def label(self) -> str:
        parts = []
        if self.trials is not None:
            parts.append(f"{self.trials} trials")
        if self.seconds is not None:
            parts.append(f"{self.seconds:g} device-seconds")
        return " and ".join(parts)


# ---------------------------------------------------------------------------------------------
# storage and locks


def journal_path(root: Path, study: str) -> Path:
    return Path(root) / f"{study}.journal"


def storage(path: Path):
    """Optuna's journal file storage at ``path`` (appends only; safe for several processes),
    after :func:`repair_journal`."""
    import optuna

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
    except ImportError:  # Optuna < 4.0 named them JournalFileStorage, JournalFileOpenLock
        from optuna.storages import JournalFileOpenLock
        from optuna.storages import JournalFileStorage as JournalFileBackend
    if path.exists():
        lock = JournalFileOpenLock(str(path))  # Optuna's own writer lock: no append under way
        lock.acquire()
        try:
            repair_journal(path)
        finally:
            lock.release()
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def repair_journal(path: Path) -> int:
    """Drop a torn last record from an Optuna journal (one JSON operation per line): what a
    kill or a full disk leaves mid-write, which Optuna cannot read (``JSONDecodeError`` on
    every later load). The dropped bytes are kept beside the journal (``.torn-<time>``) and one
    warning says so; the search then resumes from the records before it. A damaged record
    that is not the last one is a :class:`BenchError` naming the line: later records depend
    on it, so dropping it could change the study. Returns the number of bytes dropped."""
    data = path.read_bytes()
    if not data:
        return 0
    lines = data.split(b"\n")
    body, tail = lines[:-1], lines[-1]  # tail: bytes after the last newline (a torn write)
    bad = [i for i, line in enumerate(body) if not _json_object(line)]
    if bad and bad[0] < len(body) - 1:
        raise BenchError(
            f"tuning journal {path} is damaged at line {bad[0] + 1} of {len(body)} (not the "
            "last record, so it cannot be dropped safely): move the file aside to restart "
            "that study's search, or delete that line if you know what it held"
        )
    keep = len(data) - len(tail)
    if bad:  # the last complete line is garbage
        keep -= len(body[-1]) + 1
    if keep == len(data):
        return 0
    aside = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}")
    aside.write_bytes(data[keep:])
    os.truncate(path, keep)
    log.warning(
        "tuning journal %s: dropped a torn last record (%d bytes, kept in %s); the search "
        "resumes from the %d records before it",
        path,
        len(data) - keep,
        aside.name,
        data[:keep].count(b"\n"),
    )
    return len(data) - keep


def _json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False


@contextlib.contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[Any]:
    """An exclusive ``flock`` on ``path``: yields the open file, or ``None`` when not blocking
    and another process holds it. The kernel drops it when its holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:  # closing releases the lock
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        yield f


def _trial_lock(root: Path, study: str, number: int) -> Path:
    return Path(root) / "locks" / f"{study}-{number}.lock"


def load_study(root: Path, study: str, direction: str = "minimize", sampler=None, pruner=None):
    """The study ``study`` under ``root`` (created when missing). An existing study is loaded,
    not re-created: ``create_study(load_if_exists=True)`` appends a create operation to the
    journal on every call, so that a rerun that adds no trial still grew the file."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = storage(journal_path(root, study))
    if any(s.study_name == study for s in store.get_all_studies()):
        return optuna.load_study(study_name=study, storage=store, sampler=sampler, pruner=pruner)
    return optuna.create_study(
        study_name=study,
        storage=store,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,  # another worker may create it between the check and here
    )


def counted(trials) -> list:
    """The trials that spend budget: finished (complete, pruned, failed by their own error)
    and running ones; a stale trial (its worker died) is not counted, its work is redone."""
    from optuna.trial import TrialState

    out = []
    for t in trials:
        if t.state == TrialState.WAITING:
            continue
        if t.state == TrialState.FAIL and t.user_attrs.get(STALE):
            continue
        out.append(t)
    return out


def spent(trials) -> tuple[int, float]:
    """(trials counted, measured seconds of the finished ones)."""
    c = counted(trials)
    return len(c), float(sum(t.user_attrs.get(SECONDS, 0.0) for t in c))


def _fail_stale(study, root: Path) -> int:
    """Mark RUNNING trials whose worker is gone (their lock file is free) as failed and
    ``stale``; re-queue the defaults if they were the stale one. Call under the study lock."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        with _flock(_trial_lock(root, study.study_name, t.number), blocking=False) as held:
            if held is None:
                continue  # its worker is alive
        study._storage.set_trial_user_attr(t._trial_id, STALE, True)
        study.tell(t.number, state=TrialState.FAIL)
        if t.user_attrs.get(DEFAULT):
            study.enqueue_trial(dict(t.params) or t.system_attrs.get("fixed_params", {}),
                                user_attrs={DEFAULT: True})  # fmt: skip
        n += 1
    return n


@dataclass
class Outcome:
    """What :func:`optimize` did for one study."""

    study: str
    new_trials: int = 0
    stale: int = 0
    trials: int = 0
    seconds: float = 0.0
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)


Evaluate = Callable[[dict[str, Any], Callable[[float, int], bool]], tuple[float, float, dict]]


def optimize(
    root: Path,
    study_name: str,
    space: Space,
    evaluate: Evaluate,
    budget: Budget,
    defaults: dict[str, Any] | None = None,
    seed: int = 0,
    pruner: str = "none",
    direction: str = "minimize",
    log: Callable[[str], None] = lambda msg: None,
) -> Outcome:
    """Run trials of study ``study_name`` (journal under ``root``) until ``budget`` is spent;
    returns what was done. ``evaluate(params, report)`` returns ``(value, seconds, details)``:
    ``seconds`` is what the trial spends of the budget, ``details`` land in the trial's user
    attributes; ``report(value, step)`` gives an intermediate value and says whether the trial
    should stop (``pruner="median"``; always False with ``"none"``). An exception in
    ``evaluate`` fails the trial (counted: it spent budget) and is logged; KeyboardInterrupt and
    SystemExit leave the trial running, to be found stale and redone by the next worker."""
    import optuna
    from optuna.trial import TrialState

    if pruner not in PRUNERS:
        raise BenchError(f"unknown pruner {pruner!r}: use one of {', '.join(PRUNERS)}")
    root = Path(root)
    lock = root / "locks" / f"{study_name}.lock"
    outcome = Outcome(study_name)
    with _flock(lock):
        study = load_study(root, study_name, direction, pruner=PRUNERS[pruner]())
        outcome.stale = _fail_stale(study, root)
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial(dict(defaults or {}), user_attrs={DEFAULT: True})
        start = len(study.get_trials(deepcopy=False))
    # seeded by the caller's seed (a worker index) and the start point: parallel workers and
    # resumed runs draw different points, and one worker's search is reproducible
    sampler = optuna.samplers.TPESampler(seed=(7919 * seed + start) % 2**32)
    study = load_study(root, study_name, direction, sampler=sampler, pruner=PRUNERS[pruner]())
    worker = f"{socket.gethostname()}:{os.getpid()}"
    while True:
        with _flock(lock):
            outcome.stale += _fail_stale(study, root)
            n, secs = spent(study.get_trials(deepcopy=False))
            if not budget.left(n, secs):
                break
            trial = study.ask()
            held = _flock(_trial_lock(root, study_name, trial.number))
            held.__enter__()  # held while the trial runs; the kernel drops it if we die
        try:
            trial.set_user_attr(WORKER, worker)
            params = suggest(trial, space)

            def report(value: float, step: int, trial=trial) -> bool:
                trial.report(float(value), step)
                return pruner != "none" and trial.should_prune()

            t0 = time.perf_counter()
            try:
                value, seconds, details = evaluate(params, report)
            except optuna.TrialPruned as exc:
                trial.set_user_attr(SECONDS, float(getattr(exc, "seconds", 0.0)))
                study.tell(trial, state=TrialState.PRUNED)
                outcome.new_trials += 1
                continue
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - a failing trial is a result, not a crash
                # the evaluator's own clock when it says (bench.tuning.search: device time), else
                # wall
                spent_s = getattr(exc, "seconds", time.perf_counter() - t0)
                trial.set_user_attr(SECONDS, float(spent_s))
                trial.set_user_attr(ERROR, f"{type(exc).__name__}: {exc}"[:500])
                study.tell(trial, state=TrialState.FAIL)
                log(f"{study_name} trial {trial.number} failed: {type(exc).__name__}: {exc}")
                outcome.new_trials += 1
                continue
            trial.set_user_attr(SECONDS, float(seconds))
            for k, v in (details or {}).items():
                trial.set_user_attr(k, v)
            study.tell(trial, float(value))
            outcome.new_trials += 1
            log(f"{study_name} trial {trial.number}: {value:.4g} ({seconds:.2f} s) {params}")
        finally:
            held.__exit__(None, None, None)
    return summarize(study, outcome)


def summarize(study, outcome: Outcome | None = None) -> Outcome:
    """The study's spend and best trial (``best_value`` None while no trial completed)."""
    from optuna.trial import TrialState

    outcome = outcome or Outcome(study.study_name)
    trials = study.get_trials(deepcopy=False)
    outcome.trials, outcome.seconds = spent(trials)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if done:
        best = min(done, key=lambda t: (t.value, t.number))
        if study.direction.name == "MAXIMIZE":
            best = max(done, key=lambda t: (t.value, -t.number))
        outcome.best_value, outcome.best_params = float(best.value), dict(best.params)
    return outcome


def _no_pruner():
    import optuna

    return optuna.pruners.NopPruner()


def _median_pruner():
    import optuna

    # a trial is stopped when its intermediate value is worse than the median of the
    # earlier trials at the same step, after 5 trials have completed
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)


PRUNERS: dict[str, Callable[[], Any]] = {"none": _no_pruner, "median": _median_pruner}
