"""Equal-budget hyperparameter search for unlearning methods, selected without the test set.

One study per (suite, method, forget spec): Optuna (``bench.tuning.study``) proposes hyperparameters
from the method's declared space (``register_method(search=...)``; trial 0 = the suite's
defaults) and :func:`trial` scores them on *selection data the final evaluation never sees*:

* the pretrained model of the suite (shared, cached) and search seeds (``SEARCH_SEED0 + i``)
  that no evaluation seed uses;
* a **validation forget set** and where its forgetting is scored: for ``k`` instances, ``k``
  train rows outside every evaluation seed's forget set, scored on those rows; for a class, the
  class itself (a class has no disjoint copy in train), scored on *its validation images*,
  never on the train images whose accuracy is the final UA. (An earlier version searched on
  another class; the setting it found did not transfer: NegGrad's tuned class-0 Avg. Gap was
  60.3 against 7.5 at the defaults on ``tune-digits``.)
* a retrained model without that set (the *search oracle*, cached like the oracle pool);
* scores on the validation split (held out of train: ``DataSpec.val_fraction``; for a class,
  its other classes), on the forget proxy above and on a sample of the retained rows. The test
  split is replaced by a guard (:class:`TestWithheld`, the placeholder that withholds
  undeclared data from methods) for the whole search: reading it raises.

Objectives (minimised; :data:`OBJECTIVES`, the name is recorded with the study):

* ``val-gap`` (default): mean of |acc - acc_retrain| in percentage points on the forget
  proxy (forget quality), the retained sample and the validation split (utility);
* ``deepunlearn``: DeepUnlearn's Optuna objective (Cadet et al. 2024, "Deep Unlearn:
  Benchmarking Machine Unlearning", arXiv:2410.01276; ``munl/hpsearch/objectives.py``,
  ``unlearner_optuna``): 1/3 of each of the retain, forget and validation accuracy gaps to the
  retrained ("naive") model plus the discernibility 2 |MIA - 0.5| of a loss MIA of the forget
  proxy against the validation split, scalarised here as their sum (in percentage points). It
  scores the same forget proxy, so it never reads test data either.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.core.errors import BenchError
from bench.core.spec import ForgetSpec, RunSpec, stable_hash
from bench.unlearning.method import (
    METHODS,
    Context,
    UnlearnData,
    Withheld,
    make_hparams,
    method_needs,
)

#: search seed i is SEARCH_SEED0 + i: far from every suite's replicate seeds (0..), the
#: replica stride (10_000) and the oracle seeds (100_000 + i)
SEARCH_SEED0 = 1_000_000
#: retained rows scored per trial (a seeded sample; all of them when fewer)
RETAIN_SAMPLE = 2000
OBJECTIVES = ("val-gap", "deepunlearn")
#: where studies, their journals and summaries live under OUT
TUNE_DIR = "tune"


class TestWithheld(Withheld):
    """The test split during a search: any use raises (selection never sees test data)."""

    def __init__(self) -> None:
        super().__init__("test", "bench.tune")

    def _msg(self) -> str:
        return (
            "the test split was read during a hyperparameter search: selection must use the "
            "validation split and the validation forget set only (bench.tuning.search)"
        )


def search_space(method: str) -> dict[str, Any]:
    """The method's declared search space (``register_method(..., search=...)``), checked
    against its hyperparameter dataclass; ``{}`` when it declares none."""
    space = dict(METHODS.entry(method).meta.get("search") or {})
    names = {f.name for f in dataclasses.fields(METHODS.entry(method).meta["hparams"])}
    bad = sorted(set(space) - names)
    if bad:
        raise BenchError(f"method {method!r}: search space names unknown hyperparameters {bad}")
    return space


def study_name(spec: RunSpec, objective: str) -> str:
    """``<suite>-<method>-<forget>-<objective>``, file-name safe."""
    raw = f"{spec.suite or 'adhoc'}-{spec.method}-{spec.forget.label}-{objective}"
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", raw)


@dataclass(frozen=True)
class SearchSetup:
    """One study's fixed inputs: the template spec (the suite's default run at its first
    evaluation seed), the evaluation seeds to keep clear of, the search seeds, objective."""

    spec: RunSpec
    eval_seeds: tuple[int, ...]
    search_seeds: tuple[int, ...]
    objective: str = "val-gap"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise BenchError(
                f"unknown objective {self.objective!r}: use one of {', '.join(OBJECTIVES)}"
            )
        clash = sorted(set(self.search_seeds) & set(self.eval_seeds))
        if clash:
            raise BenchError(f"search seeds {clash} are evaluation seeds: they must differ")
        if not self.spec.data.val_fraction or self.spec.data.val_from != "train":
            raise BenchError(
                f"tuning {self.spec.method!r} needs a validation split held out of train: "
                "add --val-fraction 0.1 (and val_from='train')"
            )


def search_seeds(n: int) -> tuple[int, ...]:
    if n < 1:
        raise BenchError(f"--search-seeds must be >= 1 (got {n})")
    return tuple(SEARCH_SEED0 + i for i in range(n))


def validation_forget(
    targets: torch.Tensor, forget: ForgetSpec, eval_seeds: tuple[int, ...], seed: int
) -> torch.Tensor:
    """Train positions of the validation forget set for search seed ``seed``: for instances,
    the same size as ``forget``, disjoint from the forget sets of every evaluation seed; for a
    class (or classes), the class's train rows themselves (scored on its validation images,
    see :func:`trial`)."""
    from bench.data import select_forget

    n = targets.numel()
    if forget.kind == "class":
        return select_forget(targets, forget, 0)
    taken = torch.zeros(n, dtype=torch.bool)
    for s in eval_seeds:
        taken[select_forget(targets, forget, s)] = True
    free = torch.nonzero(~taken).flatten()
    k = forget.k if forget.kind == "instance" else round((forget.fraction or 0) * n)
    if k is None or k > free.numel() - 1:
        raise BenchError(
            f"no room for a validation forget set of {k} rows beside the evaluation forget "
            f"sets ({int(taken.sum())} of {n} rows): use fewer evaluation seeds or a smaller k"
        )
    g = torch.Generator().manual_seed(seed)
    return free[torch.randperm(free.numel(), generator=g)[:k]].sort().values


def scored_views(forget_spec: ForgetSpec, forget, forgotten, val, oracle) -> dict[str, tuple]:
    """The (view, search-oracle correctness) pairs on which forgetting and validation utility
    are scored: instances on the forgotten train rows and the whole validation split; a class
    on its validation images and the validation images of the other classes."""
    if forget_spec.kind != "class":
        return {
            "forget": (forget, oracle["train"]["correct"].index_select(0, forgotten)),
            "val": (val, oracle["val"]["correct"]),
        }
    classes = torch.tensor(sorted(forget_spec.classes or ()))
    in_class = torch.isin(val.targets.cpu(), classes)
    rows, others = torch.nonzero(in_class).flatten(), torch.nonzero(~in_class).flatten()
    if not rows.numel() or not others.numel():
        raise BenchError(
            f"tuning for class {forget_spec.label}: the validation split has "
            f"{rows.numel()} images of the class and {others.numel()} of the others; "
            "raise --val-fraction"
        )
    correct = oracle["val"]["correct"]
    return {
        "forget": (val.subset(rows, "forget_val"), correct.index_select(0, rows)),
        "val": (val.subset(others, "val"), correct.index_select(0, others)),
    }


def _guarded(carved):
    """``carved`` with its bundle's test split replaced by :class:`TestWithheld`."""
    bundle = dataclasses.replace(carved.bundle, test=TestWithheld())
    return dataclasses.replace(carved, bundle=bundle)


