"""The method interface: ``fn(model, data, hp, ctx) -> model``.

* ``data`` (:class:`UnlearnData`) holds the forget set and, only when the method declares it
  needs them, the retain and validation sets. Undeclared sets are :class:`Withheld`: touching
  them raises, so a method cannot silently use data it claims not to need.
* ``hp`` is the method's own frozen dataclass of hyperparameters with paper defaults.
* ``ctx`` (:class:`Context`) gives the device, a seeded CPU generator, the pretraining recipe
  (for retraining), and counters (steps, cap hit, extra scalars) that end up in the records.

A method never reads files, picks devices or seeds itself. Register with
``@register_method("name", hparams=MyHP, needs=("forget", "retain"))``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.core.errors import BenchError
from bench.core.reference import check_references
from bench.core.registry import Registry, load_entry_point_methods
from bench.core.spec import Recipe
from bench.data import View

DATA_KINDS = ("forget", "retain", "val")


def _load_methods() -> None:
    importlib.import_module("methods")
    load_entry_point_methods(METHODS)


METHODS = Registry("method", loader=_load_methods)


@dataclass(frozen=True)
class NoHParams:
    """For methods without hyperparameters."""


def register_method(
    name: str,
    *,
    hparams: type = NoHParams,
    needs: tuple[str, ...] | Callable[[Any], tuple[str, ...]] = ("forget",),
    special_pretraining: str | Callable[[Any], str | None] | None = None,
    summary: str = "",
    **meta: Any,
) -> Callable:
    """Register an unlearning method.

    ``needs`` lists the data the method may see (``forget``, ``retain``, ``val``), or is a
    function of the hyperparameters returning that list (e.g. a ``use_retain`` switch).
    ``special_pretraining`` names a pretraining variant the method requires (e.g. mnemonic
    codes), or is a function of the hyperparameters returning that name (so that a
    pretraining hyperparameter such as a mixing rate can vary per run); the name is part of the
    pretraining cache key (:func:`method_special_pretraining`). Other keywords are stored as
    metadata; conventional ones: ``citation``, ``reference`` (URL of the reference
    implementation), ``references`` (:class:`bench.core.reference.Reference` records: repository,
    commit, file and conformance test), ``deviations`` (strings: the known deviations from
    those references), ``no_reference`` (why a method has none), ``quick_hp``
    (hyperparameter overrides that make the method run in about a second on the tests' toy
    data).
    """
    if not (dataclasses.is_dataclass(hparams) and hparams.__dataclass_params__.frozen):
        raise BenchError(f"method {name!r}: hparams must be a frozen dataclass")
    if "references" in meta:
        meta["references"] = check_references(meta["references"])
    if isinstance(meta.get("deviations"), str):
        meta["deviations"] = (meta["deviations"],)

    def deco(fn: Callable) -> Callable:
        METHODS.add(
            name,
            fn,
            hparams=hparams,
            needs=needs,
            special_pretraining=special_pretraining,
            summary=summary or (fn.__doc__ or "").strip().split("\n")[0],
            **meta,
        )
        return fn

    return deco


def method_needs(name: str, hp: Any) -> tuple[str, ...]:
    needs = METHODS.entry(name).meta.get("needs", ("forget",))
    needs = tuple(needs(hp)) if callable(needs) else tuple(needs)
    bad = [n for n in needs if n not in DATA_KINDS]
    if bad:
        raise BenchError(f"method {name!r} declares unknown data needs {bad}; use {DATA_KINDS}")
    return needs


def method_special_pretraining(name: str, hp: Any = None) -> str | None:
    """The pretraining variant method ``name`` requires with hyperparameters ``hp`` (``None``
    for ordinary pretraining). ``hp=None`` uses the method's defaults."""
    special = METHODS.entry(name).meta.get("special_pretraining")
    if callable(special):
        special = special(hp if hp is not None else make_hparams(name))
    return special


def make_hparams(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """The method's hyperparameter dataclass with its defaults, updated by ``overrides``
    (values are coerced to the field's default type, so CLI strings work)."""
    cls = METHODS.entry(name).meta["hparams"]
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in overrides.items():
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=3)
            hint = f"did you mean {', '.join(near)}?" if near else f"known: {', '.join(fields)}"
            raise BenchError(f"method {name!r} has no hyperparameter {key!r}: {hint}")
        kwargs[key] = _coerce(value, fields[key], cls)
    hp = cls(**kwargs)
    check_hparams(name, hp)
    return hp


