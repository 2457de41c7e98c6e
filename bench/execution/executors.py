"""Executors: ``debug`` runs in this process (tests), ``local`` in worker processes on this
machine (a crash in one run cannot take the suite down); ``slurm`` is in
``bench.execution.cluster``.

The local executor works in two stages, as the SLURM one does: first the shared models the runs
need and the cache lacks (pretrained models, oracle models: ``bench.protocol.plan``), one per
worker, so
that no two workers ever build the same model and oracle pools build in parallel; then the runs.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from bench.core.errors import DiskFullError
from bench.core.records import (
    code_version,
    disk_error,
    disk_full_message,
    hardware,
    run_status,
    write_records,
)
from bench.core.spec import RunSpec
from bench.execution.lifeline import worker_init
from bench.protocol.plan import Unit, is_prepared, units_for
from bench.protocol.stages import Env, execute, prepare

EXECUTORS = ("local", "debug", "slurm")

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _pool(workers: int, ctx: Any, threads: int):
    """A process pool whose workers die with this process (``bench.execution.lifeline``, armed
    before
    they import torch). On an exception in the launcher (SIGTERM, Ctrl-C, a bug) the in-flight
    runs are abandoned: their workers are terminated rather than waited for (a rerun redoes
    those runs; finished records are kept)."""
    pool = cf.ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=worker_init, initargs=(threads, os.getpid())
    )
    try:
        yield pool
    except BaseException:
        _abandon(pool)
        raise
    pool.shutdown(wait=True)


def _abandon(pool: cf.ProcessPoolExecutor, grace: float = 5.0) -> None:
    """Terminate the pool's workers (SIGTERM, then SIGKILL after ``grace`` seconds)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)
    pool.shutdown(wait=True)


def _work(spec: RunSpec, env: Env) -> str:
    return execute(spec, env)


def _prepare(unit: Unit, env: Env) -> str:
    """Stage 1 in a worker: never raises (the runs that need a unit that failed to build fail
    themselves, and are recorded as failed with the reason), except :class:`DiskFullError`
    when the cache's disk takes no more writes (then nothing more is launched)."""
    try:
        prepare(unit, env)
        return "prepared"
    except Exception as exc:  # noqa: BLE001
        full = disk_error(exc)
        if full is not None:
            raise DiskFullError(disk_full_message(full, outcome=f"{unit.label} not built")) from exc
        return f"failed: {type(exc).__name__}: {exc}"


def run_specs(
    specs: Sequence[RunSpec],
    env: Env,
    executor: str = "local",
    workers: int = 1,
    on_result: Callable[[RunSpec, str], None] | None = None,
) -> dict[str, str]:
    """Run every spec not already done; returns ``run_id -> status``: ``done``, ``skipped``
    (done before this call), ``failed``, ``done-elsewhere`` (done meanwhile by another
    launcher) or ``running-elsewhere`` (another launcher holds it now). Raises
    :class:`DiskFullError` when records or cache no longer fit (the run that hit it counts as
    failed; no further run is launched; finished records are kept)."""
    results: dict[str, str] = {}

    def record(spec: RunSpec, status: str) -> None:
        # todo runs that execute() finds done or locked were done / are run by another launcher
        status = {"skipped": "done-elsewhere", "running": "running-elsewhere"}.get(status, status)
        results[spec.run_id] = status
        if on_result:
            on_result(spec, status)

    todo = []
    for s in specs:
        if run_status(env.out, s.run_id) == "done":
            results[s.run_id] = "skipped"
            if on_result:
                on_result(s, "skipped")
        else:
            todo.append(s)
    if executor == "debug":
        for s in todo:
            try:
                status = execute(s, env)
            except DiskFullError:
                record(s, "failed")
                raise
            record(s, status)
        return results
    if executor != "local":
        raise ValueError(f"unknown executor {executor!r}; choose one of {EXECUTORS[:2]}")
    workers = max(1, workers)
    threads = max(1, (os.cpu_count() or 1) // workers)
    units = [u for u in units_for(todo) if not is_prepared(env.cache, u)]
    _run_pool([units, todo], env, workers, threads, record)
    return results


def default_workers(device) -> int:
    """Worker processes when ``--workers`` is not given: one per CPU core (one thread each) on
    the CPU, where small models use a second thread poorly; one on a GPU."""
    if getattr(device, "type", str(device)) == "cuda":
        return 1
    return max(1, os.cpu_count() or 1)


def _run_pool(
    stages: list[list[Any]],
    env: Env,
    workers: int,
    threads: int,
    record: Callable[[RunSpec, str], None],
) -> None:
    """Run the stages in order (a stage starts when the previous one has finished) in one pool
    of worker processes, made again if a worker dies. Items are runs or plan units.

    A worker that dies (a crash, the OOM killer, kill -9) breaks the whole pool: every item in
    flight fails with it, though only one worker died. Those items become suspects and are
    run again one at a time, alone in a new pool: one that breaks a pool while alone is the
    culprit and is recorded as failed; the others finish normally."""
    stages = [list(st) for st in stages if st]
    ctx = mp.get_context("spawn")  # no forked CUDA or thread state
    full: DiskFullError | None = None
    suspects: list[Any] = []
    while stages or suspects:
        with _pool(workers, ctx, threads) as pool:
            running: dict[cf.Future, Any] = {}
            alone = False  # the one item in flight is a suspect, run alone
            broken = False
            while (stages or suspects or running) and not broken:
                if suspects:
                    if not running:
                        item = suspects.pop(0)
                        running[pool.submit(_fn(item), item, env)] = item
                        alone = True
                elif stages:
                    pending = stages[0]
                    while pending and len(running) < workers:
                        item = pending.pop(0)
                        running[pool.submit(_fn(item), item, env)] = item
                        alone = False
                    if not running:  # this stage is finished
                        stages.pop(0)
                        continue
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    item = running.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool as exc:
                        broken = True
                        if not alone:  # any of those in flight may have died: retry alone
                            suspects.append(item)
                            continue
                        result = _crashed(item, env, exc)
                    except DiskFullError as exc:  # launch nothing more; let the others end
                        full = full or exc
                        result = "failed"
                        for st in stages:
                            st.clear()
                        suspects.clear()
                    _done(item, result, full, record)
            suspects.extend(running.values())  # in flight when the pool broke
    if full is not None:
        raise full


def _fn(item: Any) -> Callable[[Any, Env], str]:
    return _prepare if isinstance(item, Unit) else _work


def _done(item: Any, result: str, full: DiskFullError | None, record) -> None:
    if isinstance(item, Unit):
        if result != "prepared" and full is None:  # else: the disk, said once
            log.warning("%s: %s", item.label, result)
    else:
        record(item, result)


def _crashed(item: Any, env: Env, exc: BaseException) -> str:
    if not isinstance(item, Unit):
        try:
            _record_crash(item, env, exc)
        except OSError as err:  # a full disk: the run stays unrecorded (rerun redoes it)
            if disk_error(err) is None:
                raise
            log.error("run %s: %s", item.run_id, disk_full_message(err))
    return "failed"


def _record_crash(spec: RunSpec, env: Env, exc: BaseException) -> None:
    write_records(
        env.out,
        spec.run_id,
        [
            {
                "type": "meta",
                "run_id": spec.run_id,
                "spec": spec.to_dict(),
                "code_version": code_version(),
                "hardware": hardware(env.device),
            },
            {
                "run_id": spec.run_id,
                "status": "failed",
                "error": f"worker process died ({type(exc).__name__}: {exc})",
            },
        ],
    )
