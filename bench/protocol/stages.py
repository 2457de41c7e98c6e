"""The common protocol: pretrain (cached) -> select forget set -> unlearn -> evaluate -> records.

``execute(spec, env)`` never raises for a failing run: it records the failure (``status:
failed`` with the error) so that a suite goes on; ``run(spec, env)`` is the raising core.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import fcntl
import json
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.core import runtime
from bench.core.cache import load_entry, save_entry
from bench.core.errors import BenchError, DiskFullError
from bench.core.files import file_lock  # noqa: F401 - re-exported: its home before bench.core.files
from bench.core.records import (
    code_version,
    disk_error,
    disk_full_message,
    hardware,
    run_status,
    write_records,
)
from bench.core.spec import RunSpec, stable_hash
from bench.data import Carved, Locations, View, carve, load_dataset, retain_positions, select_forget
from bench.metrics import evaluate
from bench.models.train import TRAIN_CODE_VERSION, fresh_model, model_builder, train
from bench.protocol.progress import ProgressProbe
from bench.unlearning.method import (
    METHODS,
    Context,
    UnlearnData,
    Withheld,
    method_needs,
    resolve_hparams,
    special_pretraining,
)

log = logging.getLogger(__name__)


@dataclass
class Env:
    """Where things are and what runs them: not part of any run's identity."""

    out: Path
    cache: Path | None = None
    data_root: Path | None = None
    download: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: bench.core.runtime: "auto" (bf16 autocast on CUDA, fp32 on the CPU), "fp32" or "bf16"
    precision: str = "auto"
    compile: bool = False  # torch.compile the model in bench.models.train.train
    #: the shared models' (pretrained original, oracles): "fp32" (default), "bf16" or "auto"
    pretrain_precision: str = "fp32"
    #: keep each finished run's unlearned weights as OUT/models/<run_id>.pt (--save-model)
    save_model: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.cache = (
            Path(self.cache)
            if self.cache
            else Path(os.environ.get("BENCH_CACHE") or self.out / "cache")
        )
        if isinstance(self.device, str):
            self.device = torch.device(self.device)

    @property
    def locations(self) -> Locations:
        return Locations(self.data_root, self.cache, self.download)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------
# pretraining cache


def pretrain_key(spec: RunSpec, n_train: int, precision: str = "fp32") -> str:
    """Content hash of a pretrained model. A model trained under bf16 autocast
    (``--pretrain-precision bf16``) gets its own key (fp32 keys are unchanged from before the
    precision switch existed)."""
    ident = {
        "data": dataclasses.replace(spec.data, retain_eval=None),  # scoring, not training
        "n_train": n_train,
        "arch": spec.arch,
        "recipe": spec.recipe,
        "train_seed": spec.train_seed,
        "train_code": TRAIN_CODE_VERSION,
        "special": special_pretraining(spec),
    }
    if precision != "fp32":
        ident["precision"] = precision
    if spec.normalize is not None:
        ident["normalize"] = spec.normalize
    if spec.checkpoint:  # a user's weights: nothing is trained, the file is the model
        ident = {k: ident[k] for k in ("data", "arch") if k in ident}
        ident.update(checkpoint=spec.checkpoint, normalize=spec.normalize)
    return stable_hash(ident)


def prepare(unit, env: Env) -> dict[str, Any]:
    """Build (or find cached) one shared model of a plan (``bench.protocol.plan.Unit``): the
    pretrained
    model, or one oracle model, then leave the unit's cache marker. What the SLURM executor's
    first stage runs, so that run jobs only ever load these models."""
    from bench.protocol.oracle import build_oracle_pool
    from bench.protocol.plan import mark_prepared

    runtime.configure(env.precision, env.compile, env.pretrain_precision)
    spec = unit.spec
    bundle = load_dataset(spec.data.name, env.locations)
    carved = carve(bundle, spec.data)
    t0 = time.perf_counter()
    if unit.kind == "pretrain":
        _, info, _ = pretrained_with_artifacts(spec, carved, env)
        info = {"cached": info["cached"], "key": info.get("key")}
    elif unit.kind == "oracle":
        forgotten = _forget_positions(carved, spec, 1)[0]
        pool = build_oracle_pool(
            spec, carved, forgotten, 1, env.cache, env.device, first=unit.index
        )
        info = {"key": pool.keys[0]}
    else:
        raise ValueError(f"unknown plan unit kind {unit.kind!r}")
    info["seconds"] = time.perf_counter() - t0
    mark_prepared(env.cache, unit, info)
    return info


