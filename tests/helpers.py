"""Test helpers: tiny, fast specs on the synthetic data."""

from __future__ import annotations

from bench.spec import DataSpec, ForgetSpec, Recipe, RunSpec

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
    from bench.method import METHODS

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
