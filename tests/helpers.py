"""Test helpers: tiny, fast specs on the synthetic data."""

from __future__ import annotations

from bench.spec import DataSpec, ForgetSpec, Recipe, RunSpec

TINY_RECIPE = Recipe(epochs=12, batch_size=32, lr=0.05)

# per-method hyperparameters that keep every method fast on the 256-image synthetic data
FAST_HP = {
    "finetune": {"epochs": 2},
}


def tiny_spec(method: str, k: int = 16, seed: int = 0, **kw) -> RunSpec:
    hp = dict(FAST_HP.get(method, {}))
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
