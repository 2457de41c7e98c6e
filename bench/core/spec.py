"""Run specifications: frozen dataclasses whose canonical JSON form is hashed into ``run_id``.

Everything that changes a result is in the spec; nothing machine-specific (paths, devices) is.
A test pins one hash so that any change to the canonical form is deliberate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.core.errors import BenchError

SPEC_VERSION = 1  # bump when the meaning of a field changes (invalidates every run_id)
#: field metadata key of a field added after records existed: the canonical form (and so every
#: hash: run ids, pretraining and oracle cache keys) leaves it out while it has its default
LATER = "later"


def canonical_json(obj: Any) -> str:
    """Stable JSON: sorted keys, no whitespace, dataclasses as dicts, tuples as lists."""
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def stable_hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: _plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not (f.metadata.get(LATER) and getattr(obj, f.name) == f.default)
        }
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer() and abs(obj) < 2**53:
        return obj  # keep 1.0 as 1.0: json writes it so, and it hashes stably
    return obj


@dataclass(frozen=True)
class DataSpec:
    """Which dataset, and how its train split is carved.

    ``val_fraction`` holds a stratified validation split out of train (seeded by ``split_seed``);
    ``train_subset`` keeps only the first N of a seeded permutation of train (CPU-sized suites);
    ``test_subset`` likewise for the test split.

    ``val_from="test"`` takes the validation split out of the test split instead (after
    ``test_subset``): torch's ``random_split(test, [1 - val_fraction, val_fraction])`` with a
    generator seeded by ``split_seed``, as the Nabla-tau notebooks split CIFAR's test set into
    test and validation halves (``val_fraction=0.5``); train is then used whole.

    ``retain_eval = N`` scores the retained set (D_r accuracy and every retain metric) on a
    fixed sample of N of its instances, drawn with ``split_seed``, in index order; unlearning
    still uses all of D_r. Left out of the hashes while unset.
    """

    name: str = "digits"
    val_fraction: float = 0.0
    train_subset: int | None = None
    test_subset: int | None = None
    split_seed: int = 0
    val_from: Literal["train", "test"] = field(default="train", metadata={LATER: True})
    #: score D_r on a fixed sample of this many retain instances (seeded by ``split_seed``)
    #: instead of all of them; the methods still get all of D_r (CPU runs on 50k images)
    retain_eval: int | None = field(default=None, metadata={LATER: True})


@dataclass(frozen=True)
class Recipe:
    """A training recipe (pretraining and retraining-from-scratch use the same one)."""

    epochs: int = 30
    batch_size: int = 128
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    augment: Literal["none", "crop_flip", "crop"] = "none"
    crop_padding: int = 4
    label_smoothing: float = 0.0
    pretrained: bool = False  # take the architecture's published weights, train `epochs` more


@dataclass(frozen=True)
class ForgetSpec:
    """What to forget.

    * ``instance``: the first ``k`` of a permutation of train seeded by the run's forget seed,
      so forget sets of growing k are nested prefixes (the L2UL protocol);
    * ``fraction``: the same permutation, first ``round(fraction * N)`` instances;
    * ``class``: every training instance of the listed classes.
    """

    kind: Literal["instance", "fraction", "class"] = "instance"
    k: int | None = None
    fraction: float | None = None
    classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind == "instance" and (self.k is None or self.k < 1):
            raise BenchError(f"instance forget sets need k >= 1 (got k={self.k})")
        if self.kind == "fraction" and not (self.fraction and 0 < self.fraction < 1):
            raise BenchError(f"fraction forget sets need 0 < fraction < 1 (got {self.fraction})")
        if self.kind == "class" and not self.classes:
            raise BenchError("class forget sets need at least one class index")
        if self.kind not in ("instance", "fraction", "class"):
            raise BenchError(f"forget kind must be instance, fraction or class (got {self.kind!r})")

    @property
    def label(self) -> str:
        if self.kind == "instance":
            return f"k={self.k}"
        if self.kind == "fraction":
            return f"frac={self.fraction:g}"
        return "class=" + "+".join(str(c) for c in self.classes or ())

    @classmethod
    def parse(cls, text: str) -> ForgetSpec:
        """``16`` or ``k=16`` -> instance; ``10%`` or ``frac=0.1`` -> fraction; ``class=3`` or
        ``class=3+5`` -> class."""
        t = text.strip().lower().replace(" ", "")
        try:
            if t.startswith("class=") or t.startswith("class:"):
                return cls("class", classes=tuple(int(c) for c in t[6:].split("+")))
            if t.endswith("%"):
                return cls("fraction", fraction=float(t[:-1]) / 100)
            if t.startswith("frac=") or t.startswith("fraction="):
                return cls("fraction", fraction=float(t.split("=", 1)[1]))
            if t.startswith("k="):
                t = t[2:]
            return cls("instance", k=int(t))
        except ValueError:
            raise BenchError(
                f"cannot read forget spec {text!r}: use 16 or k=16 (instances), 10% or frac=0.1 "
                f"(random fraction), class=3 or class=3+5 (whole classes)"
            ) from None


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one unlearning run. ``run_id`` hashes its canonical form.

    Three seeds are kept apart: ``train_seed`` (pretraining init and data order; shared across
    replicates when a suite reuses one pretrained model, as L2UL does), ``forget_seed`` (which
    instances are forgotten) and ``unlearn_seed`` (the method's own randomness). ``seed`` is the
    replicate index that tables average over.
    """

    method: str
    data: DataSpec = field(default_factory=DataSpec)
    arch: str = "smallcnn"
    recipe: Recipe = field(default_factory=Recipe)
    forget: ForgetSpec = field(default_factory=lambda: ForgetSpec("instance", k=16))
    hparams: tuple[tuple[str, Any], ...] = ()
    seed: int = 0
    train_seed: int = 0
    forget_seed: int = 0
    unlearn_seed: int = 0
    metrics: tuple[str, ...] = ("accuracy",)
    suite: str = ""
    scenario: Literal["single", "continual"] = "single"
    requests: int = 1
    spec_version: int = SPEC_VERSION
    # K oracle models retrained without D_f and K unlearned replicas for the distribution-level
    # metrics (KLOM, challenge epsilon, population epsilon); 0 = no pool
    pool_size: int = 0
    # start from a user's weights instead of pretraining: "sha256:<hex>" of the file imported
    # into the cache (bench.models.checkpoint); "" = pretrain with ``recipe``
    checkpoint: str = field(default="", metadata={LATER: True})
    # the input normalization (means, stds per channel) of every model of the run, when not
    # the architecture's or the dataset's (--normalize: what a user's weights expect)
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = field(
        default=None, metadata={LATER: True}
    )
    # the hyperparameters were selected by this study of ``python -m bench.tune`` (its name);
    # "" = the suite's own (default) hyperparameters. A tuned run with the defaults' values is
    # another run: the default and tuned rows of a method stay apart in every report
    tuned: str = field(default="", metadata={LATER: True})

    @property
    def dataset(self) -> str:
        return self.data.name

    @property
    def hparams_dict(self) -> dict[str, Any]:
        return dict(self.hparams)

    @property
    def run_id(self) -> str:
        # the suite name is a label, not a cause of results: identical runs share an id.
        # Fields added after spec version 1 enter the hash only when set, so that the ids of
        # existing records stay valid.
        d = _plain(dataclasses.replace(self, suite=""))
        for name, default in _LATER_FIELDS.items():
            if d.get(name, default) == default:
                d.pop(name, None)
        return stable_hash(d)

    def to_dict(self) -> dict[str, Any]:
        d = _plain(self)
        d["hparams"] = dict(self.hparams)
        d["run_id"] = self.run_id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        """The inverse of :meth:`to_dict` (checked: the rebuilt spec has the same run id)."""
        d = dict(d)
        want = d.pop("run_id", None)
        forget = dict(d.pop("forget"))
        if forget.get("classes") is not None:
            forget["classes"] = tuple(forget["classes"])
        spec = cls(
            data=DataSpec(**d.pop("data")),
            recipe=Recipe(**d.pop("recipe")),
            forget=ForgetSpec(**forget),
            hparams=cls.hparams_tuple(
                {k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("hparams").items()}
            ),
            metrics=tuple(d.pop("metrics")),
            normalize=_pair(d.pop("normalize", None)),
            **d,
        )
        if want is not None and spec.run_id != want:
            raise BenchError(f"spec does not rebuild to run {want} (got {spec.run_id})")
        return spec

    @staticmethod
    def hparams_tuple(hp: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted(hp.items()))


