"""Command line: ``python -m bench.tune --suite tune-digits [--trials N | --budget SECONDS]``.

Equal-budget hyperparameter tuning of a suite's methods (``bench.tuning.search``, on Optuna through
``bench.tuning.study``), in three stages, each skipping what is already done under OUT:

1. the suite's ordinary runs (paper-default hyperparameters: the *default* rows);
2. one study per (method, forget set) with a search space: trials on the validation split and
   a validation forget set, never the test set, until the budget is spent (the same budget for
   every method, stated in the output); journals under ``OUT/tune/``, so that a killed run or
   more workers (``--workers``, SLURM array tasks) continue the same studies;
3. the best hyperparameters of each study on the suite's evaluation seeds (which the search
   never used): ordinary records marked ``tuned`` with the study's name.

A rerun of the same command adds no trial and no run. ``--executor slurm`` runs in calls of the
same command: the first submits the search (an array of workers, for the studies with budget
left); the next, once those workers have left the queue, submits stages 1 and 3 as one job
array of evaluation runs (``bench.run``'s SLURM launcher, which skips done and live runs); a
later call submits nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from bench.core.errors import ArgumentParser, BenchError, require
from bench.run import add_location_args, add_precision_args, add_slurm_args, parse_seeds


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m bench.tune",
        description="Tune every method of a suite with the same budget (Optuna), selecting on "
        "validation data only, then run the selected hyperparameters on the evaluation seeds.",
    )
    p.add_argument("--suite", default="tune-digits", help="suite name (default tune-digits)")
    p.add_argument("--method", action="append", help="method name or wildcard (default: suite's)")
    p.add_argument("--forget", help="forget sets, comma-separated (default: the suite's)")
    p.add_argument("--seeds", help="evaluation seeds: 0,1 or 0-4 (default: the suite's)")
    b = p.add_argument_group("budget (the same for every method)")
    b.add_argument("--trials", type=int, help="trials per study (default 20 without --budget)")
    b.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help="measured device-seconds of unlearning per study (the trials' own timing: wall "
        "time on a GPU, the process's CPU time on the CPU); no trial starts once it is spent",
    )
    p.add_argument(
        "--objective",
        default="val-gap",
        help="val-gap (default: mean |acc - retrain acc| on the forget proxy, retained "
        "rows and validation split) or deepunlearn (DeepUnlearn's, with its MIA term)",
    )
    p.add_argument(
        "--search-seeds",
        type=int,
        default=1,
        help="validation forget sets per trial (default 1), drawn with seeds no evaluation "
        "uses; the trial's value is their mean",
    )
    p.add_argument(
        "--pruner",
        default="none",
        choices=["none", "median"],
        help="stop hopeless trials after a search seed (median of earlier trials; default none)",
    )
    p.add_argument("--out", help="output root (default results/<suite>)")
    add_location_args(p)
    p.add_argument("--executor", default="local", choices=["local", "debug", "slurm"])
    p.add_argument("--workers", type=int, help="search workers (default: one per CPU core)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    add_precision_args(p)
    p.add_argument("--search-only", action="store_true", help="stop after the search")
    p.add_argument("--no-report", action="store_true", help="do not build OUT/report")
    add_slurm_args(p)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a bad option: one line already on stderr (2)
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return _tune(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials and runs are kept; rerun to resume", file=sys.stderr)
        return 130


def budget_of(args):
    from bench.tuning.study import Budget

    trials = args.trials if args.trials is not None or args.budget is not None else 20
    return Budget(trials=trials, seconds=args.budget)


def _specs(args):
    from bench.core.spec import ForgetSpec
    from bench.suites.catalog import SUITES

    methods = None
    if args.method:
        methods = [m.strip() for item in args.method for m in item.split(",") if m.strip()]
        if "retrain" in SUITES.get(args.suite).methods and "retrain" not in methods:
            methods.append("retrain")  # the reference of the gaps in the default-vs-tuned table
    forgets = [ForgetSpec.parse(f) for f in args.forget.split(",")] if args.forget else None
    seeds = parse_seeds(args.seeds) if args.seeds else None
    return SUITES.get(args.suite).expand(methods=methods, forgets=forgets, seeds=seeds)


def setups_of(specs, objective: str, n_search: int):
    """One :class:`bench.tuning.search.SearchSetup` per (method, forget) that declares a search
    space, and the names of the methods that declare none."""
    from bench.tuning.search import SearchSetup, search_seeds, search_space

    groups: dict[tuple, list] = {}
    for s in specs:
        groups.setdefault((s.method, s.forget), []).append(s)
    setups, untuned = [], []
    for (method, _), group in groups.items():
        if not search_space(method):
            untuned.append(method)
            continue
        group.sort(key=lambda s: s.seed)
        seeds = tuple(s.seed for s in group)
        setups.append(SearchSetup(group[0], seeds, search_seeds(n_search), objective))
    return setups, sorted(set(untuned))


def search_worker(setups, env, budget, pruner: str, index: int = 0, threads: int = 0) -> list:
    """Run every study's trials until its budget is spent (studies shared with other workers
    through their journals; worker ``index`` starts at its own study)."""
    import torch

    from bench.tuning.search import TUNE_DIR, search_space, study_name, trial
    from bench.tuning.study import optimize

    if threads:
        torch.set_num_threads(threads)
    root = Path(env.out) / TUNE_DIR
    order = setups[index % max(1, len(setups)) :] + setups[: index % max(1, len(setups))]
    outcomes = []
    for setup in order:
        name = study_name(setup.spec, setup.objective)
        space = search_space(setup.spec.method)
        defaults = {k: setup.spec.hparams_dict[k] for k in space}

        def evaluate(params, report, setup=setup):
            return trial(setup, params, env, report)

        outcomes.append(
            optimize(
                root,
                name,
                space,
                evaluate,
                budget,
                defaults,
                seed=index,
                pruner=pruner,
                log=lambda msg: logging.getLogger("bench.tune").info(msg),
            )  # fmt: skip
        )
    return outcomes


def _local_worker(setups, env, budget, pruner: str, index: int, threads: int, parent: int):
    """A local search worker process: dies with its launcher (``bench.execution.lifeline``), whose
    trial then counts as stale and is redone by the next run."""
    from bench.execution.lifeline import die_with_parent

    die_with_parent(parent)
    search_worker(setups, env, budget, pruner, index, threads)


def _search_local(setups, env, budget, pruner: str, workers: int) -> None:
    import multiprocessing as mp

    if workers <= 1:
        search_worker(setups, env, budget, pruner)
        return
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [
        ctx.Process(
            target=_local_worker, args=(setups, env, budget, pruner, i, threads, os.getpid())
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join()
    except BaseException:
        for proc in procs:
            proc.terminate()
        raise
    bad = [proc.exitcode for proc in procs if proc.exitcode]
    if bad:
        raise BenchError(f"{len(bad)} search worker(s) failed (exit {bad}); rerun to resume")


def _search_slurm(args, setups, env, budget) -> list[str]:
    submitit = require("submitit", "bench.tune --executor slurm")

    from bench.execution.cluster import options_from_args

    opts = options_from_args(args, runs_per_job=1)  # one search worker per task
    ex = submitit.SlurmExecutor(folder=Path(env.out) / "slurm" / "tune" / "%j", max_num_timeout=10)
    ex.update_parameters(**opts.parameters([s.spec for s in setups]))
    workers = args.workers or 4
    with ex.batch():
        jobs = [
            ex.submit(search_worker, setups, env, budget, args.pruner, i) for i in range(workers)
        ]
    ids = [j.job_id for j in jobs]
    from bench.core.records import atomic_write_text

    atomic_write_text(_workers_file(env.out), json.dumps(ids))
    return ids


def _workers_file(out: Path) -> Path:
    from bench.tuning.search import TUNE_DIR

    return Path(out) / TUNE_DIR / "slurm-workers.json"


def live_search_workers(out: Path) -> list[str]:
    """The search workers of the last ``--executor slurm`` submission still in the queue."""
    from bench.execution.cluster import job_state, queue_states

    path = _workers_file(out)
    if not path.exists():
        return []
    states = queue_states() or {}
    return [j for j in json.loads(path.read_text()) if job_state(j, states)]


def _check_journals(setups, root: Path) -> None:
    """Repair a torn last record of every existing journal, or refuse a journal damaged
    elsewhere (:func:`bench.tuning.study.repair_journal`), before any work starts."""
    from bench.tuning.search import study_name
    from bench.tuning.study import journal_path, storage

    for setup in setups:
        path = journal_path(root, study_name(setup.spec, setup.objective))
        if path.exists():
            storage(path)


def studies_left(setups, root: Path, budget) -> list:
    """The setups whose study has budget left (a missing journal has all of it)."""
    from bench.tuning.search import study_name
    from bench.tuning.study import journal_path, load_study, spent

    left = []
    for setup in setups:
        name = study_name(setup.spec, setup.objective)
        if not journal_path(root, name).exists():
            left.append(setup)
            continue
        if budget.left(*spent(load_study(root, name).get_trials(deepcopy=False))):
            left.append(setup)
    return left


def study_summary(setup, budget, root: Path) -> dict:
    """What a finished study spent and chose, for ``OUT/tune/<study>.json`` and the report."""
    from optuna.trial import TrialState

    from bench.tuning.search import study_name
    from bench.tuning.study import DEFAULT, load_study, summarize

    name = study_name(setup.spec, setup.objective)
    study = load_study(root, name)
    outcome = summarize(study)
    trials = study.get_trials(deepcopy=False)
    default = next(
        (t for t in trials if t.user_attrs.get(DEFAULT) and t.state == TrialState.COMPLETE), None
    )
    return {
        "study": name,
        "suite": setup.spec.suite,
        "method": setup.spec.method,
        "forget": setup.spec.forget.label,
        "objective": setup.objective,
        "budget": {"trials": budget.trials, "seconds": budget.seconds},
        "trials": outcome.trials,
        "seconds": outcome.seconds,
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL and not t.user_attrs.get("stale") for t in trials),
        "best_value": outcome.best_value,
        "best_params": outcome.best_params,
        "default_value": None if default is None else float(default.value),
        "default_params": None if default is None else dict(default.params),
        "search_seeds": list(setup.search_seeds),
        "eval_seeds": list(setup.eval_seeds),
    }


def _tune(args) -> int:
    """``python -m bench.tune`` once the arguments are read: the default runs, the searches
    (here or as SLURM jobs), then the tuned runs and the report."""
    from bench.core.records import atomic_write_text
    from bench.tuning.search import TUNE_DIR

    budget, env, specs, setups, workers, executor = _tune_setup(args)
    out, root = env.out, env.out / TUNE_DIR
    if args.executor == "slurm":
        live = live_search_workers(out)
        if live:
            print(f"the search workers {', '.join(live)} are still queued or running; rerun "
                  "this command once they are done")  # fmt: skip
            return 0
        left = studies_left(setups, root, budget)
        if left:
            jobs = _search_slurm(args, left, env, budget)
            print(f"submitted {len(jobs)} search workers for {len(left)} studies: "
                  f"{', '.join(jobs)}; rerun this command once they are done to submit the "
                  "default and tuned evaluation runs")  # fmt: skip
            return 0
    else:
        from bench.execution.executors import run_specs

        if not args.search_only:
            run_specs(specs, env, executor, workers)  # the default rows (and shared pretraining)
        _search_local(setups, env, budget, args.pruner, workers if executor == "local" else 1)
    summaries = [study_summary(s, budget, root) for s in setups]
    for summary in summaries:
        atomic_write_text(root / f"{summary['study']}.json", json.dumps(summary, indent=1))
    print(budget_table(summaries))
    if args.search_only:
        return 0
    return _run_tuned(args, env, specs, _tuned_specs(specs, setups, summaries), workers, executor)


def _tune_setup(args):
    """Every option checked before any work: ``(budget, env, specs, setups, workers,
    executor)``, the journals repaired or refused, and the plan line printed."""
    require("optuna", "bench.tune")  # the search; before any work
    if args.executor == "slurm":
        require("submitit", "bench.tune --executor slurm")
    import torch

    from bench.data import data_root
    from bench.execution.executors import default_workers
    from bench.protocol.stages import Env, default_device
    from bench.run import check_writable_dir, validate
    from bench.tuning.search import OBJECTIVES, TUNE_DIR
    from bench.tuning.study import PRUNERS

    budget = budget_of(args)
    if args.objective not in OBJECTIVES:
        raise BenchError(f"unknown --objective {args.objective!r}: use {', '.join(OBJECTIVES)}")
    if args.pruner not in PRUNERS:
        raise BenchError(f"unknown --pruner {args.pruner!r}")
    if args.workers is not None and args.workers < 1:
        raise BenchError(f"--workers must be >= 1 (got {args.workers})")
    device = torch.device(args.device) if args.device else default_device()
    out = Path(args.out) if args.out else Path("results") / args.suite
    env = Env(
        out=out,
        cache=args.cache_dir,
        data_root=data_root(args.data_root),
        download=args.download,
        device=device,
        precision=args.precision,
        pretrain_precision=args.pretrain_precision,
    )
    specs = _specs(args)
    if not specs:
        raise BenchError("the selection matches no run")
    check_writable_dir(out, "--out")
    setups, untuned = setups_of(specs, args.objective, args.search_seeds)
    validate(specs, env)
    workers = args.workers or default_workers(env.device)
    executor = "local" if args.executor == "slurm" else args.executor
    _check_journals(setups, out / TUNE_DIR)  # a damaged one: repaired, or refused right here
    print(
        f"tuning {len(setups)} studies of suite {args.suite!r} with {budget.label} each "
        f"(objective {args.objective}, {args.search_seeds} search seed(s), pruner "
        f"{args.pruner}) -> {out / TUNE_DIR}"
        + (f"; no search space (defaults only): {', '.join(untuned)}" if untuned else ""),
        file=sys.stderr,
    )
    return budget, env, specs, setups, workers, executor


def _tuned_specs(specs, setups, summaries) -> list:
    """The evaluation runs with each study's best hyperparameters."""
    from bench.tuning.search import tuned_spec

    tuned = []
    for setup, summary in zip(setups, summaries):
        if summary["best_value"] is None:
            print(f"warning: study {summary['study']} has no completed trial", file=sys.stderr)
            continue
        for s in specs:
            if (s.method, s.forget) == (setup.spec.method, setup.spec.forget):
                tuned.append(tuned_spec(s, summary["best_params"], summary["study"]))
    return tuned


