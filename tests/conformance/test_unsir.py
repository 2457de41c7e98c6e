"""Conformance of ``unsir`` with the reference notebook:
github.com/vikram2000b/Fast-Machine-Unlearning @ fc217ce062d1c81d2753d559362f7aae54abb87c
(``Machine Unlearning.ipynb``, cells 17-30; the only commit of the notebook).

The reference, restated below in plain torch (float64):

1. Noise (cell 24), for each class to forget in turn: ``Noise(batch_size, *image)`` initialised
   N(0, 1); Adam lr 0.1 on it alone, 5 x 8 steps of ``-CE(model(N), c) + 0.1 * mean_i
   sum(N_i^2)``. The model is a freshly loaded one, i.e. in **train mode**: BatchNorm normalises
   the noise with its batch statistics and its running statistics absorb the 40 noise batches.
2. Impair set (cell 26): for each class, 20 times ``for i in range(batch[0].size(0))``: the
   first *C* noise images, C = the image's channel count (3 on CIFAR), each labelled
   ``class_num = 0`` whatever the class; then the retain samples: the first 1000 training
   images of every class not forgotten, class by class (``classwise_train``).
3. Impair (cell 26): one epoch over that list, shuffled, batch 256, Adam lr 0.02, train mode.
4. Repair (cell 30): one epoch over the retain samples, shuffled, batch 256, Adam lr 0.01.

Random draws: the noise initialisation and the two shuffles use one generator in that order
(the reference uses the global RNG); each shuffle is one ``randperm`` of the list.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bench.core.spec import Recipe
from bench.data import TensorSplit, View
from bench.unlearning.method import METHODS, Context, UnlearnData, Withheld, make_hparams

C = 4  # classes
SMALL = {  # the reference's constants, scaled down
    "noise_batch": 6,
    "noise_steps": 5,
    "noise_repeats": 3,
    "samples_per_class": 5,
    "batch_size": 8,
    "noise_lr": 0.1,
    "impair_lr": 0.02,
    "repair_lr": 0.01,
}


pytestmark = pytest.mark.usefixtures("float64")


def tiny_cnn(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 3, 3, padding=1, bias=False),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, C),
    )


def toy(channels: int, forget_classes=(1, 3)):
    """40 images, classes interleaved (so D_r order is not class order)."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, channels, 8, 8, generator=g)
    y = torch.arange(40) % C
    split = TensorSplit(x, y)
    gone = torch.isin(y, torch.tensor(forget_classes))
    return (
        View(split, gone.nonzero().flatten(), name="forget"),
        View(split, (~gone).nonzero().flatten(), name="retain"),
    )


def reference_unsir(model, classes, xr, yr, hp, gen):
    shape = tuple(xr.shape[1:])
    noises = {}
    for c in classes:  # cell 24: model in train mode (freshly loaded)
        noise = nn.Parameter(torch.randn(hp["noise_batch"], *shape, generator=gen))
        opt = torch.optim.Adam([noise], lr=hp["noise_lr"])
        labels = torch.zeros(hp["noise_batch"]) + c
        for _ in range(hp["noise_steps"]):
            out = model(noise)
            loss = -F.cross_entropy(out, labels.long()) + 0.1 * torch.mean(
                torch.sum(torch.square(noise), [1, 2, 3])
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        noises[c] = noise
    # cell 26: the impair list
    data = []
    for c in classes:
        for _ in range(hp["noise_repeats"]):
            batch = noises[c].detach()
            for i in range(batch[0].size(0)):  # the channel count
                data.append((batch[i], 0))
    kept = [k for k in range(C) if k not in classes]
    retain = []
    for k in kept:  # classwise_train[k][:n], class by class
        idx = (yr == k).nonzero().flatten()[: hp["samples_per_class"]]
        retain += [(xr[i], int(yr[i])) for i in idx]
    data += retain

    def epoch(samples, lr):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        model.train(True)
        order = torch.randperm(len(samples), generator=gen)
        for b in order.split(hp["batch_size"]):
            inputs = torch.stack([samples[i][0] for i in b])
            labels = torch.tensor([samples[i][1] for i in b])
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs), labels)
            loss.backward()
            optimizer.step()

    epoch(data, hp["impair_lr"])
    epoch(retain, hp["repair_lr"])
    return model


def harness(net, forget, retain, seed=0, **hp):
    ctx = Context(
        torch.device("cpu"), seed, torch.Generator().manual_seed(seed), Recipe(), C, "unsir"
    )
    data = UnlearnData(forget, retain, Withheld("val", "unsir"), C)
    model = METHODS.get("unsir")(copy.deepcopy(net), data, make_hparams("unsir", hp), ctx)
    return model, ctx


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def worst(a, b):
    return max(
        (rel(p, q), k)
        for (k, p), q in zip(a.state_dict().items(), b.state_dict().values())
        if p.is_floating_point()
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_unsir_equals_the_notebook(channels):
    net = tiny_cnn(channels)
    forget, retain = toy(channels)
    model, ctx = harness(net, forget, retain, **SMALL)
    ref = reference_unsir(
        copy.deepcopy(net), [1, 3], *retain.tensors(), SMALL, torch.Generator().manual_seed(0)
    )
    # impair: 2 classes x 3 repeats x `channels` noise images + 2 x 5 retain images
    n_imp = 2 * 3 * channels + 10
    assert ctx.extra["impair_steps"] == -(-n_imp // 8) and ctx.extra["repair_steps"] == 2
    assert worst(model, ref)[0] <= 1e-9, worst(model, ref)
    for (k, p), q in zip(model.state_dict().items(), ref.state_dict().values()):
        if not p.is_floating_point():
            assert torch.equal(p, q), k


def test_the_project_variant_is_the_named_options():
    """noise_bn='eval', noise_label='own', noise_take='all': the harness's former reading."""
    net = tiny_cnn(1)
    forget, retain = toy(1)
    own, _ = harness(net, forget, retain, **SMALL, noise_bn="eval", noise_label="own")
    ref, _ = harness(net, forget, retain, **SMALL)
    assert worst(own, ref)[0] > 1e-3
    # all noise images labelled with their own class: impair steps count them all
    _, ctx = harness(net, forget, retain, **SMALL, noise_take="all", noise_label="own")
    assert ctx.extra["impair_steps"] == -(-(2 * 3 * 6 + 10) // 8)
