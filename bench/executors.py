"""Executors: ``debug`` runs in this process (tests), ``local`` in worker processes on this
machine (a crash in one run cannot take the suite down).

Runs go in two stages: first one run per distinct pretrained model (so that no two workers
ever build the same cached model), then everything else.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool

from bench.protocol import Env, execute
from bench.records import code_version, hardware, run_status, write_records
from bench.spec import RunSpec

EXECUTORS = ("local", "debug")


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _work(spec: RunSpec, env: Env) -> str:
    return execute(spec, env)


def _stages(specs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """First run of each distinct pretraining setup, then the rest."""
    firsts, rest, seen = [], [], set()
    for s in specs:
        key = (s.data, s.arch, s.recipe, s.train_seed)
        (rest if key in seen else firsts).append(s)
        seen.add(key)
    return [firsts, rest]


def run_specs(
    specs: Sequence[RunSpec],
    env: Env,
    executor: str = "local",
    workers: int = 1,
    on_result: Callable[[RunSpec, str], None] | None = None,
) -> dict[str, str]:
    """Run every spec not already done; returns ``run_id -> done|skipped|failed``."""
    results: dict[str, str] = {}

    def record(spec: RunSpec, status: str) -> None:
        results[spec.run_id] = status
        if on_result:
            on_result(spec, status)

    todo = []
    for s in specs:
        if run_status(env.out, s.run_id) == "done":
            record(s, "skipped")
        else:
            todo.append(s)
    if executor == "debug":
        for s in todo:
            record(s, execute(s, env))
        return results
    if executor != "local":
        raise ValueError(f"unknown executor {executor!r}; choose one of {EXECUTORS}")
    workers = max(1, workers)
    threads = max(1, (os.cpu_count() or 1) // workers)
    for stage in _stages(todo):
        _run_pool(stage, env, workers, threads, record)
    return results


def _run_pool(
    specs: list[RunSpec],
    env: Env,
    workers: int,
    threads: int,
    record: Callable[[RunSpec, str], None],
) -> None:
    pending = list(specs)
    ctx = mp.get_context("spawn")  # no forked CUDA or thread state
    while pending:
        with cf.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
        ) as pool:
            running: dict[cf.Future, RunSpec] = {}
            broken = False
            while (pending or running) and not broken:
                while pending and len(running) < workers:
                    s = pending.pop(0)
                    running[pool.submit(_work, s, env)] = s
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    s = running.pop(fut)
                    try:
                        record(s, fut.result())
                    except BrokenProcessPool as exc:
                        broken = True
                        _record_crash(s, env, exc)
                        record(s, "failed")
            if broken:  # the pool is unusable: the runs it still held died with it
                for s in running.values():
                    _record_crash(s, env, RuntimeError("worker pool broke during this run"))
                    record(s, "failed")


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