def pretrained_model(spec: RunSpec, carved: Carved, env: Env) -> tuple[nn.Module, dict]:
    """The pretrained model for ``spec``, trained once and cached by content hash."""
    model, info, _ = pretrained_with_artifacts(spec, carved, env)
    return model, info


def pretrained_with_artifacts(
    spec: RunSpec, carved: Carved, env: Env
) -> tuple[nn.Module, dict, dict[str, Any]]:
    """:func:`pretrained_model` plus what a special pretraining stored with the checkpoint
    (``Context.pretrain_artifacts``; e.g. mnemonic codes, ``bench.unlearning.mnemonic``)."""
    key = pretrain_key(spec, len(carved.train), runtime.pretrain_precision(env.device))
    if spec.checkpoint:
        return _from_checkpoint(spec, carved, env, key)
    path = env.cache / "models" / f"pretrain-{key}.pt"
    bundle = carved.bundle
    with file_lock(path.with_suffix(".lock")):
        loaded: list[nn.Module] = []

        def fits(blob: dict) -> None:  # the state dict loads into a fresh model of the arch
            loaded.append(fresh_model(bundle, spec.arch, spec.train_seed, normalize=spec.normalize))
            loaded[0].load_state_dict(blob["state_dict"])

        # verified (key, content hash, state dict fits); a damaged entry is moved aside
        blob = load_entry(path, key, fits)
        if blob is not None:
            model, artifacts = loaded[0], blob.get("artifacts", {})
            return model.to(env.device).eval(), {**blob["info"], "cached": True}, artifacts
        t0 = time.perf_counter()
        model = fresh_model(
            bundle, spec.arch, spec.train_seed, spec.recipe.pretrained, spec.normalize
        )
        view = View(bundle.train, carved.train, env.device, "train")
        special = special_pretraining(spec)
        hook, artifacts = None, {}
        if special is not None and special.startswith("mnemonic"):
            from bench.unlearning.mnemonic import pretraining

            hook, artifacts = pretraining(special, bundle, spec.train_seed)
        elif special is not None:
            raise BenchError(f"method {spec.method!r}: unknown special pretraining {special!r}")
        with runtime.shared(env.device):
            steps = (
                train(model, view, spec.recipe, spec.train_seed, batch_hook=hook)
                if spec.recipe.epochs
                else 0
            )
        info = {
            "key": key,
            "seconds": time.perf_counter() - t0,
            "steps": steps,
            "code_version": code_version(),
        }
        blob = {
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "info": info,
            "spec": json.loads(json.dumps(dataclasses.asdict(spec.recipe))),
        }
        if artifacts:
            blob["artifacts"] = artifacts
        save_entry(blob, path, key)
        from bench.protocol.plan import Unit, mark_prepared

        mark_prepared(env.cache, Unit("pretrain", spec), {"key": key})
        return model.eval(), {**info, "cached": False}, artifacts


def _from_checkpoint(
    spec: RunSpec, carved: Carved, env: Env, key: str
) -> tuple[nn.Module, dict, dict[str, Any]]:
    """The user's weights imported as ``spec.checkpoint`` (``bench.models.checkpoint``) in a fresh
    model of ``spec.arch``: the "pretrained" model of the run. Nothing is trained or cached
    beyond the imported state dict."""
    from bench.models.checkpoint import cached_state_dict, load_into

    if special_pretraining(spec) is not None:
        raise BenchError(
            f"method {spec.method!r} needs its own pretraining ({special_pretraining(spec)}): "
            f"it cannot start from --checkpoint; leave --checkpoint out for it"
        )
    t0 = time.perf_counter()
    sd, source = cached_state_dict(env.cache, spec.checkpoint)
    model = fresh_model(carved.bundle, spec.arch, spec.train_seed, normalize=spec.normalize)
    load_into(model, sd, f"checkpoint {source or spec.checkpoint}")
    info = {
        "key": key,
        "checkpoint": spec.checkpoint,
        "source": source,
        "seconds": time.perf_counter() - t0,
        "steps": 0,
        "cached": True,
    }
    return model.to(env.device).eval(), info, {}