def _run_tuned(args, env, specs, tuned, workers: int, executor: str) -> int:
    """The tuned runs (with the default ones as one SLURM job array), then the report."""
    from bench.execution.executors import run_specs
    from bench.protocol.plan import save_plan

    out = env.out
    save_plan(out, [*specs, *tuned], args.suite)  # for python -m bench.run --status --out OUT
    if args.executor == "slurm":  # the default and tuned rows as one job array
        from bench.run import launch_slurm

        return launch_slurm(args, [*specs, *tuned], env)
    results = run_specs(tuned, env, executor, workers)
    failed = sum(v == "failed" for v in results.values())
    skipped = sum(v == "skipped" for v in results.values())
    print(f"tuned runs: {len(tuned)} ({skipped} already done, {failed} failed); records in "
          f"{out / 'records'}", file=sys.stderr)  # fmt: skip
    if not args.no_report:
        from bench.run import build_report

        build_report(out)
    from reports.tuning import tuning_markdown

    text = tuning_markdown(out)
    if text:
        print(text)
    return 0


def budget_table(summaries: list[dict]) -> str:
    """One line per study: budget spent, default and best objective values, best params."""
    lines = ["study | trials | device-s | default | best | best hyperparameters", "-" * 60]
    for s in summaries:
        best = "-" if s["best_value"] is None else f"{s['best_value']:.3g}"
        default = "-" if s["default_value"] is None else f"{s['default_value']:.3g}"
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(s["best_params"].items()))
        lines.append(
            f"{s['study']} | {s['trials']} | {s['seconds']:.1f} | {default} | {best} | {params}"
        )
    return "\n".join(lines)


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    sys.exit(main())
