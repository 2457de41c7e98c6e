"""The suite machinery: :class:`Grid` (methods x forget sets x seeds on one dataset),
:class:`Composite` (several suites as one plan), the suite registry and the plan-size bound.
The suites themselves are registered by ``bench.suites.catalog`` and ``bench.suites.salun``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.core.errors import BenchError
from bench.core.registry import Registry
from bench.core.spec import DataSpec, ForgetSpec, Recipe, RunSpec
from bench.unlearning.method import METHODS, make_hparams

SUITES = Registry("suite")

# (default arch, pretraining recipe) per dataset
DATASET_DEFAULTS: dict[str, tuple[str, Recipe]] = {
    "digits": ("smallcnn", Recipe(epochs=20, batch_size=64, lr=0.02, weight_decay=5e-4)),
    "synthetic": ("smallcnn", Recipe(epochs=15, batch_size=32, lr=0.05, weight_decay=5e-4)),
    # L2UL: 200 epochs, SGD 0.01, momentum 0.9, wd 5e-4, cosine, batch 128, crop + flip
    "cifar10": ("resnet18_cifar", Recipe(epochs=200, batch_size=128, lr=0.01, augment="crop_flip")),
    "cifar100": (
        "resnet50_cifar",
        Recipe(epochs=200, batch_size=128, lr=0.01, augment="crop_flip"),
    ),
    "imagenet": ("tv_resnet50", Recipe(epochs=0, pretrained=True)),
}


#: the most runs a plan may hold unless ``--max-runs`` raises it (checked before it is built)
MAX_RUNS = 100_000


def check_size(n: int, max_runs: int) -> None:
    if n > max_runs:
        raise BenchError(
            f"this selection makes {n:,} runs, over the limit of {max_runs:,}: narrow --seeds, "
            "--method or --forget, or raise --max-runs"
        )


@dataclass(frozen=True)
class Grid:
    """A suite: every combination of ``methods`` x ``forgets`` x ``seeds`` on one dataset.

    With ``share_pretraining`` (the L2UL protocol) all seeds unlearn the same pretrained model
    (train seed 0) and the seed varies the forget set and the method's randomness; otherwise
    the seed also varies pretraining.
    """

    name: str
    description: str
    data: DataSpec
    arch: str | None = None
    recipe: Recipe | None = None
    methods: tuple[str, ...] = ("*",)
    forgets: tuple[ForgetSpec, ...] = (ForgetSpec("instance", k=16),)
    seeds: tuple[int, ...] = (0, 1)
    metrics: tuple[str, ...] = ("accuracy",)
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    scenario: str = "single"
    requests: int = 1
    share_pretraining: bool = True
    pool_size: int = 0  # oracle models / unlearned replicas for the distribution metrics
    #: start every run from these weights instead of pretraining (``--checkpoint``): a path,
    #: relative ones looked up under the data root (``--data-root`` / ``$BENCH_DATA``) first
    checkpoint: str = ""
    #: the input normalization (means, stds) the checkpoint expects, when not the arch's
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def expand(
        self,
        methods: Sequence[str] | None = None,
        dataset: str | None = None,
        arch: str | None = None,
        forgets: Sequence[ForgetSpec] | None = None,
        seeds: Sequence[int] | None = None,
        hp_overrides: dict[str, dict[str, Any]] | None = None,
        data_overrides: dict[str, Any] | None = None,
        checkpoint: str = "",
        normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
        data_root=None,
        max_runs: int = MAX_RUNS,
    ) -> list[RunSpec]:
        """The grid's runs, narrowed or changed by the options. ``checkpoint``: a path (or a
        ``sha256:`` reference) of weights to start from instead of the suite's own
        ``checkpoint`` (a path looked up under ``data_root``, default ``$BENCH_DATA``, first, see
        :func:`bench.models.checkpoint.reference`); the files are imported into the cache at
        launch."""
        data = self.data
        if dataset and dataset != data.name:
            data = DataSpec(name=dataset)
        if data_overrides:
            data = dataclasses.replace(data, **data_overrides)
        default_arch, default_recipe = dataset_defaults(data.name)
        same_data = data.name == self.data.name
        the_arch = arch or (self.arch if same_data and self.arch else default_arch)
        recipe = self.recipe if same_data and self.recipe else default_recipe
        ckpt = checkpoint or (self.checkpoint if same_data else "")
        if ckpt:
            from bench.data import data_root as env_root
            from bench.models.checkpoint import reference

            ckpt = reference(ckpt, data_root if data_root is not None else env_root())
        names: list[str] = []
        for pat in methods or self.methods:
            names.extend(n for n in METHODS.resolve(pat) if n not in names)
        check_size(self.count(names, forgets, seeds), max_runs)
        specs = []
        for m in names:
            hp = {**self.hparams.get(m, {}), **(hp_overrides or {}).get(m, {})}
            resolved = dataclasses.asdict(make_hparams(m, hp))  # validates names and types
            kinds = METHODS.entry(m).meta.get("forget_kinds")
            for fg in forgets or self.forgets:
                if kinds and fg.kind not in kinds:
                    continue  # e.g. mnemonic codes remove whole classes only
                for s in seeds if seeds is not None else self.seeds:
                    specs.append(
                        RunSpec(
                            method=m,
                            data=data,
                            arch=the_arch,
                            recipe=recipe,
                            forget=fg,
                            hparams=RunSpec.hparams_tuple(resolved),
                            seed=s,
                            train_seed=0 if self.share_pretraining else s,
                            forget_seed=s,
                            unlearn_seed=s,
                            metrics=self.metrics,
                            suite=self.name,
                            scenario=self.scenario,
                            requests=self.requests,
                            pool_size=self.pool_size,
                            checkpoint=ckpt,
                            normalize=normalize
                            if normalize is not None
                            else (self.normalize if same_data else None),
                        )
                    )
        unknown = [h for h in (hp_overrides or {}) if h not in names]
        if unknown:
            raise BenchError(f"--hp names methods not in this run: {', '.join(unknown)}")
        return specs

    def count(
        self,
        names: Sequence[str],
        forgets: Sequence[ForgetSpec] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> int:
        """How many runs :meth:`expand` makes for these methods, forget sets and seeds, counted
        without building them."""
        n_seeds = len(seeds if seeds is not None else self.seeds)
        total = 0
        for m in names:
            kinds = METHODS.entry(m).meta.get("forget_kinds")
            total += n_seeds * sum(not kinds or f.kind in kinds for f in forgets or self.forgets)
        return total


def dataset_defaults(name: str) -> tuple[str, Recipe]:
    from bench.data import DATASETS

    DATASETS.entry(name)  # unknown dataset -> nearest names; any folder:PATH is known
    if name not in DATASET_DEFAULTS:
        # folder:PATH datasets (and registered ones without defaults): smallcnn takes any
        # channel count and image size, and the generic Recipe() (30 epochs, SGD 0.01, cosine)
        # has no augmentation, because padded crops and flips are wrong for some image kinds
        # (digits, text, medical scans); a known kind takes --arch (and a suite with a recipe)
        return "smallcnn", Recipe()
    return DATASET_DEFAULTS[name]


def register_suite(grid: Grid) -> Grid:
    SUITES.add(grid.name, grid, description=grid.description)
    return grid


CHEAP_METRICS = (
    "accuracy",
    "ua",
    "ra",
    "ta",
    "per_class_accuracy",
    "zrf",
    "mia_loss",
    "mia_entropy",
    "mia_svc",
    "mia_entropy_shadow",
)
#: metrics that retrain models (oracle pool), rerun the method, or fine-tune: named by suites
EXPENSIVE_METRICS = (
    "klom",
    "klom_easydub",
    "challenge_score",
    "fqs",
    "ulira",
    "relearn_time",
    "representation",
    "mia_entropy_shadow_svc",
)

# Nabla-tau (Trippa et al. 2024, spec section 3): random-subset forgetting of 3 / 15 / 30 % of
# train against the notebooks' own baselines: their fine-tuning (nabla_tau_ft: the same loop at
# alpha0 = 0 for twice the forget-epochs) and retraining; MIA_L / MIA_E as in the paper. The
# notebooks' data layout (github.com/dnl-trpp/Nabla-Tau @ 1012093): pretraining on all of train,
# the test set split 50/50 by random_split(seed = the notebook's SEED) into test and D_v.


@dataclass(frozen=True)
class Composite:
    """A suite made of other suites, expanded as one plan (``--suite full``). Narrowing options
    (methods, forgets, seeds, hyperparameters) apply to every part that has them."""

    name: str
    description: str
    parts: tuple[str, ...]

    def expand(
        self,
        methods: Sequence[str] | None = None,
        dataset: str | None = None,
        arch: str | None = None,
        forgets: Sequence[ForgetSpec] | None = None,
        seeds: Sequence[int] | None = None,
        hp_overrides: dict[str, dict[str, Any]] | None = None,
        data_overrides: dict[str, Any] | None = None,
        checkpoint: str = "",
        normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
        data_root=None,
        max_runs: int = MAX_RUNS,
    ) -> list[RunSpec]:
        if dataset or arch or data_overrides or checkpoint or normalize:
            raise BenchError(
                f"suite {self.name!r} spans several datasets: --dataset, --arch, --val-fraction, "
                f"--train-subset, --checkpoint and --normalize apply to one of its parts "
                f"({', '.join(self.parts)})"
            )
        wanted = None
        if methods:
            wanted = {n for pat in methods for n in METHODS.resolve(pat)}
        specs: dict[str, RunSpec] = {}
        used: set[str] = set()
        total = 0
        for part in self.parts:  # counted before any part is built
            grid = SUITES.get(part)
            names = {n for pat in grid.methods for n in METHODS.resolve(pat)}
            total += grid.count(
                sorted(names & wanted if wanted is not None else names), forgets, seeds
            )
        check_size(total, max_runs)
        for part in self.parts:
            grid = SUITES.get(part)
            names = {n for pat in grid.methods for n in METHODS.resolve(pat)}
            if wanted is not None:
                names &= wanted
                if not names:
                    continue
            used |= names
            hp = {m: v for m, v in (hp_overrides or {}).items() if m in names}
            for s in grid.expand(
                methods=sorted(names),
                forgets=forgets,
                seeds=seeds,
                hp_overrides=hp,
                data_root=data_root,
            ):
                specs.setdefault(s.run_id, s)
        unknown = [h for h in (hp_overrides or {}) if h not in used]
        if unknown:
            raise BenchError(f"--hp names methods not in this run: {', '.join(unknown)}")
        return list(specs.values())


def register_composite(suite: Composite) -> Composite:
    missing = [p for p in suite.parts if p not in SUITES]
    if missing:
        raise ValueError(f"composite suite {suite.name!r}: unknown parts {missing}")
    SUITES.add(suite.name, suite, description=suite.description)
    return suite
