"""Command line: ``python -m bench.run --suite smoke [--out DIR] ...``.

Runs a suite (or an ad-hoc grid narrowed by --method/--dataset/--arch/--forget/--seeds), skips
every run already done under the output root, prints a mean ± std summary. Bad input gives one
line on stderr and exit status 2, before anything runs; runs that failed while none succeeded
give exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from bench.core.errors import ArgumentParser, BenchError, DataDamagedError, require

LISTABLE = ("methods", "datasets", "archs", "suites", "metrics")
#: largest seed: every generator the runs seed (torch, numpy, scikit-learn) takes 0..2**32-1
MAX_SEED = 2**32 - 1


def add_precision_args(p: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--pretrain-precision`` (``bench.core.runtime``): the same options for
    ``bench.run`` and ``bench.tune``."""
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="of the methods and the evaluation. auto (default): bf16 autocast on CUDA, fp32 "
        "on the CPU (recorded with each run)",
    )
    p.add_argument(
        "--pretrain-precision",
        default="fp32",
        choices=["fp32", "bf16", "auto"],
        help="of the shared models: the pretrained original and the oracles (default fp32, "
        "as the reference codes train them: every --precision then starts from the same "
        "original). bf16 or auto (bf16 on CUDA): faster, cached under keys of their own",
    )


def add_location_args(p: argparse.ArgumentParser) -> None:
    """Where data and the cache are (``--data-root``, ``--cache-dir``, ``--download``): the
    same options for ``bench.run`` and ``bench.eval``."""
    p.add_argument("--data-root", help="data folder (default $BENCH_DATA)")
    p.add_argument("--cache-dir", help="model/data cache (default $BENCH_CACHE or OUT/cache)")
    p.add_argument("--download", action="store_true", help="allow torchvision downloads")


