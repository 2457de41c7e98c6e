"""The execution plan of a suite, without running or loading anything: which shared models must
be built first (pretrained models, oracle models), which runs remain, what is cached, and a rough
GPU-hour estimate. Used by ``--dry-run``, by the SLURM executor (``bench.execution.cluster``) to
stage jobs
so that no two jobs ever build the same cached model, and by ``--status``.

Cache markers. A prepared unit leaves ``CACHE/plan/<unit id>.json``; unit ids hash the unit's
identity at the spec level (dataset spec, arch, recipe, seeds, ...), so a plan can tell cached
from to-do without loading any data (the model caches themselves are keyed by content that needs
the data: the carved train size, the forget positions).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError
from bench.core.records import atomic_write_text, run_status
from bench.core.spec import RunSpec, stable_hash

PLAN_VERSION = 1


@dataclass(frozen=True)
class Unit:
    """A shared model built before the runs that need it: ``pretrain`` (one per pretraining
    setup) or ``oracle`` (model ``index`` of a run's oracle pool)."""

    kind: str
    spec: RunSpec  # a representative run that needs the unit
    index: int = 0

    @property
    def uid(self) -> str:
        return unit_id(self.spec, self.kind, self.index)

    @property
    def label(self) -> str:
        s = self.spec
        base = f"{s.dataset}/{s.arch} train_seed={s.train_seed}"
        if self.kind == "oracle":
            return f"oracle {self.index} of {s.forget.label} forget_seed={s.forget_seed} {base}"
        return f"pretrain {base}"


def unit_id(spec: RunSpec, kind: str, index: int = 0) -> str:
    from bench.models.train import TRAIN_CODE_VERSION
    from bench.unlearning.method import special_pretraining

    ident: dict[str, Any] = {
        "kind": kind,
        "data": spec.data,
        "arch": spec.arch,
        "recipe": spec.recipe,
        "train_code": TRAIN_CODE_VERSION,
        "plan": PLAN_VERSION,
    }
    if kind == "pretrain":
        ident.update(train_seed=spec.train_seed, special=special_pretraining(spec))
        if spec.checkpoint:
            ident["checkpoint"] = spec.checkpoint
    else:
        ident.update(forget=spec.forget, forget_seed=spec.forget_seed, index=index)
    if spec.normalize is not None:  # other models (set only: older markers keep their ids)
        ident["normalize"] = spec.normalize
    return stable_hash(ident)


def marker_path(cache: Path, uid: str) -> Path:
    return Path(cache) / "plan" / f"{uid}.json"


def mark_prepared(cache: Path, unit: Unit, info: dict[str, Any] | None = None) -> None:
    atomic_write_text(
        marker_path(cache, unit.uid),
        json.dumps({"unit": unit.label, "time": time.time(), **(info or {})}) + "\n",
    )


def is_prepared(cache: Path, unit: Unit) -> bool:
    return marker_path(cache, unit.uid).exists()


def units_for(specs: Sequence[RunSpec]) -> list[Unit]:
    """The distinct shared models ``specs`` need, in first-use order."""
    out: dict[str, Unit] = {}
    for s in specs:
        # a --checkpoint run's pretrained model is the imported file: nothing to build
        if (s.recipe.epochs > 0 or s.recipe.pretrained) and not s.checkpoint:
            u = Unit("pretrain", s)
            out.setdefault(u.uid, u)
        if s.pool_size > 0 and s.requests == 1:
            for i in range(s.pool_size):
                u = Unit("oracle", s, i)
                out.setdefault(u.uid, u)
    return list(out.values())


@dataclass
class Plan:
    """Units and runs of a selection, with what is already done."""

    specs: list[RunSpec]
    units: list[Unit]
    units_cached: set[str] = field(default_factory=set)
    runs_status: dict[str, str] = field(default_factory=dict)  # run_id -> records.RECORD_STATES

    @property
    def units_todo(self) -> list[Unit]:
        return [u for u in self.units if u.uid not in self.units_cached]

    @property
    def runs_todo(self) -> list[RunSpec]:
        return [s for s in self.specs if self.runs_status.get(s.run_id) != "done"]


def make_plan(specs: Sequence[RunSpec], out: Path, cache: Path) -> Plan:
    units = units_for(specs)
    return Plan(
        specs=list(specs),
        units=units,
        units_cached={u.uid for u in units if is_prepared(cache, u)},
        runs_status={s.run_id: run_status(out, s.run_id) for s in specs},
    )


def save_plan(out: Path, specs: Sequence[RunSpec], suite: str) -> Path:
    """``OUT/plan.json``: the run ids (and specs) of the last launch, for ``--status``."""
    path = Path(out) / "plan.json"
    blob = {"suite": suite, "runs": [{"run_id": s.run_id, "spec": s.to_dict()} for s in specs]}
    atomic_write_text(path, json.dumps(blob) + "\n")
    return path


def distinct_runs(specs: Sequence[RunSpec]) -> tuple[list[RunSpec], int]:
    """``(specs without repeats, number dropped)``: repeated seeds or forget sets (``--seeds
    0,0``) name the same run (the same ``run_id``), which is planned and run once."""
    first: dict[str, RunSpec] = {}
    for s in specs:
        first.setdefault(s.run_id, s)
    return list(first.values()), len(specs) - len(first)


def planned_runs(out: Path) -> list[dict[str, Any]] | None:
    """The runs of ``OUT/plan.json`` as plain dicts (``run_id`` and ``spec``), without
    rebuilding specs; ``None`` when there is no plan.json. Raises :class:`BenchError` (naming
    the file and the fix) when it is damaged."""
    path = Path(out) / "plan.json"
    if not path.exists():
        return None
    fix = (
        "relaunch with the --suite (and options) it was launched with, which rewrites it, or "
        "pass them to --status"
    )
    try:
        blob = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"{path} is damaged ({exc}): {fix}") from None
    runs = blob.get("runs") if isinstance(blob, dict) else None
    if not isinstance(runs, list) or not all(
        isinstance(r, dict) and isinstance(r.get("run_id"), str) and isinstance(r.get("spec"), dict)
        for r in runs
    ):
        raise BenchError(f"{path} is damaged (not a list of runs with run_id and spec): {fix}")
    return runs


