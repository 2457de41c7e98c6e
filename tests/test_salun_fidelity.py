"""SalUn's loop and the augmentation of ``salun`` and ``l1_sparse``, as the reference code that
made SalUn's Table 1 runs them (OPTML-Group/Unlearn-Saliency @ 9576623): SalUn's default loop
is ``RL.py``'s one shuffled loader over the relabelled D_f together with D_r (the D_f pass then
D_r pass is the reference's only since f31f82e, a named option), and every unlearning loader,
SalUn's mask pass included, carries the training transform (random crop + flip). The
step-by-step float64 restatements are in tests/conformance/test_unlearn_saliency.py and
test_unlearn_sparse_l1.py; these are the behaviours at method level."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.core.spec import Recipe
from bench.suites.catalog import SUITES
from bench.unlearning.method import METHODS, Context, make_hparams
from methods.l1_sparse import l1_weight
from methods.salun import saliency_mask
from tests.helpers import toy_data

C = 4
CROP_FLIP = Recipe(augment="crop_flip", crop_padding=1)


def mlp_bn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, C)
    )


def ctx(seed: int = 3, recipe: Recipe | None = None) -> Context:
    g = torch.Generator().manual_seed(seed)
    return Context(torch.device("cpu"), seed, g, recipe or Recipe(), C)


class Spy(nn.Module):
    """Records every batch the model sees in train mode (eval-mode calls: the mask pass)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.train_batches: list[torch.Tensor] = []
        self.eval_batches: list[torch.Tensor] = []

    def forward(self, x):
        (self.train_batches if self.training else self.eval_batches).append(x.detach().clone())
        return self.inner(x)


def rows_of(batch: torch.Tensor, x_all: torch.Tensor) -> list[int]:
    """Data rows of an unaugmented batch, found by their pixels (-1: not a stored image)."""
    flat = x_all.flatten(1)
    out = []
    for xi in batch.flatten(1):
        hit = (flat == xi).all(1).nonzero()
        out.append(int(hit[0]) if len(hit) else -1)
    return out


# --- SalUn's loop --------------------------------------------------------------------------


def test_salun_default_loop_is_the_table_times_one_shuffled_loader():
    """Each epoch: ceil((|D_f| + |D_r|) / batch) steps, batches mixing D_f and D_r rows (old
    code: a D_f pass, then a D_r pass, no batch mixing the two)."""
    n_f, n_r, b, epochs = 8, 40, 6, 2
    data = toy_data(n_f, n_r)
    hp = make_hparams("salun", {"epochs": epochs, "batch_size": b, "lr": 0.01})
    assert hp.retain_mode == "union"
    model = Spy(mlp_bn())
    c = ctx()
    METHODS.get("salun")(model, data, hp, c)
    per_epoch = math.ceil((n_f + n_r) / b)
    assert c.steps == len(model.train_batches) == epochs * per_epoch
    x_all = data.forget.split.x
    mixed = 0
    for e in range(epochs):
        rows = [rows_of(x, x_all) for x in model.train_batches[e * per_epoch : (e + 1) * per_epoch]]
        assert sorted(r for rs in rows for r in rs) == list(range(n_f + n_r))  # each row once
        mixed += sum(any(r < n_f for r in rs) and any(r >= n_f for r in rs) for rs in rows)
    assert mixed > 0


def test_salun_sequential_is_a_forget_pass_then_a_retain_pass():
    n_f, n_r, b = 8, 40, 6
    data = toy_data(n_f, n_r)
    hp = make_hparams("salun", {"epochs": 2, "batch_size": b, "retain_mode": "sequential"})
    model = Spy(mlp_bn())
    c = ctx()
    METHODS.get("salun")(model, data, hp, c)
    per_f, per_r = math.ceil(n_f / b), math.ceil(n_r / b)
    assert c.steps == 2 * (per_f + per_r)
    x_all = data.forget.split.x
    for e in range(2):
        epoch = model.train_batches[e * (per_f + per_r) : (e + 1) * (per_f + per_r)]
        assert all(r < n_f for x in epoch[:per_f] for r in rows_of(x, x_all))
        assert all(r >= n_f for x in epoch[per_f:] for r in rows_of(x, x_all))


