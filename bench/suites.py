"""Suites: named grids of runs (datasets x methods x forget sets x seeds), registered by name.

Each dataset has default architecture and pretraining recipe (``DATASET_DEFAULTS``): the
paper recipes for CIFAR/ImageNet (spec section 1.7), small ones for the embedded data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError
from bench.method import METHODS, make_hparams
from bench.registry import Registry
from bench.spec import DataSpec, ForgetSpec, Recipe, RunSpec

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

    def expand(
        self,
        methods: Sequence[str] | None = None,
        dataset: str | None = None,
        arch: str | None = None,
        forgets: Sequence[ForgetSpec] | None = None,
        seeds: Sequence[int] | None = None,
        hp_overrides: dict[str, dict[str, Any]] | None = None,
        data_overrides: dict[str, Any] | None = None,
    ) -> list[RunSpec]:
        data = self.data
        if dataset and dataset != data.name:
            data = DataSpec(name=dataset)
        if data_overrides:
            data = dataclasses.replace(data, **data_overrides)
        default_arch, default_recipe = dataset_defaults(data.name)
        same_data = data.name == self.data.name
        the_arch = arch or (self.arch if same_data and self.arch else default_arch)
        recipe = self.recipe if same_data and self.recipe else default_recipe
        names: list[str] = []
        for pat in methods or self.methods:
            names.extend(n for n in METHODS.resolve(pat) if n not in names)
        specs = []
        for m in names:
            hp = {**self.hparams.get(m, {}), **(hp_overrides or {}).get(m, {})}
            resolved = dataclasses.asdict(make_hparams(m, hp))  # validates names and types
            for fg in forgets or self.forgets:
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
                        )
                    )
        unknown = [h for h in (hp_overrides or {}) if h not in names]
        if unknown:
            raise BenchError(f"--hp names methods not in this run: {', '.join(unknown)}")
        return specs


def dataset_defaults(name: str) -> tuple[str, Recipe]:
    from bench.data import DATASETS

    DATASETS.entry(name)  # unknown dataset -> nearest names
    if name not in DATASET_DEFAULTS:
        return "smallcnn", Recipe()
    return DATASET_DEFAULTS[name]


def register_suite(grid: Grid) -> Grid:
    SUITES.add(grid.name, grid, description=grid.description)
    return grid


register_suite(
    Grid(
        name="smoke",
        description="every registered method on the embedded digits, 2 seeds x 2 forget sizes "
        "(CPU, about a minute)",
        data=DataSpec("digits"),
        forgets=(ForgetSpec("instance", k=8), ForgetSpec("instance", k=32)),
        seeds=(0, 1),
    )
)