# ---------------------------------------------------------------------------------------
# one run


@dataclass
class Supplied:
    """Unlearned models made elsewhere (``bench.eval``), evaluated by :func:`run` in place of
    a method call: ``models[0]`` is the scored model, ``models[1:]`` its replicas for the pool
    metrics (state dicts in any layout :func:`bench.models.checkpoint.load_into` takes, loaded into
    copies of the run's original model); ``forget`` the train positions they forgot when
    not ``spec.forget`` drawn as usual (an index file), then labelled ``forget_label``;
    ``meta`` joins the run's meta record."""

    models: list[dict[str, torch.Tensor]]
    names: list[str]
    forget: torch.Tensor | None = None
    forget_label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def model(self, model0: nn.Module, i: int) -> nn.Module:
        from bench.models.checkpoint import load_into

        m = copy.deepcopy(model0)
        load_into(m, self.models[i], f"unlearned checkpoint {self.names[i]}")
        return m.eval()


@dataclass
class RunState:
    """What the stages of one run share (:func:`run`): the spec and its environment, the
    method, the data and the pretrained model (:func:`stage_prepare`), the forget requests
    and views (:func:`stage_carve`), and the record rows written so far."""

    spec: RunSpec
    env: Env
    supplied: Supplied | None
    entry: Any  # the method's registry entry (None for a supplied model)
    hp: Any
    needs: tuple[str, ...]
    bundle: Any
    carved: Carved
    model0: nn.Module
    pre_info: dict[str, Any]
    artifacts: dict[str, Any]
    forget_all: list[torch.Tensor] = field(default_factory=list)
    forget_index: dict[str, Any] = field(default_factory=dict)
    split_views: dict[str, View] = field(default_factory=dict)  # train, test, val
    base: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # the method's, per request
    last_data: UnlearnData | None = None  # the last request's data (for replicas)

    @property
    def requests(self) -> int:
        return self.spec.requests if self.spec.scenario == "continual" else 1

    @property
    def n_train(self) -> int:
        return len(self.carved.train)

    def emit(self, request: int, stage: str, split: str, metric: str, value: float, **extra):
        self.rows.append(
            {
                "type": "metric",
                **self.base,
                "request": request,
                "stage": stage,
                "split": split,
                "metric": metric,
                "value": float(value),
                **extra,
            }
        )

    def views_for(self, forgotten: torch.Tensor, current: torch.Tensor) -> dict[str, View]:
        train, val = self.split_views["train"], self.split_views["val"]
        v = {
            "forget": train.subset(forgotten, "forget"),
            "retain": train.subset(retain_positions(self.n_train, forgotten), "retain"),
            "test": self.split_views["test"],
        }
        if self.requests > 1:
            v["forget_request"] = train.subset(current, "forget_request")
        if len(val):
            v["val"] = val
        return v

    def context(self, seed: int, trainer_seed: int) -> Context:
        spec = self.spec
        return Context(
            device=self.env.device,
            seed=seed,
            generator=torch.Generator().manual_seed(seed),
            recipe=spec.recipe,
            num_classes=self.bundle.num_classes,
            method=spec.method,
            trainer=_scratch_trainer(spec, self.carved, trainer_seed),
            log=lambda msg: log.info("%s: %s", spec.run_id, msg),
            pretrain_artifacts=dict(self.artifacts),
            model_builder=model_builder(self.bundle, spec.arch, normalize=spec.normalize),
        )

    def replicas(self) -> list[nn.Module]:
        """The same method on the same (single) request from the same pretrained model, with
        other unlearning (and, for retraining, training) seeds: pool_size-1 more models (the
        supplied ones after the first, for a supplied model)."""
        if self.supplied is not None:
            return [
                self.supplied.model(self.model0, j) for j in range(1, len(self.supplied.models))
            ]
        out = []
        for j in range(1, self.spec.pool_size):
            seed = self.spec.unlearn_seed + REPLICA_SEED_STRIDE * j
            rctx = self.context(seed, self.spec.train_seed + REPLICA_SEED_STRIDE * j)
            torch.manual_seed(seed)
            m = self.entry.obj(copy.deepcopy(self.model0), self.last_data, self.hp, rctx)
            out.append(m.eval())
        return out