def test_salun_suites_run_the_table_time_loop():
    for name in ("salun-cifar10", "salun-cifar10-cpu", "salun-digits"):
        specs = [s for s in SUITES.get(name).expand() if s.method == "salun"]
        assert specs, name
        for s in specs:
            hp = make_hparams("salun", s.hparams_dict)
            assert (hp.retain_mode, hp.mask_mode, hp.augment) == (
                "union",
                "reference_2024",
                "recipe",
            )


# --- augmentation --------------------------------------------------------------------------


def test_salun_augments_its_mask_pass_and_its_loop_under_a_crop_flip_recipe():
    """Old code: never augmented (every batch a stored image, in index order for the mask)."""
    data = toy_data(8, 24)
    hp = make_hparams("salun", {"epochs": 1, "batch_size": 8})
    model = Spy(mlp_bn())
    METHODS.get("salun")(model, data, hp, ctx(recipe=CROP_FLIP))
    x_all = data.forget.split.x
    (mask_batch,) = model.eval_batches
    assert -1 in rows_of(mask_batch, x_all)  # the mask pass saw crops/flips
    seen = [r for x in model.train_batches for r in rows_of(x, x_all)]
    assert seen.count(-1) > len(seen) // 2
    # augment="none" keeps the stored images
    model = Spy(mlp_bn())
    hp = make_hparams("salun", {"epochs": 1, "batch_size": 8, "augment": "none"})
    METHODS.get("salun")(model, data, hp, ctx(recipe=CROP_FLIP))
    assert -1 not in [
        r for x in model.eval_batches + model.train_batches for r in rows_of(x, x_all)
    ]


def test_saliency_mask_shuffles_and_augments_with_a_generator():
    data = toy_data(12, 4)
    hp = make_hparams("salun", {"mask_batch": 5, "mask_ratio": 0.4})
    plain = saliency_mask(mlp_bn(), data.forget, hp)
    again = saliency_mask(mlp_bn(), data.forget, hp)
    assert all(torch.equal(plain[n], again[n]) for n in plain)
    g = torch.Generator().manual_seed(0)
    aug = saliency_mask(mlp_bn(), data.forget, hp, g, "crop_flip", 1)
    assert any(not torch.equal(plain[n], aug[n]) for n in plain)


def test_l1_sparse_augments_under_a_crop_flip_recipe():
    data = toy_data(8, 24)
    hp = make_hparams("l1_sparse", {"epochs": 1, "batch_size": 8})
    model = Spy(mlp_bn())
    METHODS.get("l1_sparse")(model, data, hp, ctx(recipe=CROP_FLIP))
    x_all = data.forget.split.x
    seen = [r for x in model.train_batches for r in rows_of(x, x_all)]
    assert len(seen) == 24 and seen.count(-1) > 12
    model = Spy(mlp_bn())
    hp = make_hparams("l1_sparse", {"epochs": 1, "batch_size": 8, "augment": "none"})
    METHODS.get("l1_sparse")(model, data, hp, ctx(recipe=CROP_FLIP))
    assert sorted(r for x in model.train_batches for r in rows_of(x, x_all)) == list(range(8, 32))


# --- l1 schedule ---------------------------------------------------------------------------


def test_l1_schedule_with_more_penalty_free_epochs_than_epochs_is_zero():
    """Unlearn-Sparse's ``FT_iter``: E = epochs - no_l1_epochs < 0 gives alpha 0 in every
    epoch (only E = 0 gives alpha); old code gave gamma."""
    hp = make_hparams("l1_sparse", {"epochs": 3, "no_l1_epochs": 5, "gamma": 0.1})
    assert [l1_weight(e, hp) for e in range(3)] == [0.0, 0.0, 0.0]
    hp = make_hparams("l1_sparse", {"epochs": 3, "no_l1_epochs": 3, "gamma": 0.1})
    assert [l1_weight(e, hp) for e in range(3)] == [0.1, 0.1, 0.1]


# --- hyperparameters -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["salun", "l1_sparse"])
def test_augment_defaults_to_the_recipe(method):
    assert make_hparams(method).augment == "recipe"
