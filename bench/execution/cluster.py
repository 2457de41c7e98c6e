"""SLURM execution through submitit (``--executor slurm``), and ``--status``.

A launch submits three stages, each a job array packed with ``executor.batch()``:

1. ``prepare``: one task per shared model still to build (a pretrained model, or one oracle
   model; ``bench.protocol.plan``), so that no two jobs ever build the same cached model;
2. ``runs``: the runs still to do, ``--runs-per-job`` per task, after stage 1 (``afterany``: a
   failed preparation makes its runs fail and be recorded as failed, and the rest go on);
3. ``report``: ``reports.build`` after stage 2.

Fault tolerance. Every task (``bench.execution.slurm_tasks``) is a
``submitit.helpers.Checkpointable``: on
preemption or timeout (SIGUSR2 from ``--signal``) submitit requeues it with the same arguments,
and a requeued task (also after ``scontrol requeue``) skips the runs whose records are done. A run
holds an exclusive lock while it runs (``bench.protocol.stages.run_lock``) and writes its record
atomically at the end, so a killed run leaves nothing and is simply run again, and two jobs never
run the same run at once. A relaunch submits only what is neither done nor in a live job: launches
are remembered in ``OUT/slurm/submissions.jsonl`` and live jobs are read from ``squeue``.

The executor is ``submitit.SlurmExecutor``, named explicitly (``AutoExecutor`` would pick SLURM
or not depending on whether ``sbatch`` is on the PATH). submitit is imported only by a launch, so
that local runs, ``--status`` and ``--dry-run`` work where it is not installed (an offline GPU
node).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError, require
from bench.core.records import run_status
from bench.core.spec import RunSpec
from bench.protocol.plan import Plan, chunks, effective_runs_per_job

#: datasets whose suites are GPU-scale: a launch asks for one GPU per job unless told otherwise
GPU_DATASETS = ("cifar10", "cifar100", "imagenet")


@dataclass(frozen=True)
class JobEnv:
    """What a job needs to rebuild its ``bench.protocol.stages.Env`` on the compute node; the device
    is chosen there (the submitting host may have no GPU)."""

    out: str
    cache: str
    data_root: str | None = None
    download: bool = False
    device: str | None = None
    precision: str = "auto"
    compile: bool = False
    save_model: bool = False  # --save-model: OUT/models/<run_id>.pt (bench.models.saved_models)
    pretrain_precision: str = "fp32"  # the shared models' (--pretrain-precision)

    def make(self):
        import torch

        from bench.protocol.stages import Env, default_device

        threads = os.environ.get("SLURM_CPUS_PER_TASK")
        if threads:
            torch.set_num_threads(int(threads))
        dev = torch.device(self.device) if self.device else default_device()
        return Env(
            self.out,
            self.cache,
            self.data_root,
            self.download,
            dev,
            self.precision,
            self.compile,
            pretrain_precision=self.pretrain_precision,
            save_model=self.save_model,
        )


@dataclass
class SlurmOptions:
    partition: str | None = None
    gpus_per_job: int | None = None  # None: 1 for GPU-scale datasets, else 0
    cpus_per_job: int = 4
    mem: str | None = None
    time: int = 240  # minutes per job (a requeued job gets a new allowance)
    array_parallelism: int = 64
    runs_per_job: int = 1
    extra: dict[str, str] = field(default_factory=dict)
    job_name: str = "bench"

    def parameters(self, specs: Sequence[RunSpec]) -> dict[str, Any]:
        gpus = self.gpus_per_job
        if gpus is None:
            gpus = int(any(s.dataset in GPU_DATASETS for s in specs))
        p: dict[str, Any] = {
            "job_name": self.job_name,
            "time": self.time,
            "cpus_per_task": self.cpus_per_job,
            "array_parallelism": self.array_parallelism,
            "signal_delay_s": 120,  # SIGUSR2 two minutes before the limit: checkpoint + requeue
            "stderr_to_stdout": True,
        }
        if gpus:
            p["gpus_per_node"] = gpus
        if self.partition:
            p["partition"] = self.partition
        if self.mem:
            p["mem"] = self.mem
        if self.extra:
            p["additional_parameters"] = dict(self.extra)
        return p


def parse_extra(items: Sequence[str]) -> dict[str, str]:
    """``--slurm-extra KEY=VALUE`` pairs (sbatch long options without ``--``, e.g.
    ``qos=high``, ``account=lab``, ``constraint=h100``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise BenchError(f"cannot read --slurm-extra {item!r}: use KEY=VALUE, e.g. qos=high")
        out[key] = value
    return out


def options_from_args(args, runs_per_job: int | None = None) -> SlurmOptions:
    """:class:`SlurmOptions` from the options of :func:`bench.run.add_slurm_args`
    (``runs_per_job`` overrides ``--runs-per-job``)."""
    return SlurmOptions(
        partition=args.partition,
        gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job,
        mem=args.mem,
        time=args.time,
        array_parallelism=args.array_parallelism,
        runs_per_job=args.runs_per_job if runs_per_job is None else runs_per_job,
        extra=parse_extra(args.slurm_extra),
    )


# ---------------------------------------------------------------------------------------------
# what is live


def submissions_path(out: Path) -> Path:
    return Path(out) / "slurm" / "submissions.jsonl"


def load_submissions(out: Path) -> list[dict[str, Any]]:
    path = submissions_path(out)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash mid-append
    return rows


def _append_submissions(out: Path, rows: list[dict[str, Any]]) -> None:
    path = submissions_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def queue_states() -> dict[str, str] | None:
    """``job id -> state`` of this user's jobs in the queue (array tasks one by one, e.g.
    ``123_4``), or ``None`` when there is no scheduler to ask."""
    if shutil.which("squeue") is None:
        return None
    try:
        res = subprocess.run(
            ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    states = {}
    for line in res.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid:
            states[jid] = state
    return states


def job_state(job_id: str, states: dict[str, str]) -> str | None:
    """``job_id``'s state in ``states`` (:func:`queue_states`), ``None`` when it has left the
    queue; a task of an array also matches its compressed pending row (``123_[4-9]``)."""
    if job_id in states:
        return states[job_id]
    # a pending array whose tasks squeue shows compressed, e.g. "123_[4-9]"
    base, _, task = job_id.partition("_")
    for jid, state in states.items():
        b, _, rng = jid.partition("_")
        if b == base and rng.startswith("[") and task and _in_range(int(task), rng):
            return state
    return None


def _in_range(task: int, rng: str) -> bool:
    for part in rng.strip("[]").split("%")[0].split(","):
        a, _, b = part.partition("-")
        if a.isdigit() and (int(a) <= task <= int(b or a)):
            return True
    return False


def live_work(out: Path, states: dict[str, str] | None) -> dict[str, tuple[str, str]]:
    """``run id or unit id -> (job id, state)`` for work in a job still in the queue."""
    if not states:
        return {}
    live: dict[str, tuple[str, str]] = {}
    for row in load_submissions(out):
        state = job_state(row["job_id"], states)
        if state is None:
            continue
        for key in (*row.get("runs", ()), *row.get("units", ())):
            live[key] = (row["job_id"], state)
    return live


# ---------------------------------------------------------------------------------------------
# launch


@dataclass
class Launch:
    prepare: list[str] = field(default_factory=list)  # job ids
    runs: list[str] = field(default_factory=list)
    report: str | None = None
    n_units: int = 0
    n_runs: int = 0
    skipped_live: int = 0

    @property
    def job_ids(self) -> list[str]:
        return [*self.prepare, *self.runs, *([self.report] if self.report else [])]


def _array_id(job_id: str) -> str:
    return job_id.split("_")[0]


def launch(plan: Plan, jenv: JobEnv, opts: SlurmOptions, out: Path, report: bool = True) -> Launch:
    """Submit what ``plan`` still needs (see the module docstring); returns the job ids."""
    if shutil.which("sbatch") is None:
        raise BenchError(
            "--executor slurm needs SLURM's sbatch on the PATH (run on a login node; for a "
            "local single-node SLURM: sudo bash scripts/slurm-local.sh); --dry-run works anywhere"
        )
    submitit = require("submitit", "--executor slurm")
    from bench.execution.slurm_tasks import PrepareTask, ReportTask, RunTask

    out = Path(out)
    states = queue_states() or {}
    live = live_work(out, states)
    from bench.protocol.stages import is_running

    units = [u for u in plan.units_todo if u.uid not in live]
    live_units = {live[u.uid][0] for u in plan.units_todo if u.uid in live}
    runs = [s for s in plan.runs_todo if s.run_id not in live and not is_running(out, s.run_id)]
    result = Launch(skipped_live=len(plan.runs_todo) - len(runs))
    if not runs and not units:
        return result

    folder = out / "slurm" / "logs" / "%j"
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=10)
    base = opts.parameters(plan.specs)
    ex.update_parameters(**base)
    if units:
        with ex.batch():
            jobs = [ex.submit(PrepareTask(), [u], jenv) for u in units]
        result.prepare = [j.job_id for j in jobs]
        result.n_units = len(units)
        _append_submissions(
            out,
            [
                {"stage": "prepare", "job_id": j.job_id, "units": [u.uid], "time": time.time()}
                for j, u in zip(jobs, units)
            ],
        )
    after = sorted({_array_id(j) for j in result.prepare} | {_array_id(j) for j in live_units})
    if runs:
        per = effective_runs_per_job(len(runs), opts.runs_per_job)
        groups = chunks(runs, per)
        ex.update_parameters(**base, dependency=("afterany:" + ":".join(after)) if after else None)
        with ex.batch():
            jobs = [ex.submit(RunTask(), g, jenv) for g in groups]
        result.runs = [j.job_id for j in jobs]
        result.n_runs = len(runs)
        _append_submissions(
            out,
            [
                {
                    "stage": "runs",
                    "job_id": j.job_id,
                    "runs": [s.run_id for s in g],
                    "time": time.time(),
                }
                for j, g in zip(jobs, groups)
            ],
        )
    if report and result.runs:
        ids = sorted({_array_id(j) for j in result.runs})
        small = {**base, "cpus_per_task": 1, "time": 60}
        small.pop("gpus_per_node", None)
        ex.update_parameters(**small, dependency="afterany:" + ":".join(ids))
        job = ex.submit(ReportTask(), str(out))
        result.report = job.job_id
        _append_submissions(out, [{"stage": "report", "job_id": job.job_id, "time": time.time()}])
    return result


def wait(job_ids: Sequence[str], out: Path, specs: Sequence[RunSpec], poll: float = 2.0) -> None:
    """Block until none of ``job_ids`` is in the queue, printing progress on stderr."""
    last = None
    while True:
        states = queue_states()
        if states is None:
            raise BenchError("squeue stopped answering while waiting; the jobs may still run")
        alive = [j for j in job_ids if job_state(j, states) is not None]
        done = sum(run_status(out, s.run_id) == "done" for s in specs)
        line = f"waiting: {len(alive)} job(s) in the queue, {done}/{len(specs)} runs done"
        if line != last:
            print(line, file=sys.stderr)
            last = line
        if not alive:
            return
        time.sleep(poll)


# ---------------------------------------------------------------------------------------------
# status


STATES = ("done", "failed", "running", "queued", "missing", "damaged")


def run_states(out: Path, specs: Sequence[RunSpec]) -> dict[str, str]:
    """``run_id -> done | failed | running | queued | missing | damaged``: done, failed and
    damaged (a record file that is not whole: redone on relaunch) from the records; running
    when a process holds the run's lock or its job is running; queued when its job waits in
    the queue; otherwise missing."""
    from bench.protocol.stages import is_running

    states = queue_states()
    live = live_work(out, states)
    res = {}
    for s in specs:
        st = run_status(out, s.run_id)
        if st == "done":
            res[s.run_id] = "done"
        elif is_running(out, s.run_id):
            res[s.run_id] = "running"
        elif s.run_id in live:
            state = live[s.run_id][1]
            res[s.run_id] = "running" if state in ("RUNNING", "COMPLETING") else "queued"
        else:
            res[s.run_id] = st  # failed, missing or damaged
    return res


def status_text(out: Path, specs: Sequence[RunSpec], verbose: bool = False) -> str:
    states = run_states(out, specs)
    counts = {k: 0 for k in STATES}
    for v in states.values():
        counts[v] += 1
    by_suite: dict[str, dict[str, int]] = {}
    for s in specs:
        c = by_suite.setdefault(s.suite or "-", {k: 0 for k in STATES})
        c[states[s.run_id]] += 1
    shown = [k for k in STATES if k != "damaged" or counts[k]]  # damaged only when there are
    lines = [f"{len(specs)} runs in {out}: " + ", ".join(f"{counts[k]} {k}" for k in shown)]
    if len(by_suite) > 1:
        for suite, c in by_suite.items():
            lines.append(f"  {suite:28s} " + ", ".join(f"{c[k]} {k}" for k in STATES if c[k]))
    if counts["failed"] or counts["damaged"]:
        lines.append(
            "failed or damaged (rerun the launch command to redo them; errors in "
            "OUT/report/runs.md):"
        )
        for s in specs:
            if states[s.run_id] in ("failed", "damaged"):
                lines.append(f"  {s.run_id}  {s.method} {s.dataset} {s.forget.label} seed={s.seed}")
    if verbose:
        for s in specs:
            lines.append(
                f"{s.run_id}  {states[s.run_id]:8s} {s.method} {s.forget.label} seed={s.seed}"
            )
    sub = load_submissions(out)
    if sub:
        lines.append(f"{len(sub)} job(s) submitted so far; logs in {Path(out) / 'slurm' / 'logs'}")
    return "\n".join(lines)


def describe_launch(res: Launch) -> str:
    if not res.job_ids:
        return (
            f"nothing to submit: every run is done or in a live job ({res.skipped_live} in the "
            "queue)"
        )
    parts = []
    if res.prepare:
        parts.append(f"prepare array {_array_id(res.prepare[0])} ({res.n_units} models)")
    if res.runs:
        parts.append(
            f"run array {_array_id(res.runs[0])} ({res.n_runs} runs in {len(res.runs)} tasks)"
        )
    if res.report:
        parts.append(f"report job {res.report}")
    extra = f"; {res.skipped_live} runs already in live jobs" if res.skipped_live else ""
    return "submitted " + ", ".join(parts) + extra