def run(spec: RunSpec, env: Env, supplied: Supplied | None = None) -> list[dict[str, Any]]:
    """Execute one run and return its record rows (raises on failure), in named stages:
    prepare -> carve -> before -> (unlearn -> evaluate) per forget request -> write. With
    ``supplied`` (``bench.eval``), its models take the method's place: the same stages and
    evaluation, without the "unlearn" and "trace" rows (nothing is unlearned here)."""
    st = stage_prepare(spec, env, supplied)
    stage_carve(st)
    stage_before(st)
    model = copy.deepcopy(st.model0)
    forgotten = torch.empty(0, dtype=torch.long)
    for r, current in enumerate(st.forget_all, start=1):
        forgotten = torch.cat([forgotten, current]).sort().values
        views = st.views_for(forgotten, current)
        if supplied is None:
            model = stage_unlearn(st, model, r, views)
        else:
            model = supplied.model(st.model0, 0)
        stage_evaluate(st, model, r, forgotten, current, views)
    return stage_write(st, model, forgotten)


def stage_prepare(spec: RunSpec, env: Env, supplied: Supplied | None) -> RunState:
    """Stage 1: the runtime, the method and its hyperparameters, the data and the pretrained
    model (cached; :func:`pretrained_with_artifacts`) on the run's device."""
    runtime.configure(env.precision, env.compile, env.pretrain_precision)
    if supplied is None:
        entry = METHODS.entry(spec.method)
        hp = resolve_hparams(spec)
        needs = method_needs(spec.method, hp)
    else:
        if spec.scenario == "continual" and spec.requests > 1:
            raise BenchError("a supplied unlearned model answers one forget request, not several")
        entry, hp, needs = None, None, ()
    bundle = load_dataset(spec.data.name, env.locations)
    carved = carve(bundle, spec.data)
    model0, pre_info, artifacts = pretrained_with_artifacts(spec, carved, env)
    model0 = runtime.to_layout(model0, env.device)
    return RunState(
        spec, env, supplied, entry, hp, needs, bundle, carved, model0, pre_info, artifacts
    )


def stage_carve(st: RunState) -> None:
    """Stage 2: the forget set of every request (or the supplied one), its index file, the
    split views and the fields every record row carries."""
    spec, supplied, dev = st.spec, st.supplied, st.env.device
    if supplied is not None and supplied.forget is not None:
        st.forget_all = [supplied.forget.long().sort().values]
    else:
        st.forget_all = _forget_positions(st.carved, spec, st.requests)
    st.forget_index = _write_forget_index(st.env.out, st.forget_all)
    st.split_views = {
        "train": View(st.bundle.train, st.carved.train, dev, "train"),
        "test": View(st.bundle.test, st.carved.test, dev, "test"),
        "val": View(st.carved.val_split, st.carved.val, dev, "val"),
    }
    st.base = {
        "run_id": spec.run_id,
        "suite": spec.suite,
        "method": spec.method,
        "dataset": spec.data.name,
        "arch": spec.arch,
        "seed": spec.seed,
        "forget": (supplied and supplied.forget_label) or spec.forget.label,
        "k": int(st.forget_all[0].numel()),
        "scenario": spec.scenario,
        **({"tuned": spec.tuned} if spec.tuned else {}),  # the study (bench.tune) that chose hp
    }


def stage_before(st: RunState) -> None:
    """Stage 3: the pretrained model scored on the first request's views (cached, see
    :func:`_before`): the "before" rows."""
    first = st.views_for(st.forget_all[0], st.forget_all[0])
    before = _before(
        st.spec,
        st.pre_info,
        st.forget_all[0],
        st.requests,
        _for_eval(st.spec, first),
        st.model0,
        st.bundle.num_classes,
        cache=st.env.cache,
        device=st.env.device,
    )
    for split, metric, value in before:
        st.emit(0, "before", split, metric, value)