def add_slurm_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The SLURM options (``--partition`` ... ``--slurm-extra``) of ``bench.run`` and
    ``bench.tune``, as one argument group (returned, so a command can add its own);
    :func:`bench.execution.cluster.options_from_args` turns them into :class:`SlurmOptions`."""
    s = p.add_argument_group("SLURM (--executor slurm)")
    s.add_argument("--partition", help="partition to submit to (default: the cluster's)")
    s.add_argument(
        "--gpus-per-job",
        type=int,
        help="GPUs per job (default: 1 for CIFAR/ImageNet suites, else 0)",
    )
    s.add_argument("--cpus-per-job", type=int, default=4, help="CPUs per job (default 4)")
    s.add_argument("--mem", help="memory per job, e.g. 32G (default: the partition's)")
    s.add_argument("--time", type=int, default=240, help="minutes per job (default 240)")
    s.add_argument(
        "--array-parallelism",
        type=int,
        default=64,
        help="at most this many tasks of an array at once (default 64)",
    )
    s.add_argument(
        "--runs-per-job",
        type=int,
        default=1,
        help="runs packed into one array task (default 1; raised to stay within 1000 tasks)",
    )
    s.add_argument(
        "--slurm-extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. --slurm-extra qos=high --slurm-extra account=lab",
    )
    return s


def add_selection_args(p: argparse.ArgumentParser) -> None:
    """What to run: the suite, narrowed or changed (methods, data, forget sets, seeds, the plan
    bound, hyperparameters, the data split, a checkpoint to start from)."""
    p.add_argument("--suite", help="suite name (--list suites); default smoke")
    p.add_argument(
        "--method",
        action="append",
        help="method name or wildcard, comma-separated or repeated (default: suite's)",
    )
    p.add_argument(
        "--dataset",
        help="dataset name (--list datasets) or folder:PATH, an image folder holding "
        "PATH/train/<class>/* and PATH/test/<class>/*; default: the suite's",
    )
    p.add_argument("--arch", help="architecture name or timm/<name>; default: dataset's")
    p.add_argument(
        "--forget",
        help="forget sets, comma-separated: 16 or k=16 (instances), "
        "10%% or frac=0.1, class=3 (whole class)",
    )
    p.add_argument("--seeds", help="seeds: 0,1,2 or 0-4 (default: the suite's)")
    p.add_argument(
        "--max-runs",
        type=int,
        default=100_000,
        metavar="N",
        help="refuse a plan of more than N runs, checked before it is built (default 100000)",
    )
    p.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="override a method hyperparameter, e.g. --hp neggrad.lr=0.01",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        help="hold out this fraction of train as validation (stratified)",
    )
    p.add_argument("--train-subset", type=int, help="use only N training images (CPU runs)")
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="start from these trained weights instead of pretraining: a state dict (or one "
        "under 'net', 'state_dict', 'model'; DataParallel's 'module.' prefix is fine) for "
        "--arch; identified by its sha256",
    )
    p.add_argument(
        "--normalize",
        metavar="MEANS/STDS",
        help="the input normalization the weights expect, when not the arch's or dataset's: "
        "per-channel means then stds, e.g. 0.4914,0.4822,0.4465/0.2023,0.1994,0.2010",
    )


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m bench.run",
        description="Run a machine-unlearning benchmark suite: pretrain (cached) -> forget set -> "
        "unlearn -> evaluate -> records.",
    )
    add_selection_args(p)
    p.add_argument("--out", help="output root (default results/<suite>)")
    add_location_args(p)
    p.add_argument(
        "--executor",
        default="local",
        choices=["local", "debug", "slurm"],
        help="local: worker processes on this machine (default); debug: in this process; "
        "slurm: job arrays through submitit (see the SLURM options)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="parallel runs with --executor local (default: one per CPU core on the CPU, one "
        "on a GPU)",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="summarize the runs of OUT's last launch (or of --suite): done, failed, running, "
        "queued, missing",
    )
    s = add_slurm_args(p)
    s.add_argument(
        "--wait",
        action="store_true",
        help="after submitting, wait for the jobs and print the summary",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    add_precision_args(p)
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile models for pretraining, retraining and oracles",
    )
    p.add_argument(
        "--save-model",
        action="store_true",
        help="keep each finished run's unlearned weights as OUT/models/<run_id>.pt (the model's "
        "state dict, for --checkpoint or python -m bench.eval) with its spec in "
        "OUT/models/<run_id>.json; continual runs keep the final model; runs already done are "
        "skipped and save nothing",
    )
    p.add_argument("--list", choices=LISTABLE, help="print registered names, one per line")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-summary", action="store_true", help="do not print the summary table")
    p.add_argument(
        "--no-report",
        action="store_true",
        help="do not build the report (tables, figures, index.html) in OUT/report",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _registry(kind: str):
    from bench.data import DATASETS
    from bench.metrics import METRICS
    from bench.models.archs import ARCHS
    from bench.suites.catalog import SUITES
    from bench.unlearning.method import METHODS

    return {
        "methods": METHODS,
        "datasets": DATASETS,
        "archs": ARCHS,
        "suites": SUITES,
        "metrics": METRICS,
    }[kind]


def parse_seeds(text: str, max_runs: int | None = None) -> list[int]:
    """``0,1,2`` or ``0-4`` (or both). More seeds than ``max_runs`` are refused before they
    are listed (``--seeds 0-9999999`` used to fill the memory)."""
    ranges: list[tuple[int, int]] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                ranges.append((int(a), int(b)))
            elif part:
                ranges.append((int(part), int(part)))
    except ValueError:
        raise BenchError(f"cannot read --seeds {text!r}: use 0,1,2 or 0-4") from None
    n = sum(max(0, b - a + 1) for a, b in ranges)
    if max_runs is not None and n > max_runs:
        raise BenchError(
            f"--seeds {text} lists {n:,} seeds, more than the limit of {max_runs:,} runs: "
            "narrow --seeds, or raise --max-runs"
        )
    seeds = [s for a, b in ranges for s in range(a, b + 1)]
    if not seeds:
        raise BenchError("--seeds is empty: use 0,1,2 or 0-4")
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise BenchError(f"--seeds {bad[0]} is out of range: seeds are integers 0..{MAX_SEED}")
    return seeds


def parse_hp(items: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not method or not name:
            raise BenchError(
                f"cannot read --hp {item!r}: use METHOD.KEY=VALUE, e.g. --hp neggrad.lr=0.01"
            )
        out.setdefault(method, {})[name] = value
    return out


def plan(args: argparse.Namespace):
    from bench.core.spec import ForgetSpec
    from bench.suites.catalog import SUITES

    grid = SUITES.get(args.suite or "smoke")
    methods = None
    if args.method is not None:  # given but empty ('') is an error, not "the suite's"
        methods = [m.strip() for item in args.method for m in item.split(",") if m.strip()]
        if not methods:
            raise BenchError(
                "--method is empty: name methods (--list methods) or leave it out for the suite's"
            )
    forgets = None
    if args.forget is not None:
        forgets = [ForgetSpec.parse(f) for f in args.forget.split(",")]
    max_runs = getattr(args, "max_runs", None)
    max_runs = 100_000 if max_runs is None else max_runs
    if max_runs < 1:
        raise BenchError(f"--max-runs must be >= 1 (got {max_runs})")
    seeds = parse_seeds(args.seeds, max_runs) if args.seeds is not None else None
    data_over = {}
    if args.val_fraction is not None:
        data_over["val_fraction"] = args.val_fraction
    if args.train_subset is not None:
        data_over["train_subset"] = args.train_subset
    from bench.core.spec import parse_normalize
    from bench.data import data_root

    normalize = parse_normalize(args.normalize) if args.normalize is not None else None
    return grid.expand(
        methods=methods,
        dataset=args.dataset,
        arch=args.arch,
        forgets=forgets,
        seeds=seeds,
        hp_overrides=parse_hp(args.hp),
        data_overrides=data_over,
        checkpoint=args.checkpoint or "",
        normalize=normalize,
        data_root=data_root(args.data_root),
        max_runs=max_runs,
    )


def validate(specs, env) -> None:
    """Fail fast on user errors before any run starts: data present, forget sets possible,
    architectures known, methods' data needs satisfiable."""
    from bench.data import carve, load_dataset, select_forget
    from bench.models.archs import ARCHS
    from bench.unlearning.method import make_hparams, method_needs, method_special_pretraining

    seen = set()
    for s in specs:
        if s.arch.startswith("timm/"):
            check_timm(s.arch[len("timm/") :])
        else:
            ARCHS.entry(s.arch)
        hp = make_hparams(s.method, s.hparams_dict)
        needs = method_needs(s.method, hp)
        method_special_pretraining(s.method, hp)  # validates e.g. mnemonic's t_mix, code_space
        if "val" in needs and not s.data.val_fraction and _own_val(s, env) is None:
            raise BenchError(
                f"method {s.method!r} needs a validation split: add --val-fraction 0.1"
            )
        if s.checkpoint and (s.checkpoint, s.arch, s.data.name, s.normalize) not in seen:
            seen.add((s.checkpoint, s.arch, s.data.name, s.normalize))
            _check_checkpoint(s, env)
        elif s.normalize is not None and (s.data.name, s.normalize) not in seen:
            seen.add((s.data.name, s.normalize))
            _check_normalize(s, load_dataset(s.data.name, env.locations))
        key = (s.data, s.forget, s.forget_seed)
        if key in seen:
            continue
        seen.add(key)
        bundle = load_dataset(s.data.name, env.locations)
        carved = carve_checked(carve, bundle, s.data)
        targets = bundle.train.targets.index_select(0, carved.train)
        forget = select_forget(targets, s.forget, s.forget_seed)
        if len(forget) >= len(carved.train):
            raise BenchError(
                f"forget set {s.forget.label} is the whole training split of {s.dataset} "
                f"({len(carved.train)} images): nothing is left to retain; forget fewer "
                "classes or instances"
            )


