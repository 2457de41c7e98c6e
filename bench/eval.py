"""Command line: ``python -m bench.eval``, score a model unlearned elsewhere.

``--original ORIG.pt`` is the model before unlearning and ``--unlearned OUT.pt`` the model after
(checkpoints in any layout :mod:`bench.models.checkpoint` reads, the harness's own ``--save-model``
files included); ``--forget`` names the forget set as ``bench.run`` draws it (``16``,
``class=3``, ``10%``, with ``--forget-seed``) or ``--forget-file`` lists its train positions.

The models go through ``bench.protocol.stages.run`` with the unlearned model in the method's place
(:class:`bench.protocol.stages.Supplied`): the same data carving, forget set, "before" and "after"
evaluations and record format as a registered method's run, so the records join the report,
the retrain gaps and the leaderboard. Such a record's method is ``--name`` (default
``external``); its meta line says ``"external": true`` with every file's path and sha256.
Its run id hashes the spec, whose ``checkpoint`` is the original's sha256 and whose
hyperparameters hold the unlearned files' sha256s (``unlearned``) and an index file's digest
(``forget_file``): the same command again skips the done run.

With ``--pool K`` the oracle pool (K models retrained without the forget set,
:mod:`bench.protocol.oracle`, cached) is built or loaded: FQS needs only the pool; KLOM, the
challenge
score and U-LiRA also need K unlearned replicas (``--unlearned`` given K times, the first the
scored model), as a registered method's run makes them; with fewer they are not computed and
a note names them, and more than K is an error.

Bad input (a missing file, weights that do not fit ``--arch``, an unknown name, a forget index
out of range) gives one line ``error: ...`` on stderr and exit status 2, before anything is
evaluated; a run that fails is recorded as failed and gives exit status 1.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import re
import sys
from pathlib import Path
from typing import Any

from bench.core.errors import ArgumentParser, BenchError

#: metrics that read the oracle pool; the first three also the unlearned replicas
POOL_METRICS = ("klom", "klom_easydub", "challenge_score", "fqs", "ulira")
REPLICA_METRICS = ("klom", "klom_easydub", "challenge_score", "ulira")
#: the label of the forget set given as an index file (its positions' digest)
FILE_LABEL = "idx={}"


def _add_forget_args(p: argparse.ArgumentParser) -> None:
    """The forget set and the train split it is drawn from, as the run had them."""
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--forget",
        metavar="SPEC",
        help="the forget set as bench.run draws it: 16 or k=16 (instances), 10%% or frac=0.1, "
        "class=3; with --forget-seed",
    )
    g.add_argument(
        "--forget-file",
        metavar="IDX",
        help="the forget set as train positions (0-based rows of the train split as carved): "
        ".txt (integers separated by spaces, commas or lines; # comments), .npy or .pt",
    )
    p.add_argument(
        "--forget-seed",
        type=int,
        metavar="N",
        help="seed of the forget set drawn by --forget (bench.run --seeds N draws it with N); "
        "default 0",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        help="hold out this fraction of train as validation, as the run did (it changes the "
        "train split that forget sets are drawn from)",
    )
    p.add_argument(
        "--train-subset", type=int, metavar="N", help="only N training images, as the run did"
    )


def parser() -> argparse.ArgumentParser:
    from bench.run import add_location_args

    p = ArgumentParser(
        prog="python -m bench.eval",
        description="Score a model unlearned elsewhere: the harness's metrics on the original "
        "and the unlearned checkpoints, written as ordinary run records (report, retrain gaps, "
        "leaderboard).",
    )
    p.add_argument(
        "--original",
        required=True,
        metavar="ORIG.pt",
        help="the model before unlearning: a state dict (or one under 'net', 'state_dict', "
        "'model'; 'module.' prefixes are fine), or a --save-model / cache file",
    )
    p.add_argument(
        "--unlearned",
        required=True,
        action="append",
        metavar="OUT.pt",
        help="the unlearned model (same layouts); repeat it to give replicas for the pool "
        "metrics (the first is the one scored)",
    )
    p.add_argument("--arch", required=True, help="architecture of both models (--list archs)")
    p.add_argument(
        "--dataset",
        required=True,
        help="dataset name (python -m bench.run --list datasets) or folder:PATH",
    )
    _add_forget_args(p)
    p.add_argument(
        "--retain-eval",
        type=int,
        metavar="N",
        help="score D_r on a fixed seeded sample of N retained images, as the run's suite did "
        "(DataSpec.retain_eval, e.g. l2ul-cifar10-r20); default: all of D_r",
    )
    p.add_argument(
        "--pool",
        type=int,
        default=0,
        metavar="K",
        help="build / load the oracle pool of K retrained models and compute the pool metrics "
        "(KLOM, challenge score and U-LiRA need K --unlearned replicas, and K >= 3 for the "
        "last two, as in bench.run; FQS needs the pool alone)",
    )
    p.add_argument(
        "--name",
        default="external",
        help="the method name in the records and tables (default external; not a registered "
        "method's name)",
    )
    p.add_argument(
        "--metrics",
        help="comma-separated metric names, or 'all' (every registered metric); default: the "
        "smoke suite's cheap metrics, plus the pool metrics with --pool",
    )
    p.add_argument(
        "--normalize",
        metavar="MEANS/STDS",
        help="the input normalization the weights expect, when not the arch's or dataset's",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="the record's seed and the evaluation's own randomness (ZRF's random model), as "
        "bench.run's seed (default: --forget-seed)",
    )
    p.add_argument(
        "--out",
        default="results/eval",
        help="output root (default results/eval); a bench.run --out puts the records beside "
        "its runs (one report)",
    )
    add_location_args(p)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


# ---------------------------------------------------------------------------------------------
# input


def _check_range(path: Path, bad: list[int], n_train: int) -> None:
    if bad:
        raise BenchError(
            f"--forget-file {path}: {len(bad)} position(s) out of range (e.g. {bad[0]}): "
            f"the train split has {n_train} images, positions 0..{n_train - 1}"
        )


def read_indices(path: str | Path, n_train: int):
    """The sorted train positions listed in ``path`` (.txt, .npy or .pt; see ``--forget-file``),
    checked: integers, at least one, none repeated, all in ``0..n_train-1``, fewer than
    ``n_train``."""
    import numpy as np
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchError(f"--forget-file {path} does not exist: give a .txt, .npy or .pt file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            values = obj.numpy() if torch.is_tensor(obj) else np.asarray(obj)
        else:
            text = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
            ints = [int(t) for t in re.split(r"[\s,;]+", text) if t]
            _check_range(path, [v for v in ints if not 0 <= v < n_train], n_train)
            values = np.asarray(ints, dtype=np.int64)  # in range: no int64 overflow
    except (ValueError, OSError, RuntimeError, UnicodeDecodeError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BenchError(
            f"cannot read --forget-file {path} ({first}): give integers in a .txt file "
            "(spaces, commas or lines), or an integer array in a .npy or .pt file"
        ) from None
    values = np.asarray(values)
    if values.dtype.kind not in "iu" or values.ndim != 1:
        raise BenchError(
            f"--forget-file {path} holds a {values.dtype} array of shape {values.shape}: give "
            "a 1-d list of integer train positions"
        )
    if values.size == 0:
        raise BenchError(f"--forget-file {path} lists no position: forget at least one image")
    _check_range(path, values[(values < 0) | (values >= n_train)].tolist(), n_train)
    unique = np.unique(values)
    if unique.size != values.size:
        raise BenchError(
            f"--forget-file {path} repeats {values.size - unique.size} position(s): list each "
            "forgotten image once"
        )
    if unique.size >= n_train:
        raise BenchError(
            f"--forget-file {path} lists the whole train split ({n_train} images): nothing is "
            "left to retain"
        )
    return torch.from_numpy(unique.astype(np.int64))


def resolve_metrics(text: str | None, pool: int, n_unlearned: int) -> tuple[tuple, list[str]]:
    """``(metrics, notes)``: the metric names to compute and what is left out and why."""
    from bench.metrics import METRICS
    from bench.suites.catalog import CHEAP_METRICS, EXPENSIVE_METRICS

    if text is None or not text.strip():
        names = [*CHEAP_METRICS, *(POOL_METRICS if pool else ())]
    elif text.strip() == "all":
        names = [*CHEAP_METRICS, *EXPENSIVE_METRICS]
        names += [m for m in METRICS.list() if m not in names]
        if not pool:
            names = [m for m in names if m not in POOL_METRICS]
    else:
        names = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
        for m in names:
            METRICS.entry(m)  # an unknown name: the nearest ones
        needing = [m for m in names if m in POOL_METRICS]
        if needing and not pool:
            raise BenchError(
                f"--metrics {', '.join(needing)} read(s) the oracle pool: add --pool K (K "
                "retrained models, and K --unlearned replicas for klom, klom_easydub, "
                "challenge_score, ulira)"
            )
    notes = []
    if pool and n_unlearned < pool:
        left = [m for m in names if m in REPLICA_METRICS]
        if left:
            names = [m for m in names if m not in REPLICA_METRICS]
            notes.append(
                f"{', '.join(left)} not computed: they compare K={pool} unlearned replicas with "
                f"the K oracle models and --unlearned was given {n_unlearned} time(s); give "
                f"{pool} (the first is the scored model)"
            )
    return tuple(names), notes


def _device(text: str | None):
    import torch

    from bench.protocol.stages import default_device

    if not text:
        return default_device()
    try:
        device = torch.device(text)
    except RuntimeError:
        raise BenchError(f"unknown --device {text!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda but no CUDA GPU is visible; use --device cpu")
    return device


def _check_args(args: argparse.Namespace) -> None:
    from bench.run import MAX_SEED

    for opt in ("original", "arch", "dataset", "out", "name", "forget", "forget_file"):
        value = getattr(args, opt)
        if value is not None and not value.strip():
            raise BenchError(f"--{opt.replace('_', '-')} is empty: give a value")
    if any(not u.strip() for u in args.unlearned):
        raise BenchError("--unlearned is empty: give the path of the unlearned checkpoint")
    for opt in ("forget_seed", "seed"):
        v = getattr(args, opt)
        if v is not None and not 0 <= v <= MAX_SEED:
            raise BenchError(f"--{opt.replace('_', '-')} {v} is out of range: 0..{MAX_SEED}")
    if args.forget_file and args.forget_seed is not None:
        raise BenchError("--forget-seed draws a --forget set; an index file needs no seed")
    if args.pool < 0:
        raise BenchError(f"--pool must be >= 1 (got {args.pool}); leave it out for no pool")
    if args.pool and len(args.unlearned) > args.pool:
        raise BenchError(
            f"--pool {args.pool} but --unlearned was given {len(args.unlearned)} times: the pool "
            f"metrics compare K={args.pool} unlearned replicas with K oracle models; give at most "
            f"{args.pool}, or a larger --pool"
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", args.name):
        raise BenchError(
            f"--name {args.name!r}: use letters, digits and _ . + - (it names the method in "
            "the tables)"
        )
    from bench.unlearning.method import METHODS

    if args.name in METHODS:
        raise BenchError(
            f"--name {args.name} is a registered method: give the external model a name of its "
            f"own (e.g. {args.name}_ext), so that its records never mix with the method's runs"
        )
    if args.retain_eval is not None and args.retain_eval < 1:
        raise BenchError(f"--retain-eval must be >= 1 (got {args.retain_eval})")
    if args.train_subset is not None and args.train_subset < 1:
        raise BenchError(f"--train-subset must be >= 1 (got {args.train_subset})")
    v = args.val_fraction
    if v is not None and not 0 <= v < 1:
        raise BenchError(f"--val-fraction must be in [0, 1), e.g. 0.1 (got {v})")


def prepare(args: argparse.Namespace):
    """``(spec, supplied, env)`` from the command line, every input checked (one
    :class:`BenchError` otherwise): the data and forget set, the original imported into the
    cache, every unlearned file read and fitted to the architecture."""
    from bench.core.spec import RunSpec
    from bench.protocol.stages import Supplied
    from bench.suites.catalog import dataset_defaults

    _check_args(args)
    _, recipe = dataset_defaults(args.dataset)  # an unknown dataset: the nearest names
    env = _eval_env(args)
    data, bundle, carved, normalize = _eval_data(args, env)
    files: dict[str, Any] = {}
    hp: dict[str, Any] = {}
    forget, forget_seed, label, positions = _eval_forget(args, data, bundle, carved, files, hp)
    seed = args.seed if args.seed is not None else forget_seed
    ref, sds, names = _eval_models(args, bundle, normalize, env, files, hp)
    pool = args.pool
    if pool and recipe.epochs == 0:
        raise BenchError(
            f"--pool retrains {args.arch} from scratch on {data.name}, whose default recipe "
            "trains 0 epochs: the pool metrics need a dataset with a training recipe"
        )
    metrics, notes = resolve_metrics(args.metrics, pool, len(sds))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    spec = RunSpec(
        method=args.name,
        data=data,
        arch=args.arch,
        recipe=recipe,
        forget=forget,
        hparams=RunSpec.hparams_tuple(hp),
        seed=seed,
        train_seed=0,
        forget_seed=forget_seed,
        unlearn_seed=seed,
        metrics=metrics,
        suite="external",
        pool_size=pool,
        checkpoint=ref,
        normalize=normalize,
    )
    meta = {"external": True, "files": files, "replicas": len(sds)}
    supplied = Supplied(sds, names, positions, label, meta)
    return spec, supplied, env


def _eval_env(args: argparse.Namespace):
    """The architecture checked, and the environment with writable output and cache."""
    from bench.data import data_root
    from bench.models.archs import ARCHS
    from bench.protocol.stages import Env
    from bench.run import check_timm, check_writable_dir

    if args.arch.startswith("timm/"):
        check_timm(args.arch[len("timm/") :])
    else:
        ARCHS.entry(args.arch)
    env = Env(
        out=Path(args.out),
        cache=args.cache_dir,
        data_root=data_root(args.data_root),
        download=args.download,
        device=_device(args.device),
    )
    check_writable_dir(env.out, "--out")
    check_writable_dir(env.cache, "--cache-dir" if args.cache_dir else "the cache folder")
    return env


def _eval_data(args: argparse.Namespace, env):
    """``(data spec, bundle, carved splits, normalization)`` of the command line."""
    from bench.core.spec import DataSpec, parse_normalize
    from bench.data import carve, load_dataset
    from bench.run import carve_checked

    data = DataSpec(args.dataset)
    if args.val_fraction:
        data = DataSpec(args.dataset, val_fraction=args.val_fraction)
    if args.train_subset is not None:
        data = DataSpec(data.name, data.val_fraction, args.train_subset)
    if args.retain_eval is not None:
        data = dataclasses.replace(data, retain_eval=args.retain_eval)
    bundle = load_dataset(data.name, env.locations)
    carved = carve_checked(carve, bundle, data)
    normalize = None
    if args.normalize is not None:
        normalize = parse_normalize(args.normalize, bundle.input_shape[0])
        if len(normalize[0]) != bundle.input_shape[0]:
            raise BenchError(
                f"--normalize has {len(normalize[0])} means and stds, but {data.name} has "
                f"{bundle.input_shape[0]} channel(s)"
            )
    return data, bundle, carved, normalize


def _eval_forget(args, data, bundle, carved, files: dict, hp: dict):
    """``(forget spec, forget seed, label, positions)``: from ``--forget-file`` (its digest
    and file in ``hp`` and ``files``), or drawn as ``--forget`` says."""
    from bench.core.spec import ForgetSpec
    from bench.data import select_forget
    from bench.models.checkpoint import file_sha256
    from bench.protocol.oracle import positions_digest

    n_train = len(carved.train)
    if args.forget_file:
        positions = read_indices(args.forget_file, n_train)
        digest = positions_digest(positions)
        hp["forget_file"] = digest
        path = Path(args.forget_file).expanduser()
        files["forget_file"] = {
            "path": str(path.resolve()),
            "sha256": file_sha256(path),
            "positions": digest,
        }
        forget = ForgetSpec("instance", k=int(positions.numel()))
        return forget, 0, FILE_LABEL.format(digest[:8]), positions
    forget = ForgetSpec.parse(args.forget)
    forget_seed = args.forget_seed or 0
    targets = bundle.train.targets.index_select(0, carved.train)
    if len(select_forget(targets, forget, forget_seed)) >= n_train:
        raise BenchError(
            f"forget set {forget.label} is the whole training split of {data.name} "
            f"({n_train} images): nothing is left to retain"
        )
    return forget, forget_seed, None, None


def _eval_models(args, bundle, normalize, env, files: dict, hp: dict):
    """``(original's cache reference, unlearned state dicts, their paths)``: every file read
    and fitted to the architecture; their hashes in ``hp`` and ``files``."""
    from bench.models.checkpoint import file_sha256, import_checkpoint, load_into, read_state_dict
    from bench.models.train import fresh_model

    model = fresh_model(bundle, args.arch, 0, normalize=normalize)
    orig = Path(args.original).expanduser()
    what = f"original checkpoint {orig} (--arch {args.arch})"
    load_into(copy.deepcopy(model), read_state_dict(orig), what)
    ref = import_checkpoint(orig, env.cache)
    files["original"] = {"path": str(orig.resolve()), "sha256": ref.removeprefix("sha256:")}
    sds, names, shas = [], [], []
    for text in args.unlearned:
        path = Path(text).expanduser()
        sd = read_state_dict(path)
        load_into(copy.deepcopy(model), sd, f"unlearned checkpoint {path} (--arch {args.arch})")
        sds.append(sd)
        names.append(str(path))
        shas.append(file_sha256(path))
    files["unlearned"] = [
        {"path": str(Path(n).resolve()), "sha256": s} for n, s in zip(names, shas)
    ]
    hp["unlearned"] = tuple(shas)
    return ref, sds, names


# ---------------------------------------------------------------------------------------------
# output


def summary_line(rows: list[dict[str, Any]]) -> str:
    """``NAME on DATASET/ARCH, forget LABEL (N images): accuracy before -> after (%): D_f ...,
    D_r ..., test ...``."""
    acc = {
        (r["stage"], r["split"]): r["value"]
        for r in rows
        if r.get("type") == "metric" and r.get("metric") == "accuracy"
    }
    first = next((r for r in rows if r.get("type") == "metric"), {})
    parts = []
    for split, label in (("forget", "D_f"), ("retain", "D_r"), ("test", "test")):
        b, a = acc.get(("before", split)), acc.get(("after", split))
        if b is not None or a is not None:
            parts.append(f"{label} {_pct(b)} -> {_pct(a)}")
    return (
        f"{first.get('method')} on {first.get('dataset')}/{first.get('arch')}, forget "
        f"{first.get('forget')} ({first.get('k')} images): accuracy before -> after (%): "
        + ", ".join(parts)
    )


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}"


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
        return _eval(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk: one line, as bench.run
        from bench.core.records import disk_error, disk_full_message

        full = disk_error(exc)
        if full is None:
            raise
        print(f"error: {disk_full_message(full)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to evaluate", file=sys.stderr)
        return 130


def _eval(args: argparse.Namespace) -> int:
    from bench.core.records import read_record, record_path, run_status
    from bench.protocol.stages import execute

    spec, supplied, env = prepare(args)
    path = record_path(env.out, spec.run_id)
    if run_status(env.out, spec.run_id) == "done":
        status = "skipped"
    else:
        status = execute(spec, env, supplied=supplied)
    state, _, rows = read_record(path)
    if status == "running":
        print(
            f"error: run {spec.run_id} is being evaluated by another process right now; its "
            f"record will be {path}",
            file=sys.stderr,
        )
        return 1
    if state != "done":
        error = rows[-1].get("error", "unknown error") if rows else "no record written"
        print(f"error: run {spec.run_id} failed: {error} (record: {path})", file=sys.stderr)
        return 1
    print(summary_line(rows))
    done = "already done, skipped" if status == "skipped" else "evaluated"
    print(
        f"run {spec.run_id} {done}; records in {path}; report: python -m reports.build {env.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