def stage_unlearn(st: RunState, model: nn.Module, r: int, views: dict[str, View]) -> nn.Module:
    """Stage 4, request ``r``: the method on ``model``, timed (without the progress probes),
    with its "unlearn" and "trace" rows."""
    spec, dev, needs = st.spec, st.env.device, st.needs
    val_view = st.split_views["val"]
    if "val" in needs and not len(val_view):
        raise BenchError(
            f"method {spec.method!r} needs a validation split: set the dataset's "
            f"val_fraction (e.g. --val-fraction 0.1)"
        )
    data = UnlearnData(
        forget=views["forget_request"] if st.requests > 1 else views["forget"],
        retain=views["retain"] if "retain" in needs else Withheld("retain", spec.method),
        val=val_view if "val" in needs else Withheld("val", spec.method),
        num_classes=st.bundle.num_classes,
    )
    ctx = st.context(spec.unlearn_seed + 1000 * (r - 1), spec.train_seed)
    st.last_data = data
    torch.manual_seed(ctx.seed)
    _reset_peak(dev)
    _sync(dev)
    probe = ProgressProbe(model, views, _tracer(ctx), seed=spec.unlearn_seed)
    probe.probe(model, 0)
    probed = probe.seconds  # the probes' time during the method is not the method's
    t0 = time.perf_counter()
    # bf16 autocast when configured, its weight cache off so that forward passes after an
    # update see the new weights (bench.core.runtime.autocast); decisions run in fp32 inside
    with probe, runtime.autocast(dev):
        model = st.entry.obj(model, data, st.hp, ctx)
    _sync(dev)
    seconds = time.perf_counter() - t0 - (probe.seconds - probed)
    st.seconds.append(seconds)
    if not isinstance(model, nn.Module):
        raise TypeError(f"method {spec.method!r} returned {type(model).__name__}, not a model")
    model.eval()
    # after a roll-back (deferred stop check) the probe has counted speculative steps
    probe.probe(model, ctx.steps if ctx.rewound else max(probe.steps, ctx.steps))
    st.emit(r, "unlearn", "-", "wall_seconds", seconds)
    st.emit(r, "unlearn", "-", "steps", ctx.steps)
    st.emit(r, "unlearn", "-", "cap_hit", float(ctx.cap_hit))
    st.emit(r, "unlearn", "-", "peak_memory_mb", _peak_mb(dev))
    st.emit(r, "unlearn", "-", "trace_seconds", probe.seconds)  # not in wall_seconds
    for name, value in sorted(ctx.extra.items()):
        st.emit(r, "unlearn", "-", name, value)
    for point in thin_trace(ctx.traces, MAX_TRACE_POINTS):
        st.emit(r, "trace", point["split"], point["metric"], point["value"], step=point["step"])
    return model


def stage_evaluate(
    st: RunState,
    model: nn.Module,
    r: int,
    forgotten: torch.Tensor,
    current: torch.Tensor,
    views: dict[str, View],
) -> None:
    """Stage 5, request ``r``: the metrics of the unlearned model (the "after" rows) and
    their artifacts."""
    spec = st.spec
    _check_finite(model, spec.method)
    context = _eval_context(
        spec, st.env, st.carved, st.model0, forgotten, current, st.requests, r, st.replicas
    )
    scored = _for_eval(spec, views)  # D_r maybe a fixed sample (DataSpec.retain_eval)
    num_classes = st.bundle.num_classes
    for split, metric, value in evaluate(model, scored, num_classes, spec.metrics, **context):
        st.emit(r, "after", split, metric, value)
    if context["artifacts"]:
        write_artifacts(st.env.out, spec.run_id, r, context["artifacts"])


def stage_write(st: RunState, model: nn.Module, forgotten: torch.Tensor) -> list[dict[str, Any]]:
    """Stage 6: the meta row, the model when ``--save-model`` asks for it (before the
    records: a run is done only once its model is kept), and every row of the record."""
    spec, supplied, dev = st.spec, st.supplied, st.env.device
    meta = {
        "type": "meta",
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "hparams_resolved": dataclasses.asdict(st.hp) if st.hp is not None else spec.hparams_dict,
        "needs": list(st.needs),
        "code_version": code_version(),
        "hardware": hardware(dev),
        "runtime": runtime.describe(dev),
        "pretrain": st.pre_info,
        "n_train": st.n_train,
        "n_test": len(st.carved.test),
        "n_forget": int(forgotten.numel()),
        "unlearn_seconds": sum(st.seconds) if supplied is None else None,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "special_pretraining": special_pretraining(spec),
        **st.forget_index,
        **(supplied.meta if supplied is not None else {}),
    }
    if st.env.save_model:
        from bench.models.saved_models import save_model

        save_model(st.env.out, spec, model)
    return [meta, *st.rows, {"run_id": spec.run_id, "status": "done"}]