def _check_normalize(spec, bundle) -> None:
    """``--normalize`` gives one mean and std per channel of the data (or one for all)."""
    means, stds = spec.normalize
    c = bundle.input_shape[0]
    if len(means) not in (1, c):
        raise BenchError(
            f"--normalize has {len(means)} means and stds, but {spec.dataset} has {c} "
            f"channel(s): give one mean and one std per channel (or one of each for all)"
        )


def _check_checkpoint(spec, env) -> None:
    """The imported weights load into the run's architecture (one line naming the first
    mismatching keys otherwise), and the methods that need their own pretraining refuse them."""
    from bench.data import load_dataset
    from bench.models.checkpoint import cached_state_dict, load_into
    from bench.models.train import fresh_model
    from bench.unlearning.method import special_pretraining

    if special_pretraining(spec) is not None:
        raise BenchError(
            f"method {spec.method!r} needs its own pretraining ({special_pretraining(spec)}) and "
            f"cannot start from --checkpoint: leave it out of --method"
        )
    sd, source = cached_state_dict(env.cache, spec.checkpoint)
    bundle = load_dataset(spec.data.name, env.locations)
    if spec.normalize is not None:
        _check_normalize(spec, bundle)
    model = fresh_model(bundle, spec.arch, 0, normalize=spec.normalize)
    load_into(model, sd, f"checkpoint {source or spec.checkpoint} (--arch {spec.arch})")


