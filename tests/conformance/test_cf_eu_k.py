"""Conformance of ``cf_k`` and ``eu_k`` with the reference: github.com/meghdadk/SCRUB @ 9cc8740
(the release; ``MIA_experiments.ipynb`` cells 16, 19-21: ``fk_fientune``, ``cfk_unlearn``,
``euk_unlearn``; ``thirdparty/repdistiller/helper/loops.py: train_vanilla`` and ``util.py:
adjust_learning_rate``). The CF-k/EU-k cells are unchanged at HEAD 98ffb11.

The reference, restated below in plain torch (float64):

1. every parameter frozen, then the parameters of one block unfrozen: ResNet ``layer4`` or
   AllCNN ``features[9]`` (its last conv + BatchNorm); the linear head stays frozen. EU-k first
   copies the block's parameters (not its running statistics) from a freshly initialised
   model;
2. ``SGD(model.parameters(), lr, weight_decay=0)`` (no momentum); per epoch (from 0) the lr
   becomes ``sgda_learning_rate * 0.1 ** #(epoch > m for m in [10, 15, 20])`` once that count
   is positive (``sgda_learning_rate`` = 0.01 = the CF-k/EU-k lr);
3. ``train_vanilla``: the whole model in train mode (frozen BatchNorms update their running
   statistics too); per batch of the shuffled retain loader (batch 64, no augmentation):
   output, CE, ``zero_grad``, backward, step;
4. CF-k runs 10 epochs, EU-k ``training_epochs`` = 25.

Taken from the harness: the shuffle (one ``randperm`` per epoch from the run's generator) and,
for EU-k, the fresh values (``seeded_reset`` with the same generator, drawn first).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bench.core.spec import Recipe
from bench.data import TensorSplit, View
from bench.unlearning.loops import seeded_reset
from bench.unlearning.method import METHODS, Context, UnlearnData, Withheld, make_hparams

C, BATCH = 4, 8


pytestmark = pytest.mark.usefixtures("float64")


def tiny_cnn() -> nn.Module:
    """Two conv + BatchNorm blocks and a linear head; the last block (modules 3, 4) is the
    reference's AllCNN ``features[9]``; trained a little so that the statistics are not 0/1."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, bias=False),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, C),
    )
    net.train()
    for _ in range(3):
        net(torch.rand(20, 1, 8, 8))
    return net.eval()


def toy():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(44, 1, 8, 8, generator=g)
    y = torch.randint(0, C, (44,), generator=g)
    split = TensorSplit(x, y)
    ar = torch.arange(44)
    return View(split, ar[:8], name="forget"), View(split, ar[8:], name="retain")


def reference_fk(model, block, xr, yr, epochs, gen, lr=0.01, sgda_lr=0.01):
    for p in model.parameters():
        p.requires_grad_(False)
    for p in block.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=0.0)
    for epoch in range(epochs):
        steps = sum(epoch > m for m in (10, 15, 20))
        if steps > 0:
            for group in optimizer.param_groups:
                group["lr"] = sgda_lr * 0.1**steps
        model.train()
        for b in torch.randperm(len(yr), generator=gen).split(BATCH):
            output = model(xr[b])
            loss = F.cross_entropy(output, yr[b])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


def harness(method, net, seed, **hp):
    forget, retain = toy()
    ctx = Context(
        torch.device("cpu"), seed, torch.Generator().manual_seed(seed), Recipe(), C, method
    )
    data = UnlearnData(forget, retain, Withheld("val", method), C)
    hp = make_hparams(method, {"batch_size": BATCH, **hp})
    return METHODS.get(method)(copy.deepcopy(net), data, hp, ctx), ctx


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def worst(a, b):
    return max(
        (rel(p, q), k)
        for (k, p), q in zip(a.state_dict().items(), b.state_dict().values())
        if p.is_floating_point()
    )


def assert_same_state(a, b):
    assert worst(a, b)[0] <= 1e-9, worst(a, b)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        if not p.is_floating_point():
            assert torch.equal(p, q), k


@pytest.mark.parametrize("seed", [0, 1])
def test_cf_k_equals_cfk_unlearn(seed):
    net = tiny_cnn()
    model, ctx = harness("cf_k", net, seed)  # defaults: k=2 before the frozen head
    assert ctx.steps == 10 * 5
    _, retain = toy()
    ref = copy.deepcopy(net)
    block = nn.ModuleList([ref[3], ref[4]])
    reference_fk(ref, block, *retain.tensors(), 10, torch.Generator().manual_seed(seed))
    assert_same_state(model, ref)
    # the head is frozen, and the first block's BatchNorm statistics moved (train mode)
    assert torch.equal(model[8].weight, net[8].weight)
    assert not torch.equal(model[1].running_mean, net[1].running_mean)
    assert all(p.requires_grad for p in model.parameters())


def test_eu_k_equals_euk_unlearn():
    net = tiny_cnn()
    model, ctx = harness("eu_k", net, 3)
    assert ctx.steps == 25 * 5
    _, retain = toy()
    ref = copy.deepcopy(net)
    gen = torch.Generator().manual_seed(3)
    fresh = copy.deepcopy(nn.ModuleList([ref[3], ref[4]]))
    seeded_reset(list(fresh), gen)  # the harness's fresh values, one draw of the generator
    with torch.no_grad():  # euk_unlearn copies weights and biases, not running statistics
        for m, f in zip([ref[3], ref[4]], fresh):
            for name, p in m.named_parameters():
                p.copy_(getattr(f, name))
    reference_fk(ref, nn.ModuleList([ref[3], ref[4]]), *retain.tensors(), 25, gen)
    assert_same_state(model, ref)
    assert torch.equal(model[8].bias, net[8].bias)


def test_eu_k_decay_matters():
    """The step decay after epochs 10/15/20 is part of what is compared: without it the
    result differs."""
    net = tiny_cnn()
    a, _ = harness("eu_k", net, 3)
    b, _ = harness("eu_k", net, 3, lr_milestones="")
    assert worst(a, b)[0] > 1e-3