#: field metadata keys of a hyperparameter dataclass, declared with :func:`hparam`
RANGE, CHOICES = "range", "choices"
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def hparam(
    default: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A hyperparameter field with declared constraints, checked by :func:`make_hparams`
    (so before anything runs), e.g. ``forget_epochs: int = hparam(0, ge=0)`` (0 = a rule) or
    ``bn_mode: str = hparam("eval", choices=("eval", "train"))``. A declaration replaces the
    generic constraint of the field's name (:func:`default_range`); ``hparam(x)`` declares none."""
    bounds = tuple(
        (op, v) for op, v in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if v is not None
    )
    meta: dict[str, Any] = {RANGE: bounds}
    if choices is not None:
        meta[CHOICES] = tuple(choices)
    return field(default=default, metadata=meta)


def default_range(name: str, default: Any) -> tuple[tuple[str, float], ...]:
    """The constraint of a numeric hyperparameter that declares none, by its name: learning
    rates (``lr``, ``*_lr``) > 0; batch sizes (``*batch*``, ``chunk``), epoch and step counts
    (``epochs``, ``*_epochs``, ``*_steps``, ``iters``) >= 1; ``weight_decay``, ``lam``,
    ``lambda*`` >= 0; ``momentum`` in [0, 1); ``*_fraction``, ``*_ratio`` in [0, 1];
    ``temperature`` > 0. Other names: any finite number."""
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return ()
    if name == "lr" or name.endswith("_lr") or name == "temperature":
        return ((">", 0),)
    if "batch" in name or name == "chunk":
        return ((">=", 1),)
    if name in ("epochs", "iters") or name.endswith(("_epochs", "_steps")):
        return ((">=", 1),)
    if name in ("weight_decay", "lam") or name.startswith("lambda"):
        return ((">=", 0),)
    if name == "momentum":
        return ((">=", 0), ("<", 1))
    if name.endswith(("_fraction", "_ratio")):
        return ((">=", 0), ("<=", 1))
    return ()


def check_hparams(name: str, hp: Any) -> None:
    """Raise :class:`BenchError` unless every numeric hyperparameter of method ``name`` is
    finite and within its declared (:func:`hparam`) or generic (:func:`default_range`) range,
    every string is one of its declared choices, and an ``objective`` is a known one."""
    for f in dataclasses.fields(hp):
        value = getattr(hp, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        where = f"method {name!r}: hyperparameter {f.name}"
        if isinstance(value, float) and not math.isfinite(value):
            raise BenchError(f"{where} must be a finite number, got {value} (default {default})")
        bounds = f.metadata.get(RANGE, default_range(f.name, default))
        if bounds and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise BenchError(f"{where} must be a number, got {value!r} (default {default})")
        for op, bound in bounds:
            if not _OPS[op](value, bound):
                want = " and ".join(f"{o} {b}" for o, b in bounds)
                raise BenchError(f"{where} must be {want}, got {value} (default {default})")
        choices = f.metadata.get(CHOICES)
        if choices is not None and value not in choices:
            raise BenchError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
    if any(f.name == "objective" for f in dataclasses.fields(hp)):
        try:
            check_objective(hp)
        except BenchError as exc:
            raise BenchError(f"method {name!r}: {exc}") from None


def _coerce(value: Any, f: dataclasses.Field, cls: type) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else None
    if not isinstance(value, str) or default is None or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return type(default)(value)
    except ValueError:
        raise BenchError(
            f"{cls.__name__}.{f.name} expects {type(default).__name__}, got {value!r}"
        ) from None


class Withheld:
    """Placeholder for data a method did not declare; any use raises with the fix."""

    def __init__(self, what: str, method: str):
        self._what, self._method = what, method

    def __bool__(self) -> bool:
        return False

    def __len__(self) -> int:
        raise PermissionError(self._msg())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise PermissionError(self._msg())

    def __iter__(self):
        raise PermissionError(self._msg())

    def _msg(self) -> str:
        return (
            f"method {self._method!r} used the {self._what} set without declaring it: add "
            f"{self._what!r} to needs= in its @register_method"
        )


@dataclass
class UnlearnData:
    forget: View
    retain: View | Withheld
    val: View | Withheld
    num_classes: int


@dataclass
class Context:
    """What a method may use besides model, data and hyperparameters."""

    device: torch.device
    seed: int
    generator: torch.Generator
    recipe: Recipe
    num_classes: int
    method: str = ""
    trainer: Callable[[View], tuple[nn.Module, int]] | None = None
    log: Callable[[str], None] = lambda msg: None
    steps: int = 0
    cap_hit: bool = False
    #: the model was rolled back to an earlier step (:meth:`rewind`)
    rewound: bool = False
    extra: dict[str, float] = field(default_factory=dict)
    traces: list[dict[str, Any]] = field(default_factory=list)
    #: what the method's special pretraining stored with the checkpoint (e.g. the mnemonic
    #: codes, ``bench.unlearning.mnemonic``); empty for ordinary pretraining
    pretrain_artifacts: dict[str, Any] = field(default_factory=dict)
    #: builds an untrained model of the run's architecture, unseeded (the protocol passes
    #: :func:`bench.models.archs.build_model` with the run's arch); see :meth:`fresh_model`
    model_builder: Callable[[], nn.Module] | None = None
    _t0: float = field(default_factory=time.perf_counter)

    def augmentation(self, choice: str) -> str:
        """A method's ``augment`` hyperparameter as a loader's: ``"recipe"`` = the pretraining
        recipe's augmentation; any other value as it is."""
        return self.recipe.augment if choice == "recipe" else choice

    def train_from_scratch(self, view: View) -> nn.Module:
        """A fresh model trained with the pretraining recipe from the run's train seed on
        ``view`` (what ``retrain`` does); its optimizer steps are counted."""
        if self.trainer is None:
            raise RuntimeError("this context has no trainer (the protocol provides one)")
        model, steps = self.trainer(view)
        self.step(steps)
        return model

    def fresh_model(self) -> nn.Module:
        """A new, untrained model of the run's architecture with its constructor's own
        initialisation (what a reference's ``Net(num_classes=...)`` gives), seeded from one
        63-bit draw of ``generator``; the global RNG state is left as it was. On ``device``, in
        eval mode."""
        if self.model_builder is None:
            raise RuntimeError("this context has no model builder (the protocol provides one)")
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            model = self.model_builder()
        return model.to(self.device).eval()

    def trace(
        self, metric: str, value: float, split: str = "forget", step: int | None = None
    ) -> None:
        """A point of a trace over unlearning progress (x = ``step``, default the optimizer
        steps so far); the protocol stores traces as ``stage: "trace"`` rows with a ``step``
        field."""
        step = self.steps if step is None else int(step)
        self.traces.append({"step": step, "split": split, "metric": metric, "value": float(value)})

    def rewind(self, step: int) -> None:
        """Forget the steps after ``step``: the model was rolled back to its state after that
        step (``bench.unlearning.loops.DeferredStop``). Drops later trace points (the progress
        probe's included) and marks the context ``rewound``."""
        self.steps = int(step)
        self.traces[:] = [p for p in self.traces if p["step"] <= self.steps]
        self.rewound = True

    def step(self, n: int = 1) -> None:
        self.steps += n

    def report(self, name: str, value: float) -> None:
        """Record a method-specific scalar (``stage=unlearn``) in the run's records."""
        self.extra[name] = float(value)


def resolve_hparams(spec) -> Any:
    """A run spec's hyperparameters as its method's dataclass (defaults filled in, checked)."""
    return make_hparams(spec.method, spec.hparams_dict)


def special_pretraining(spec) -> str | None:
    """The pretraining variant ``spec``'s method requires (``None``: ordinary pretraining, and
    for a method not registered here: a model unlearned elsewhere, scored by ``bench.eval``)."""
    if spec.method not in METHODS:
        return None
    if callable(METHODS.entry(spec.method).meta.get("special_pretraining")):
        return method_special_pretraining(spec.method, resolve_hparams(spec))
    return METHODS.entry(spec.method).meta.get("special_pretraining")


#: the ``objective`` hyperparameter of the methods that have one (the L2UL family, finetune,
#: random labels; spec section 5)
OBJECTIVES = ("misclassify", "relabel")


def check_objective(hp) -> None:
    """Validate ``hp.objective`` (and its combination with the adversarial target range)."""
    objective = getattr(hp, "objective", "misclassify")
    if objective not in OBJECTIVES:
        raise BenchError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if objective == "relabel" and getattr(hp, "target_label_range", "all") == "first10":
        raise BenchError(
            "objective='relabel' needs target_label_range='all': adversarial targets must "
            "exclude the new labels y*, which the 'first10' draw of the official code cannot do"
        )