def load_plan(out: Path) -> list[RunSpec] | None:
    """The specs of ``OUT/plan.json`` (``None`` without one; ``BenchError`` when damaged)."""
    runs = planned_runs(out)
    if runs is None:
        return None
    try:
        return [RunSpec.from_dict(r["spec"]) for r in runs]
    except BenchError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(
            f"{Path(out) / 'plan.json'} has a run this version cannot read "
            f"({type(exc).__name__}: {exc}): pass the --suite (and options) to --status"
        ) from None


# ---------------------------------------------------------------------------------------------
# cost estimate (rough, and labelled so wherever it is printed)

#: (train, test) sizes of the full datasets, for estimates without loading data
NOMINAL_SIZES = {
    "cifar10": (50_000, 10_000),
    "cifar100": (50_000, 10_000),
    "imagenet": (1_281_167, 50_000),
    "digits": (1_437, 360),
    "synthetic": (256, 64),
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000, "digits": 10, "synthetic": 4}

#: ASSUMED training throughput on one H100 (images/s, bf16, data on the device); evaluation is
#: taken as 3x faster. These are planning assumptions, not measurements: see
#: docs/performance.md for measured numbers.
ASSUMED_TRAIN_IMG_S = {
    "smallcnn": 200_000,
    "mlp": 400_000,
    "resnet18_cifar": 25_000,
    # no max-pool: the stages run at 4x the resolution of resnet18_cifar's, about 4x the FLOPs
    "resnet18_salun": 7_000,
    "resnet18_kuangliu": 7_000,
    "resnet50_cifar": 8_000,
    "resnet18_tv": 60_000,
    "tv_resnet50": 2_500,
}
DEFAULT_TRAIN_IMG_S = 2_500  # timm/* and anything unknown: ImageNet-sized models
#: expected epochs of a stop-rule method (L2UL family) when only its cap is known
STOP_RULE_EPOCHS = 50


def _sizes(spec: RunSpec) -> tuple[int, int]:
    n_train, n_test = NOMINAL_SIZES.get(spec.dataset, (10_000, 2_000))
    d = spec.data
    if d.train_subset:
        n_train = min(n_train, d.train_subset)
    if d.test_subset:
        n_test = min(n_test, d.test_subset)
    if d.val_fraction:
        if d.val_from == "test":
            n_test = int(n_test * (1 - d.val_fraction))
        else:
            n_train = int(n_train * (1 - d.val_fraction))
    return n_train, n_test


def _n_forget(spec: RunSpec, n_train: int) -> int:
    f = spec.forget
    if f.kind == "instance":
        n = f.k or 0
    elif f.kind == "fraction":
        n = round((f.fraction or 0) * n_train)
    else:
        n = n_train * len(f.classes or ()) // NUM_CLASSES.get(spec.dataset, 10)
    return n * max(spec.requests, 1)


def _throughput(arch: str) -> float:
    return ASSUMED_TRAIN_IMG_S.get(arch, DEFAULT_TRAIN_IMG_S)


def unit_seconds(unit: Unit) -> float:
    """Estimated GPU seconds to build a unit (a pretraining or an oracle model)."""
    n_train, n_test = _sizes(unit.spec)
    r = unit.spec.recipe
    n = n_train if unit.kind == "pretrain" else n_train - _n_forget(unit.spec, n_train)
    return (r.epochs * n + (n_train + n_test) / 3) / _throughput(unit.spec.arch)