def search_oracle(spec: RunSpec, carved, forgotten: torch.Tensor, env) -> dict[str, torch.Tensor]:
    """Predictions (argmax) on every train row and validation row of a model retrained from
    scratch without ``forgotten`` (the search oracle), plus its per-example CE losses there;
    cached under ``CACHE/tune-oracle/`` by content, built once under a file lock."""
    from bench.core import runtime
    from bench.core.cache import load_entry, save_entry
    from bench.core.files import file_lock
    from bench.data import View, retain_positions
    from bench.data.forget import positions_digest
    from bench.models.train import TRAIN_CODE_VERSION, fresh_model, predict, train
    from bench.protocol.oracle import ORACLE_SEED

    ident = {
        "search_oracle": 1,
        "data": dataclasses.replace(spec.data, retain_eval=None),
        "n_train": len(carved.train),
        "arch": spec.arch,
        "recipe": spec.recipe,
        "forgotten": positions_digest(forgotten),
        "train_code": TRAIN_CODE_VERSION,
        "normalize": spec.normalize,
        "precision": runtime.pretrain_precision(env.device),
    }
    key = stable_hash(ident)
    path = Path(env.cache) / "tune-oracle" / f"oracle-{key}.pt"
    with file_lock(path.with_suffix(".lock")):
        blob = load_entry(path, key)
        if blob is None:
            bundle = carved.bundle
            train_all = View(bundle.train, carved.train, env.device, "train")
            val = View(carved.val_split, carved.val, env.device, "val")
            model = fresh_model(bundle, spec.arch, ORACLE_SEED, normalize=spec.normalize)
            model.to(env.device)
            retain = train_all.subset(retain_positions(len(carved.train), forgotten))
            with runtime.shared(env.device):
                train(model, retain, spec.recipe, ORACLE_SEED)
            blob = {"train": _scores(predict(model, train_all), train_all.targets)}
            blob["val"] = _scores(predict(model, val), val.targets)
            save_entry(blob, path, key)
    return blob


