"""The tasks that SLURM jobs run (``bench.execution.cluster`` submits them): the only module of
``bench``
that imports submitit at import time, so that nothing else needs it installed."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit

if TYPE_CHECKING:  # bench.execution.cluster imports this module when it launches
    from bench.core.spec import RunSpec
    from bench.execution.cluster import JobEnv
    from bench.protocol.plan import Unit


class PrepareTask(submitit.helpers.Checkpointable):
    """Stage 1: build (or find cached) shared models."""

    def __call__(self, units: list[Unit], jenv: JobEnv) -> list[dict[str, Any]]:
        from bench.protocol.stages import prepare

        env = jenv.make()
        return [prepare(u, env) for u in units]


class RunTask(submitit.helpers.Checkpointable):
    """Stage 2: runs, each skipped when done; a failing run is recorded and the rest go on.

    SLURM announces a requeue or a preemption with SIGTERM and kills the job ``KillWait``
    seconds later; the task then starts no further run (submitit itself ignores SIGTERM), so
    that the requeued job does them."""

    def __call__(self, specs: list[RunSpec], jenv: JobEnv) -> dict[str, str]:
        from bench.protocol.stages import execute

        env = jenv.make()
        out: dict[str, str] = {}
        with _StopOnTerm() as stop:
            for s in specs:
                if stop.requested:
                    out[s.run_id] = "not started (SIGTERM)"
                    continue
                out[s.run_id] = execute(s, env)
                print(f"run {s.run_id} ({s.method}): {out[s.run_id]}", flush=True)
        return out


class _StopOnTerm:
    """Sets ``requested`` on SIGTERM (in the main thread; elsewhere it does nothing)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        self.requested = True
        print("SIGTERM: no new run is started; the requeued job does the rest", flush=True)

    def __enter__(self) -> _StopOnTerm:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class ReportTask(submitit.helpers.Checkpointable):
    """Stage 3: the report of everything under the output root."""

    def __call__(self, out: str) -> list[str]:
        from reports.build import build

        return [str(p) for p in build(Path(out))]
