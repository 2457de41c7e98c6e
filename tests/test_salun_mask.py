"""SalUn's ``mask_mode`` on a toy case: ``hard`` keeps the weights outside the saliency mask
bit-identical; ``reference_2024`` (Unlearn-Saliency before PR #33, commit a6e89fd) masks the
gradients only, so weight decay still moves them, and without weight decay the two agree."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bench.core.errors import BenchError
from bench.core.spec import Recipe
from bench.data import View
from bench.data.splits import TensorSplit
from bench.unlearning.method import Context, UnlearnData, Withheld, make_hparams
from methods.salun import saliency_mask, salun

CPU = torch.device("cpu")


def toy_data(n_f: int = 8, n_r: int = 24, classes: int = 3) -> UnlearnData:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n_f + n_r, 1, 3, 3, generator=g)
    y = torch.arange(n_f + n_r) % classes
    train = View(TensorSplit(x, y), torch.arange(n_f + n_r), CPU, "train")
    forget = train.subset(torch.arange(n_f), "forget")
    retain = train.subset(torch.arange(n_f, n_f + n_r), "retain")
    return UnlearnData(forget, retain, Withheld("val", "test"), classes)


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(9, 6), nn.ReLU(), nn.Linear(6, 3))


def run(mode: str, weight_decay: float) -> tuple[nn.Module, dict, dict]:
    data, model = toy_data(), toy_model()
    hp = make_hparams(
        "salun",
        {"epochs": 2, "lr": 0.1, "batch_size": 8, "weight_decay": weight_decay, "mask_mode": mode},
    )
    masks = saliency_mask(copy.deepcopy(model), data.forget, hp)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ctx = Context(CPU, 0, torch.Generator().manual_seed(0), Recipe(), 3)
    return salun(model, data, hp, ctx), masks, before


def outside(model: nn.Module, masks: dict, before: dict) -> tuple[int, int]:
    """(weights outside the mask that changed, weights outside the mask)."""
    moved = total = 0
    for n, p in model.named_parameters():
        off = ~masks[n]
        moved += int((p.detach()[off] != before[n][off]).sum())
        total += int(off.sum())
    return moved, total


def test_default_is_hard():
    assert make_hparams("salun").mask_mode == "hard"


def test_hard_keeps_unmasked_weights_bit_identical_under_weight_decay():
    model, masks, before = run("hard", weight_decay=0.01)
    moved, total = outside(model, masks, before)
    assert total > 0 and moved == 0


def test_reference_2024_lets_weight_decay_move_unmasked_weights():
    model, masks, before = run("reference_2024", weight_decay=0.01)
    moved, total = outside(model, masks, before)
    assert moved == total  # every nonzero weight outside the mask has decayed
    for n, p in model.named_parameters():  # and toward zero, never past it
        off = ~masks[n]
        assert torch.all(p.detach()[off].abs() <= before[n][off].abs()), n


def test_modes_agree_without_weight_decay():
    a, _, _ = run("hard", weight_decay=0.0)
    b, _, _ = run("reference_2024", weight_decay=0.0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_unknown_mask_mode_is_one_clear_error():
    with pytest.raises(BenchError, match="hard, reference_2024"):
        make_hparams("salun", {"mask_mode": "soft"})