def _own_val(spec, env):
    """The dataset's own validation split (a ``folder:`` dataset's ``val/``), or None."""
    from bench.data import load_dataset

    return load_dataset(spec.data.name, env.locations).val


def carve_checked(carve, bundle, data):
    """``carve(bundle, data)`` with the carving options checked against the split sizes: a
    ``train_subset`` larger than the split is an error (it used to be clamped silently), and
    a ``val_fraction`` that cannot be split per class names the option to change."""
    import dataclasses

    try:
        whole = carve(bundle, dataclasses.replace(data, train_subset=None))
    except BenchError:
        raise
    except ValueError as exc:  # scikit-learn's stratified split of a tiny part
        raise BenchError(
            f"cannot hold out --val-fraction {data.val_fraction} of the {data.name} train split "
            f"({exc}): use a smaller fraction, e.g. 0.1"
        ) from None
    if data.train_subset is not None and data.train_subset > len(whole.train):
        raise BenchError(
            f"--train-subset {data.train_subset} is larger than the {data.name} train split "
            f"({len(whole.train)} images{' after --val-fraction' if data.val_fraction else ''}"
            f"): use at most {len(whole.train)}, or leave it out"
        )
    if data.test_subset is not None and data.test_subset > len(bundle.test):
        raise BenchError(
            f"test_subset {data.test_subset} is larger than the {data.name} test split "
            f"({len(bundle.test)} images): use at most {len(bundle.test)}"
        )
    return carve(bundle, data) if data.train_subset is not None else whole


def check_timm(name: str) -> None:
    """An unknown ``timm/<name>`` is an error before anything runs (timm's model list is
    local: no network)."""
    try:
        import timm
    except ImportError:
        raise BenchError(f"--arch timm/{name} needs timm: pip install timm") from None
    if not timm.is_model(name):
        import difflib

        near = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join('timm/' + n for n in near)}?" if near else "see"
        raise BenchError(
            f"timm has no model {name!r}: {hint} timm.list_models('*{name.split('_')[0]}*')"
        )


def check_args(args: argparse.Namespace) -> None:
    """Options that are meaningless whatever the suite: an error before anything runs."""
    import math

    for opt in (
        "suite",
        "dataset",
        "arch",
        "out",
        "cache_dir",
        "data_root",
        "device",
        "checkpoint",
        "normalize",
    ):
        if getattr(args, opt) is not None and not getattr(args, opt).strip():
            flag = "--" + opt.replace("_", "-")
            raise BenchError(f"{flag} is empty: give a value or leave the option out")
    if args.workers is not None and args.workers < 1:
        raise BenchError(
            f"--workers must be >= 1 (got {args.workers}); leave it out for the default"
        )
    v = args.val_fraction
    if v is not None and not (math.isfinite(v) and 0 <= v < 1):
        raise BenchError(f"--val-fraction must be in [0, 1), e.g. 0.1 (got {v})")
    if args.train_subset is not None and args.train_subset < 1:
        raise BenchError(f"--train-subset must be >= 1 (got {args.train_subset})")
    for opt, low in (
        ("time", 1),
        ("runs_per_job", 1),
        ("array_parallelism", 1),
        ("cpus_per_job", 1),
        ("gpus_per_job", 0),
    ):
        value = getattr(args, opt)
        if value is not None and value < low:
            flag = "--" + opt.replace("_", "-")
            raise BenchError(f"{flag} must be >= {low} (got {value})")
    from bench.execution.cluster import parse_extra

    parse_extra(args.slurm_extra)
    if args.executor == "slurm" and not getattr(args, "dry_run", False):
        require("submitit", "--executor slurm")  # before any work, not at the launch


