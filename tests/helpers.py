"""Test helpers: tiny, fast specs on the synthetic data."""

from __future__ import annotations

from bench.core.spec import DataSpec, ForgetSpec, Recipe, RunSpec

TINY_RECIPE = Recipe(epochs=12, batch_size=32, lr=0.05)

# per-method hyperparameters that keep every method fast on the 256-image synthetic data
FAST_HP = {
    "finetune": {"epochs": 2},
    # L2UL family: a few cheap adversarial examples per instance and a larger step, so each
    # run takes well under a second or two; lam 0.1 because with lam 1 the tiny model can sit
    # at a fixed point where the penalty balances the (saturated) forget gradient
    "adv_only": {"n_adv": 4, "iters": 10, "eps": 1.0, "lr": 0.01, "max_epochs": 200},
    "adv_mas": {"n_adv": 4, "iters": 10, "eps": 1.0, "lr": 0.01, "lam": 0.1, "max_epochs": 200},
    "mas_only": {"lr": 0.01, "max_epochs": 200},
}


def fast_hp(method: str) -> dict:
    """Hyperparameters for toy-sized test runs: the method's own ``quick_hp`` registration
    metadata (``@register_method(..., quick_hp={...})``), then this module's ``FAST_HP``."""
    from bench.unlearning.method import METHODS

    quick = METHODS.entry(method).meta.get("quick_hp") if method in METHODS else None
    return {**(quick or {}), **FAST_HP.get(method, {})}


def tiny_spec(method: str, k: int = 16, seed: int = 0, **kw) -> RunSpec:
    hp = fast_hp(method)
    hp.update(kw.pop("hp", {}))
    return RunSpec(
        method=method,
        data=kw.pop("data", DataSpec("synthetic")),
        arch="smallcnn",
        recipe=kw.pop("recipe", TINY_RECIPE),
        forget=kw.pop("forget", ForgetSpec("instance", k=k)),
        hparams=RunSpec.hparams_tuple(hp),
        seed=seed,
        train_seed=0,
        forget_seed=seed,
        unlearn_seed=seed,
        **kw,
    )


def pinned_spec() -> RunSpec:
    """The spec whose run id tests/test_spec.py pins (``9b7346e3682aba43``)."""
    return RunSpec(
        method="neggrad",
        data=DataSpec("digits"),
        arch="smallcnn",
        recipe=Recipe(epochs=20, batch_size=64, lr=0.02),
        forget=ForgetSpec("instance", k=16),
        hparams=(("lr", 0.001),),
        seed=1,
        train_seed=0,
        forget_seed=1,
        unlearn_seed=1,
    )


def toy_data(n_f: int = 8, n_r: int = 40, seed: int = 0, classes: int = 4):
    """Method-level toy data: distinct random 1x4x4 images (each row identifiable by its
    pixels) with random labels, the first ``n_f`` forgotten, the next ``n_r`` retained."""
    import torch

    from bench.data import TensorSplit, View
    from bench.unlearning.method import UnlearnData, Withheld

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_f + n_r, 1, 4, 4, generator=g)
    y = torch.randint(0, classes, (n_f + n_r,), generator=g)
    train = View(TensorSplit(x, y), torch.arange(n_f + n_r), torch.device("cpu"), "train")
    forget = train.subset(torch.arange(n_f), "forget")
    retain = train.subset(torch.arange(n_f, n_f + n_r), "retain")
    return UnlearnData(forget, retain, Withheld("val", "test"), classes)


def toy_ctx(seed: int = 0, classes: int = 4):
    """A CPU method context seeded with ``seed``, for :func:`toy_data`."""
    import torch

    from bench.unlearning.method import Context

    return Context(
        torch.device("cpu"), seed, torch.Generator().manual_seed(seed), Recipe(), classes
    )