def run_seconds(spec: RunSpec) -> float:
    """Estimated GPU seconds of one run: the method (retraining: the recipe over D_r; a
    method with ``epochs``: that many passes over the train set, or over D_f for a method that
    sees only D_f; a stop-rule method: at most ``STOP_RULE_EPOCHS`` passes over D_f plus its
    adversarial examples; otherwise one pass), ``pool_size - 1`` replicas of it, and
    evaluation (a few passes over train and test)."""
    n_train, n_test = _sizes(spec)
    nf = _n_forget(spec, n_train)
    hp = spec.hparams_dict
    if spec.method == "retrain":
        images = spec.recipe.epochs * (n_train - nf)
    elif "epochs" in hp:
        images = float(hp["epochs"]) * (n_train if _sees_retain(spec) else nf)
    elif "max_epochs" in hp:
        images = min(float(hp["max_epochs"]), STOP_RULE_EPOCHS) * nf
        images += nf * float(hp.get("n_adv", 0)) * float(hp.get("iters", 0))
    else:
        images = n_train
    images *= max(spec.pool_size, 1)
    evals = 3 * (n_train + n_test) / 3
    return (images + evals) / _throughput(spec.arch)


def _sees_retain(spec: RunSpec) -> bool:
    """Whether the run's method declares D_r (else its epochs are passes over D_f only)."""
    from bench.unlearning.method import make_hparams, method_needs

    try:
        return "retain" in method_needs(spec.method, make_hparams(spec.method, spec.hparams_dict))
    except (BenchError, KeyError):
        return True  # a method this process does not know: assume the larger cost


def estimate(plan: Plan) -> dict[str, float]:
    """Estimated GPU-hours still to spend: ``pretrain``, ``oracle``, ``runs``, ``total``."""
    est = {"pretrain": 0.0, "oracle": 0.0}
    for u in plan.units_todo:
        est[u.kind] += unit_seconds(u) / 3600
    est["runs"] = sum(run_seconds(s) for s in plan.runs_todo) / 3600
    est["total"] = sum(est.values())
    return est


def describe(plan: Plan, executor: str, runs_per_job: int = 1) -> str:
    """The plan as text: stages with units / runs cached and to do, estimated GPU-hours, and
    the jobs a launch would submit."""
    est = estimate(plan)
    rows = []
    for kind in ("pretrain", "oracle"):
        units = [u for u in plan.units if u.kind == kind]
        todo = [u for u in plan.units_todo if u.kind == kind]
        rows.append((f"1 {kind}", len(units), len(units) - len(todo), len(todo), est[kind]))
    todo = plan.runs_todo
    rows.append(("2 runs", len(plan.specs), len(plan.specs) - len(todo), len(todo), est["runs"]))
    lines = [f"{'stage':12s} {'units':>7s} {'cached':>7s} {'to do':>7s} {'est. GPU-h':>11s}"]
    for name, n, cached, nt, h in rows:
        lines.append(f"{name:12s} {n:7d} {cached:7d} {nt:7d} {h:11.1f}")
    lines.append(f"{'3 report':12s} {1:7d} {'-':>7s} {1:7d} {'-':>11s}")
    lines.append(f"{'total':12s} {'':7s} {'':7s} {'':7s} {est['total']:11.1f}")
    by_suite: dict[str, list[int]] = {}
    for s in plan.specs:
        c = by_suite.setdefault(s.suite or "-", [0, 0])
        c[0] += 1
        c[1] += plan.runs_status.get(s.run_id) != "done"
    lines.append("")
    lines.append("runs by suite (total / to do):")
    for suite, (n, nt) in by_suite.items():
        lines.append(f"  {suite:28s} {n:6d} / {nt:d}")
    failed = sum(v == "failed" for v in plan.runs_status.values())
    if failed:
        lines.append(f"({failed} failed runs are retried)")
    damaged = sum(v == "damaged" for v in plan.runs_status.values())
    if damaged:
        lines.append(f"({damaged} runs with a damaged record are redone)")
    if executor == "slurm":
        per = effective_runs_per_job(len(todo), runs_per_job)
        jobs = []
        if plan.units_todo:
            jobs.append(f"a pretrain/oracle array of {len(plan.units_todo)} tasks")
        if todo:
            jobs.append(
                f"a run array of {math.ceil(len(todo) / per)} tasks ({per} run(s) each, "
                "after the first array)"
            )
            jobs.append("a report job after the runs")
        lines.append("")
        lines.append("sbatch would submit: " + ("; ".join(jobs) if jobs else "nothing (all done)"))
    lines.append(
        "GPU-hours are rough estimates from assumed H100 throughputs (bench/protocol/plan.py "
        "ASSUMED_TRAIN_IMG_S), not measurements."
    )
    return "\n".join(lines)


#: SLURM's default MaxArraySize is 1001: pack runs so that an array stays within it
MAX_ARRAY_TASKS = 1000


def effective_runs_per_job(n_runs: int, runs_per_job: int = 1) -> int:
    return max(1, runs_per_job, math.ceil(n_runs / MAX_ARRAY_TASKS))


def chunks(specs: Sequence[RunSpec], per: int) -> list[list[RunSpec]]:
    """Runs in groups of ``per``, runs sharing a pretrained model kept together."""
    order = sorted(specs, key=lambda s: unit_id(s, "pretrain"))
    return [order[i : i + per] for i in range(0, len(order), per)]
