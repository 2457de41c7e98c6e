"""The toy data and model pieces the float64 conformance tests share."""

from __future__ import annotations

import torch
from torch import nn

from bench.data import TensorSplit, View
from bench.unlearning.method import UnlearnData, Withheld


class ToDouble(nn.Module):
    """First layer of a toy network: the harness's batches come in float32."""

    def forward(self, x):
        return x.double()


def toy_data(n_f: int, n_r: int, num_classes: int, method: str):
    """``(data, x, y)``: ``n_f + n_r`` random 3x8x8 images with random labels (generator seed
    1), the first ``n_f`` the forget set and the rest the retain set; no validation split."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n_f + n_r, 3, 8, 8, generator=g)
    y = torch.randint(0, num_classes, (n_f + n_r,), generator=g)
    split = TensorSplit(x, y)
    forget = View(split, torch.arange(n_f), name="forget")
    retain = View(split, torch.arange(n_f, n_f + n_r), name="retain")
    return UnlearnData(forget, retain, Withheld("val", method), num_classes), x, y


def assert_same_state(ours: nn.Module, ref: nn.Module, rtol: float = 1e-9) -> None:
    """Every floating tensor of the state (parameters and BatchNorm running statistics) within
    ``rtol`` of the reference's, relative to its largest entry; every other tensor equal."""
    theirs = ref.state_dict()
    for name, value in ours.state_dict().items():
        if value.is_floating_point():
            scale = theirs[name].abs().max().clamp_min(1e-12)
            assert float((value - theirs[name]).abs().max() / scale) <= rtol, name
        else:
            assert torch.equal(value, theirs[name]), name