def _scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    from bench.metrics.mia import ce_loss

    logits = logits.float().cpu()
    return {
        "correct": (logits.argmax(1) == targets.cpu()).float(),
        "loss": torch.from_numpy(ce_loss(logits, targets.cpu())).float(),
    }


def device_clock(device: torch.device) -> float:
    """The clock of a budget in device-seconds: on CUDA wall time after a synchronize (the GPU
    is the resource, and a job holds it whole); on the CPU this process's CPU time, so that a
    method's spend does not grow when other jobs share the cores (wall time there charged a
    study for its neighbours: at 4-7 % of a core each, 14-25x its own work)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def trial(
    setup: SearchSetup, hp_values: dict[str, Any], env, report=None
) -> tuple[float, float, dict]:
    """Score one hyperparameter setting: ``(objective value, unlearning seconds, details)``,
    the mean over the search seeds (``report(mean so far, i)`` after each seed; a True answer
    stops the trial as pruned). The test split is guarded throughout."""
    import optuna

    from bench.core import runtime
    from bench.data import View, carve, load_dataset, retain_positions
    from bench.models.train import model_builder
    from bench.protocol.stages import pretrained_with_artifacts
    from bench.unlearning.method import resolve_hparams

    spec = setup.spec
    runtime.configure(env.precision, env.compile, env.pretrain_precision)
    hp = make_hparams(spec.method, {**spec.hparams_dict, **hp_values})
    needs = method_needs(spec.method, hp)
    entry = METHODS.entry(spec.method)
    resolve_hparams(spec)  # the template itself is valid
    carved = _guarded(carve(load_dataset(spec.data.name, env.locations), spec.data))
    bundle = carved.bundle
    model0, _, artifacts = pretrained_with_artifacts(spec, carved, env)
    model0 = runtime.to_layout(model0, env.device)
    train_view = View(bundle.train, carved.train, env.device, "train")
    val_view = View(carved.val_split, carved.val, env.device, "val")
    targets = bundle.train.targets.index_select(0, carved.train)
    values, seconds, parts = [], 0.0, []
    for i, seed in enumerate(setup.search_seeds):
        forgotten = validation_forget(targets, spec.forget, setup.eval_seeds, seed)
        oracle = search_oracle(spec, carved, forgotten, env)
        retain_rows = retain_positions(len(carved.train), forgotten)
        forget = train_view.subset(forgotten, "forget")
        retain = train_view.subset(retain_rows, "retain")
        data = UnlearnData(
            forget=forget,
            retain=retain if "retain" in needs else Withheld("retain", spec.method),
            val=val_view if "val" in needs else Withheld("val", spec.method),
            num_classes=bundle.num_classes,
        )
        ctx = Context(
            device=env.device,
            seed=seed,
            generator=torch.Generator().manual_seed(seed),
            recipe=spec.recipe,
            num_classes=bundle.num_classes,
            method=spec.method,
            pretrain_artifacts=dict(artifacts),
            model_builder=model_builder(bundle, spec.arch, normalize=spec.normalize),
        )
        torch.manual_seed(seed)
        t0 = device_clock(env.device)
        try:
            with runtime.autocast(env.device):
                model = entry.obj(copy.deepcopy(model0), data, hp, ctx)
        except Exception as exc:  # a failed trial spends what it ran, on the same clock
            exc.seconds = seconds + device_clock(env.device) - t0
            raise
        seconds += device_clock(env.device) - t0
        model.eval()
        sample = torch.randperm(len(retain_rows), generator=torch.Generator().manual_seed(seed))
        sample = sample[:RETAIN_SAMPLE].sort().values
        scored = scored_views(spec.forget, forget, forgotten, val_view, oracle)
        retain_correct = oracle["train"]["correct"].index_select(0, retain_rows[sample])
        scored["retain"] = (retain.subset(sample), retain_correct)
        value, part = score(setup.objective, model, scored)
        values.append(value)
        parts.append(part)
        if report is not None and report(sum(values) / len(values), i):
            exc = optuna.TrialPruned(f"pruned after search seed {seed}")
            exc.seconds = seconds
            raise exc
    details = {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}
    return sum(values) / len(values), seconds, details


def score(
    objective: str, model, scored: dict[str, tuple[Any, torch.Tensor]]
) -> tuple[float, dict[str, float]]:
    """The objective of an unlearned ``model`` (lower is better) and its parts, in %.
    ``scored``: ``forget``, ``retain`` and ``val`` as (view, search oracle's per-row
    correctness on it), from :func:`scored_views`."""
    from bench.metrics.mia import ce_loss, logreg_mia
    from bench.models.train import predict

    part, logits = {}, {}
    for name in ("forget", "retain", "val"):
        view, oracle_correct = scored[name]
        out = predict(model, view).float().cpu()
        acc = float((out.argmax(1) == view.targets.cpu()).float().mean() * 100)
        part[f"{name}_acc"] = acc
        part[f"{name}_gap"] = abs(acc - float(oracle_correct.mean() * 100))
        logits[name] = (out, view.targets.cpu())
    mean_gap = (part["forget_gap"] + part["retain_gap"] + part["val_gap"]) / 3
    if objective == "val-gap":
        return mean_gap, part
    mia = logreg_mia(ce_loss(*logits["forget"]), ce_loss(*logits["val"]))
    part["mia"] = 100 * mia
    part["discernibility"] = 100 * 2 * abs(mia - 0.5)
    return mean_gap + part["discernibility"], part


def tuned_spec(spec: RunSpec, best: dict[str, Any], study: str) -> RunSpec:
    """The evaluation run ``spec`` with the study's best hyperparameters, marked ``tuned``."""
    hp = dataclasses.asdict(make_hparams(spec.method, {**spec.hparams_dict, **best}))
    return dataclasses.replace(spec, hparams=RunSpec.hparams_tuple(hp), tuned=study)