#: trace points kept per (split, metric) and request (evenly spaced, the last one always kept)
MAX_TRACE_POINTS = 200


def thin_trace(points: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` points per (split, metric), evenly spaced over the trace, keeping its
    first and last points, in their original order."""
    out = []
    for key in dict.fromkeys((p["split"], p["metric"]) for p in points):
        series = [p for p in points if (p["split"], p["metric"]) == key]
        if len(series) > limit:
            idx = sorted({round(i * (len(series) - 1) / (limit - 1)) for i in range(limit)})
            series = [series[i] for i in idx]
        out.extend(series)
    return out


#: seed distance between an unlearned model and its replicas (unlearning and retraining seeds)
REPLICA_SEED_STRIDE = 10_000


def _retain_eval_sample(spec: RunSpec, n: int) -> torch.Tensor | None:
    """Which of D_r's ``n`` rows are scored: ``None`` for all, or with
    ``DataSpec.retain_eval = N`` a fixed sample of N positions (seeded by ``split_seed``, in
    index order), so that a CPU run over a large train split does not spend most of its time
    scoring D_r. The method itself always gets all of D_r."""
    keep = spec.data.retain_eval
    if not keep or n <= keep:
        return None
    g = torch.Generator().manual_seed(spec.data.split_seed)
    return torch.randperm(n, generator=g)[:keep].sort().values


def _retain_eval_rows(spec: RunSpec, rows: torch.Tensor) -> torch.Tensor:
    """The train positions of D_r that are scored (:func:`_retain_eval_sample`)."""
    sample = _retain_eval_sample(spec, rows.numel())
    return rows if sample is None else rows.index_select(0, sample)


def _for_eval(spec: RunSpec, views: dict[str, View]) -> dict[str, View]:
    """``views`` as scored: D_r reduced to the rows :func:`_retain_eval_sample` picks."""
    sample = _retain_eval_sample(spec, len(views["retain"])) if "retain" in views else None
    return views if sample is None else {**views, "retain": views["retain"].subset(sample)}


def _eval_context(
    spec: RunSpec,
    env: Env,
    carved: Carved,
    model0: nn.Module,
    forgotten: torch.Tensor,
    current: torch.Tensor,
    requests: int,
    request: int,
    make_replicas,
) -> dict[str, Any]:
    """The optional :class:`bench.metrics.EvalInput` fields after unlearning request
    ``request``: the pretrained model, train positions of the views, a random-init model and,
    with ``pool_size`` (single requests only), the oracle pool and the unlearned replicas."""
    from bench.protocol.oracle import build_oracle_pool

    positions = {
        "forget": forgotten,
        "retain": _retain_eval_rows(spec, retain_positions(len(carved.train), forgotten)),
    }
    if requests > 1:
        positions["forget_request"] = current
    ctx: dict[str, Any] = {
        "original": model0,
        "positions": positions,
        "fresh": lambda: (
            fresh_model(carved.bundle, spec.arch, spec.unlearn_seed + 7, normalize=spec.normalize)
            .to(env.device)
            .eval()
        ),
        "artifacts": {},
    }
    if spec.pool_size > 0 and requests == 1:
        ctx["oracle"] = lambda: build_oracle_pool(
            spec, carved, forgotten, spec.pool_size, env.cache, env.device
        )
        ctx["replicas"] = make_replicas
    return ctx


def write_artifacts(out: Path, run_id: str, request: int, artifacts: dict[str, dict]) -> None:
    """``OUT/artifacts/<run_id>/<name>[-r<request>].npz``, written atomically."""
    import io

    import numpy as np

    from bench.core.records import atomic_write_bytes

    for name, arrays in artifacts.items():
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        suffix = "" if request == 1 else f"-r{request}"
        atomic_write_bytes(out / "artifacts" / run_id / f"{name}{suffix}.npz", buf.getvalue())


def _write_forget_index(out: Path, forget_all: list[torch.Tensor]) -> dict[str, Any]:
    """The run's forget sets as index files (``OUT/forget/<digest>.npy``,
    :func:`bench.data.forget.write_forget_index`), for its meta record: ``forget_index`` = the
    set forgotten by the end of the run; a continual run also lists each request's set
    (``forget_requests``)."""
    from bench.data.forget import write_forget_index

    if len(forget_all) == 1:
        return {"forget_index": write_forget_index(out, forget_all[0])}
    return {
        "forget_index": write_forget_index(out, torch.cat(forget_all)),
        "forget_requests": [write_forget_index(out, p) for p in forget_all],
    }


def _forget_positions(carved: Carved, spec: RunSpec, requests: int) -> list[torch.Tensor]:
    """Positions of each request's forget set. Continual requests are successive blocks of one
    seeded permutation: each new block is drawn from the not-yet-forgotten data."""
    targets = carved.bundle.train.targets.index_select(0, carved.train)
    if requests == 1:
        return [select_forget(targets, spec.forget, spec.forget_seed)]
    if spec.forget.kind != "instance":
        raise BenchError("continual unlearning streams instance requests: use --forget k=N")
    k = spec.forget.k or 0
    n = targets.numel()
    if k * requests >= n:
        raise BenchError(
            f"{requests} requests of k={k} need {k * requests} instances but the "
            f"train split has {n}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(spec.forget_seed))
    return [perm[i * k : (i + 1) * k].sort().values for i in range(requests)]


#: "before" evaluations of this process: the pretrained model on one forget set's views is
#: the same for every method, so runs sharing it (a suite's methods) evaluate it once.
_BEFORE: collections.OrderedDict[str, list[tuple[str, str, float]]] = collections.OrderedDict()
_BEFORE_MAX = 64


def _before(
    spec: RunSpec,
    pre_info: dict,
    forget: torch.Tensor,
    requests: int,
    views: dict[str, View],
    model0: nn.Module,
    num_classes: int,
    cache: Path | None = None,
    device: torch.device | None = None,
) -> list[tuple[str, str, float]]:
    """The "before" rows of the pretrained model on one forget set's views: computed once per
    process, and with ``cache`` kept on disk (``CACHE/before/<key>.json``, keyed also by the
    code version, device type and precision), so that the runs of a suite that share a
    forget set, each in its own worker process, score the pretrained model once (on a CPU,
    scoring 20k CIFAR images costs minutes)."""
    from bench.protocol.oracle import positions_digest

    ident = {
        "pretrain": pre_info.get("key"),
        "data": spec.data,
        "forget": positions_digest(forget),
        "continual": requests > 1,
        "metrics": spec.metrics,
    }
    key = stable_hash(ident)
    if key in _BEFORE:
        _BEFORE.move_to_end(key)
        return _BEFORE[key]
    path = None
    if cache is not None and pre_info.get("key") is not None and device is not None:
        disk = {
            **ident,
            "code": code_version(),
            "device": device.type,
            "precision": runtime.precision(device),
        }
        path = Path(cache) / "before" / f"{stable_hash(disk)}.json"
        rows = _read_before(path)
        if rows is not None:
            _BEFORE[key] = rows
            return rows
    rows = list(evaluate(model0, views, num_classes, spec.metrics))
    if pre_info.get("key") is None:
        return rows
    if path is not None:
        from bench.core.records import atomic_write_text

        atomic_write_text(path, json.dumps([list(r) for r in rows]))
    _BEFORE[key] = rows
    while len(_BEFORE) > _BEFORE_MAX:
        _BEFORE.popitem(last=False)
    return rows


def _read_before(path: Path) -> list[tuple[str, str, float]] | None:
    """Cached "before" rows, or ``None`` (absent, or unreadable: then recomputed)."""
    try:
        rows = json.loads(path.read_text())
        return [(str(a), str(b), float(c)) for a, b, c in rows]
    except (OSError, ValueError, TypeError):
        return None


def _tracer(ctx: Context):
    def trace(step: int, split: str, metric: str, value: float) -> None:
        ctx.traces.append({"step": step, "split": split, "metric": metric, "value": float(value)})

    return trace


def _scratch_trainer(spec: RunSpec, carved: Carved, seed: int):
    def trainer(view: View) -> tuple[nn.Module, int]:
        if spec.recipe.epochs == 0:
            raise BenchError(f"retraining {spec.arch} from scratch needs a recipe with epochs > 0")
        model = fresh_model(carved.bundle, spec.arch, seed, spec.recipe.pretrained, spec.normalize)
        model.to(view.device)
        steps = train(model, view, spec.recipe, seed)
        return model, steps

    return trainer


def _check_finite(model: nn.Module, method: str) -> None:
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise FloatingPointError(f"method {method!r} produced non-finite values in {name}")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_mb(dev: torch.device) -> float:
    """Peak GPU memory of the unlearning step on CUDA; on CPU the process's peak RSS (a
    process-wide high-water mark: an upper bound for the step)."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def execute(
    spec: RunSpec, env: Env, skip_done: bool = True, supplied: Supplied | None = None
) -> str:
    """Run ``spec`` and write its record file; returns ``done``, ``skipped`` or ``failed``.
    Never raises for a failing run (the failure is recorded and the suite goes on).
    ``supplied``: models unlearned elsewhere (:func:`run`)."""
    if skip_done and run_status(env.out, spec.run_id) == "done":
        return "skipped"
    with run_lock(env.out, spec.run_id) as mine:
        if not mine:
            return "running"  # another process (job) is running it right now
        if skip_done and run_status(env.out, spec.run_id) == "done":
            return "skipped"  # finished by another process while we waited for the lock
        return _execute(spec, env, supplied)


def lock_path(out: Path, run_id: str) -> Path:
    return Path(out) / "locks" / f"{run_id}.lock"


@contextlib.contextmanager
def run_lock(out: Path, run_id: str):
    """A non-blocking exclusive lock on one run: yields True when this process holds it,
    False when another process does (the kernel drops it when its holder dies, so a killed or
    preempted job never leaves a stale lock)."""
    path = lock_path(out, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_running(out: Path, run_id: str) -> bool:
    """Whether some process holds ``run_id``'s lock now."""
    path = lock_path(out, run_id)
    if not path.exists():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _execute(spec: RunSpec, env: Env, supplied: Supplied | None = None) -> str:
    """Run and record ``spec``. A write that fails for lack of space (records or cache) fails
    the run, recorded where the short failure record still fits, and raises
    :class:`DiskFullError` so that the executor launches no more runs."""
    try:
        rows = run(spec, env, supplied)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one run is recorded, not fatal
        full = disk_error(exc)
        if full is None:
            log.error("run %s (%s) failed: %s", spec.run_id, spec.method, exc)
        error = f"{type(exc).__name__}: {exc}"
        unrecorded = _record_failure(spec, env, error, traceback.format_exc())
        if full is not None or unrecorded is not None:
            raise _disk_full(spec, full or unrecorded, unrecorded is None) from exc
        return "failed"
    try:
        write_records(env.out, spec.run_id, rows)
    except OSError as exc:
        full = disk_error(exc)
        if full is None:
            raise
        unrecorded = _record_failure(spec, env, f"OSError: {exc}", "")
        raise _disk_full(spec, full, unrecorded is None) from exc
    return "done"


def _record_failure(spec: RunSpec, env: Env, error: str, tb: str) -> OSError | None:
    """Write ``spec``'s failure record; returns the disk error when it does not fit."""
    meta = {
        "type": "meta",
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "code_version": code_version(),
        "hardware": hardware(env.device),
    }
    failed = {"run_id": spec.run_id, "status": "failed", "error": error, "traceback": tb}
    try:
        write_records(env.out, spec.run_id, [meta, failed])
    except OSError as exc:
        if disk_error(exc) is None:
            raise
        return disk_error(exc)
    return None


def _disk_full(spec: RunSpec, err: OSError, recorded: bool) -> DiskFullError:
    outcome = (
        f"run {spec.run_id} ({spec.method}) is recorded as failed"
        if recorded
        else f"run {spec.run_id} ({spec.method}) failed and could not be recorded"
    )
    return DiskFullError(disk_full_message(err, outcome=outcome))