#: fields added to RunSpec after records existed, with their defaults (see ``run_id``)
_LATER_FIELDS: dict[str, Any] = {
    "pool_size": 0,
    "checkpoint": "",
    "normalize": None,
    "tuned": "",
}


def _pair(v):
    """JSON lists back to the (means, stds) tuple pair (``None`` stays ``None``)."""
    return None if v is None else (tuple(v[0]), tuple(v[1]))


def parse_normalize(text: str, channels: int | None = None):
    """``--normalize``: ``M1,M2,M3/S1,S2,S3`` or 2C comma-separated numbers (the C means, then
    the C stds); ``M,S`` means one mean and one std for every channel (repeated here when
    ``channels`` is known, else by ``bench.models.archs.build_model``). Returns the ``(means,
    stds)``
    pair of tuples."""
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            means = tuple(float(v) for v in a.split(","))
            stds = tuple(float(v) for v in b.split(","))
        else:
            vals = [float(v) for v in text.split(",")]
            if len(vals) % 2:
                raise ValueError
            means, stds = tuple(vals[: len(vals) // 2]), tuple(vals[len(vals) // 2 :])
    except ValueError:
        raise BenchError(
            f"cannot read --normalize {text!r}: give the means then the stds per channel, e.g. "
            f"0.4914,0.4822,0.4465/0.2023,0.1994,0.2010"
        ) from None
    if len(means) != len(stds) or not means:
        raise BenchError(f"--normalize {text!r}: as many stds as means are needed")
    if any(s <= 0 for s in stds):
        raise BenchError(f"--normalize {text!r}: the stds must be > 0")
    if channels and len(means) == 1 and channels > 1:
        means, stds = means * channels, stds * channels
    return means, stds