def check_writable_dir(path: Path, what: str) -> None:
    """Raise unless ``path`` is a folder this process can write in, or can be made one (its
    nearest existing ancestor is a writable folder). Leaves nothing behind."""
    import tempfile

    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == Path(path).absolute() else f"is under a file ({probe})"
        raise BenchError(f"{what} {path} {where}: choose a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise BenchError(
            f"{what} {path} is not writable ({probe}: {exc.strerror or exc}): choose a "
            "writable folder"
        ) from None


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``docker stop``, the end of a SLURM job), raised in the main thread so
    that it takes Ctrl-C's path: in-flight runs abandoned, finished ones kept, a resume hint."""


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated


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
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: no handler
        previous = None
    try:
        if args.list:
            reg = _registry(args.list)
            for name in reg.list():
                print(_describe(reg, name) if args.verbose else name)
            return 0
        return _run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. plan.json on a full disk: one line, like a DiskFullError
        from bench.core.records import disk_error, disk_full_message

        full = disk_error(exc)
        if full is None:
            raise
        print(f"error: {disk_full_message(full)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `--list methods | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        term = isinstance(exc, Terminated)
        print(
            f"{'terminated (SIGTERM)' if term else 'interrupted'}: finished runs are kept; rerun "
            "the same command to resume",
            file=sys.stderr,
        )
        return 143 if term else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _describe(reg, name: str) -> str:
    """``name  key=value ...  first docstring line`` for ``--list X -v``."""
    entry = reg.entry(name)
    meta = {k: v for k, v in entry.meta.items() if isinstance(v, (str, int, float)) and v != ""}
    if entry.meta.get("references"):  # the Reference lines below say it with the commit
        meta.pop("reference", None)
    meta.pop("no_reference", None)
    desc = (
        meta.pop("description", "")
        or meta.pop("summary", "")
        or (getattr(entry.obj, "__doc__", "") or "").strip()
    )
    first = desc.splitlines()[0] if desc else ""
    tags = "  ".join(f"{k}={v}" for k, v in meta.items())
    line = f"{name:22s} {tags}  {first}".rstrip()
    if reg.kind in ("method", "metric"):  # the reference code at a commit, and the deviations
        from bench.core.reference import describe

        line = "\n".join([line, *describe(entry.meta)])
    return line


def _run(args: argparse.Namespace) -> int:
    """``python -m bench.run`` once the arguments are read: check, plan, then status, a dry
    run, a SLURM launch or local runs."""
    check_args(args)
    device = _device(args)
    launched = _launched_plan(args) if args.status and not args.suite and args.out else None
    suite = args.suite or "smoke"
    env = _env(args, device, suite)
    if args.status:
        from bench.execution.cluster import status_text
        from bench.protocol.plan import distinct_runs

        specs = launched if launched is not None else plan(args)
        print(status_text(env.out, distinct_runs(specs)[0], verbose=args.verbose))
        return 0
    from bench.protocol.plan import distinct_runs

    specs, duplicates = distinct_runs(plan(args))  # e.g. --seeds 0,0: one run, said so
    if not specs:
        raise BenchError("the selection matches no run")
    check_writable_dir(env.out, "--out")
    cache_opt = (
        "--cache-dir" if args.cache_dir else "$BENCH_CACHE" if os.environ.get("BENCH_CACHE") else ""
    )
    check_writable_dir(env.cache, cache_opt or "the cache folder (--cache-dir)")
    if args.dry_run:
        try:
            validate(specs, env)
        except BenchError as exc:  # the data may live where the jobs run, not here
            if isinstance(exc, DataDamagedError):  # but what is here is unsafe or damaged
                raise
            print(f"warning: {exc}", file=sys.stderr)
        return _dry_run(args, specs, env)
    _launch_checks(args, specs, env, suite, duplicates)
    if args.executor == "slurm":
        return launch_slurm(args, specs, env)
    return _run_locally(args, specs, env, suite, duplicates)


def _device(args: argparse.Namespace):
    """``--device`` checked (one of cpu, cuda, cuda:N; a GPU visible unless SLURM's jobs
    choose it), or the default device."""
    import torch

    from bench.protocol.stages import default_device

    if not args.device:
        return default_device()
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise BenchError(f"unknown --device {args.device!r}: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):  # meta, mps, xpu...: not a device runs work on
        raise BenchError(f"--device {args.device!r} cannot run the suites: use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available() and args.executor != "slurm":
        raise BenchError("--device cuda but no CUDA GPU is visible; use --device cpu")
    return device


def _launched_plan(args: argparse.Namespace):
    """``--status --out OUT`` without ``--suite``: the runs of the launch recorded there."""
    from bench.protocol.plan import load_plan

    launched = load_plan(Path(args.out))
    if launched is None:
        raise BenchError(
            f"no launch recorded in {args.out} (no plan.json): pass the --suite (and "
            "options) it was launched with"
        )
    return launched


def _env(args: argparse.Namespace, device, suite: str):
    from bench.data import data_root
    from bench.protocol.stages import Env

    return Env(
        out=Path(args.out) if args.out else Path("results") / suite,
        cache=args.cache_dir,
        data_root=data_root(args.data_root),
        download=args.download,
        device=device,
        precision=args.precision,
        pretrain_precision=args.pretrain_precision,
        compile=args.compile,
        save_model=args.save_model,
    )


def _launch_checks(args, specs, env, suite: str, duplicates: int) -> None:
    """Before any run: stale leftovers cleaned, checkpoints imported, every spec validated;
    then the plan line and ``plan.json``."""
    from bench.core.files import clean_stale, leftover_folders
    from bench.core.records import run_status
    from bench.models.checkpoint import import_references
    from bench.protocol.plan import save_plan

    out = env.out
    clean_stale(leftover_folders(out, env.cache))  # of killed launches: dead owners only
    import_references([s.checkpoint for s in specs], env.cache)  # --checkpoint: into the cache
    validate(specs, env)
    done = sum(run_status(out, s.run_id) == "done" for s in specs)
    if args.save_model:
        _warn_unsaved(out, specs)
    dup = f"; {duplicates} duplicate runs planned once" if duplicates else ""
    print(
        f"{len(specs)} runs in suite {suite!r} ({done} already done{dup}) -> {out}", file=sys.stderr
    )
    save_plan(out, specs, suite)


def _run_locally(args, specs, env, suite: str, duplicates: int) -> int:
    """The runs on this machine (``--executor local`` or ``debug``), with a progress bar, the
    counts, the summary and the report; exit 1 when every run of this invocation failed."""
    import contextlib

    from tqdm.contrib.logging import logging_redirect_tqdm

    from bench.core.errors import DiskFullError
    from bench.execution.executors import default_workers, run_specs

    out = env.out
    bar = _progress_bar(args, len(specs), suite)
    counts = {"done": 0, "skipped": 0, "failed": 0}

    def on_result(spec, status):
        counts[status] = counts.get(status, 0) + 1
        if bar is not None:
            bar.set_postfix_str(f"{spec.method} {status}", refresh=False)
            bar.update(1)

    workers = args.workers or default_workers(env.device)
    # this process's warnings above the bar, not onto it (the workers': bench.execution.lifeline)
    redirect = logging_redirect_tqdm() if bar is not None else contextlib.nullcontext()
    try:
        with redirect:
            results = run_specs(specs, env, args.executor, workers, on_result=on_result)
    except DiskFullError:  # the counts so far, then main's one error line
        if bar is not None:
            bar.close()
        print(_counts_line(counts, duplicates, out), file=sys.stderr)
        raise
    if bar is not None:
        bar.close()
    print(_counts_line(counts, duplicates, out), file=sys.stderr)
    if not args.no_summary:
        _print_summary(out, list(results))
    if not args.no_report:
        build_report(out)
    if counts["failed"] and not (counts["done"] or counts.get("done-elsewhere")):
        # valid input (so not 2), but no run of this invocation succeeded
        print(
            f"error: every run of this invocation failed ({counts['failed']}); the reasons are "
            f"in their records under {out / 'records'}",
            file=sys.stderr,
        )
        return 1
    return 0


def _progress_bar(args, total: int, suite: str):
    if args.no_progress:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=suite,
        unit="run",
        file=sys.stderr,
        disable=None if os.environ.get("CI") else False,
    )


def _warn_unsaved(out: Path, specs) -> None:
    """``--save-model`` keeps the models of the runs that run now: say so when runs already
    done (skipped) have none."""
    from bench.core.records import run_status
    from bench.models.saved_models import has_saved_model

    unsaved = [
        s
        for s in specs
        if run_status(out, s.run_id) == "done" and not has_saved_model(out, s.run_id)
    ]
    if unsaved:
        print(
            f"warning: --save-model: {len(unsaved)} run(s) already done in {out} have no saved "
            f"model and are skipped (e.g. {unsaved[0].run_id}); use another --out to run them "
            "again with their models kept",
            file=sys.stderr,
        )


def _counts_line(counts: dict[str, int], duplicates: int, out: Path) -> str:
    """``new N, skipped M (already done), failed F[, done by another launcher D][, running in
    another launcher R][, K duplicate runs planned once]; records in OUT/records``."""
    extra = [
        f"{label} {counts[key]}"
        for key, label in (
            ("done-elsewhere", "done by another launcher"),
            ("running-elsewhere", "running in another launcher"),
        )
        if counts.get(key)
    ]
    if duplicates:
        extra.append(f"{duplicates} duplicate runs planned once")
    return (
        f"new {counts['done']}, skipped {counts['skipped']} (already done), "
        f"failed {counts['failed']}{''.join(', ' + e for e in extra)}; records in {out / 'records'}"
    )


def _dry_run(args: argparse.Namespace, specs, env) -> int:
    """The plan: stages, cached and to-do, estimated GPU-hours; each run when there are at most
    200 (or with -v). Submits and runs nothing; needs no scheduler."""
    from bench.protocol.plan import describe, make_plan

    p = make_plan(specs, env.out, env.cache)
    print(
        f"plan for suite {args.suite or 'smoke'!r} -> {env.out} (executor {args.executor}; dry "
        "run: nothing is run or submitted)"
    )
    print(describe(p, args.executor, args.runs_per_job))
    if args.verbose or len(specs) <= 200:
        print()
        for s in specs:
            print(
                f"{s.run_id}  {p.runs_status[s.run_id]:7s}  {s.method:16s} {s.dataset} "
                f"{s.arch} {s.forget.label} seed={s.seed}"
            )
    return 0


def launch_slurm(args: argparse.Namespace, specs, env) -> int:
    from bench.execution.cluster import JobEnv, describe_launch, launch, options_from_args, wait
    from bench.protocol.plan import make_plan

    opts = options_from_args(args)
    jenv = JobEnv(
        out=str(env.out.resolve()),
        cache=str(Path(env.cache).resolve()),
        data_root=str(Path(env.data_root).resolve()) if env.data_root else None,
        download=env.download,
        device=args.device,
        precision=env.precision,
        pretrain_precision=env.pretrain_precision,
        compile=env.compile,
        save_model=env.save_model,
    )
    res = launch(make_plan(specs, env.out, env.cache), jenv, opts, env.out, not args.no_report)
    print(describe_launch(res))
    print(f"follow with: python -m bench.run --status --out {env.out}")
    if getattr(args, "wait", False) and res.job_ids:  # bench.tune has no --wait
        wait(res.job_ids, env.out, specs)
        if not args.no_summary:
            _print_summary(env.out, [s.run_id for s in specs])
    return 0


def build_report(out: Path) -> None:
    """``python -m reports.build OUT`` after a suite; a failing report never fails the runs."""
    try:
        from reports.build import build

        paths = build(out)
        index = [p for p in paths if Path(p).name == "index.html"]
        if index:
            print(f"report: {index[0]}")
    except Exception as exc:  # noqa: BLE001 - the records are safe; say so and go on
        print(
            f"warning: the report could not be built ({type(exc).__name__}: {exc}); "
            f"records are in {out}/records, retry with python -m reports.build {out}",
            file=sys.stderr,
        )


def _print_summary(out: Path, run_ids: list[str]) -> None:
    import pandas as pd

    from reports.aggregate import format_mean_std, load, summary_table

    metrics, runs = load(out, run_ids)
    table = format_mean_std(summary_table(metrics))
    if not table.empty:
        with pd.option_context(
            "display.width", 200, "display.max_columns", 20, "display.max_rows", 500
        ):
            print(table.to_string())
    if not runs.empty:
        failed = runs[runs["status"] == "failed"]
        for _, r in failed.iterrows():
            print(f"FAILED {r['run_id']} {r['method']} seed={r['seed']}: {r['error']}")


if __name__ == "__main__":
    sys.exit(main())
