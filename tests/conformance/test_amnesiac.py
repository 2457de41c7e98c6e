"""Conformance of ``amnesiac`` with the relabelling Amnesiac baseline of the nabla-tau notebooks:
github.com/dnl-trpp/Nabla-Tau @ 1012093bbaf445e683d4dc40794ef0a611fb91bf
(``Unlearning_main_Cifar10.ipynb`` cell 17: ``amnesiac`` and ``fit_one_unlearning_cycle``; the
same function as SSD's ``forget_random_strategies.py: amnesiac``, vendored there under
``SSD/src``). Graves et al. published no code; this relabelling form is the one the notebooks
(and SSD) run.

The reference, restated below in plain torch (float64):

1. every D_f example gets a label drawn uniformly from the classes other than its own;
2. the training set is D_f with those labels followed by D_r (one list, D_f first);
3. ``epochs`` (3) epochs of one shuffled loader over that list, batch 128 (last batch short),
   Adam (lr 1e-4, default betas, no weight decay) on every parameter, CE (mean), the model in
   train mode (the evaluation between epochs switches to eval mode and back, which changes no
   state).

The random draws are the harness's (the reference uses ``random.choice`` and an unseeded
DataLoader): the wrong labels come first from the run's generator, then one ``randperm`` of the
merged list per epoch, and the restatement consumes the same generator in that order.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import methods.amnesiac as am
from bench.core.spec import Recipe
from bench.data import TensorSplit, View
from bench.unlearning.method import METHODS, Context, UnlearnData, Withheld, make_hparams

C, N_F, N_R, BATCH = 4, 10, 27, 8  # 37 examples: batches of 8, last one of 5


pytestmark = pytest.mark.usefixtures("float64")


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
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


def toy():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(N_F + N_R, 1, 8, 8, generator=g)
    y = torch.randint(0, C, (N_F + N_R,), generator=g)
    split = TensorSplit(x, y)
    ar = torch.arange(N_F + N_R)
    # D_f scattered through the split, as a random forget set is
    f = ar[ar % 4 == 1][:N_F]
    r = ar[~torch.isin(ar, f)]
    return View(split, f, name="forget"), View(split, r, name="retain")


def reference_amnesiac(net, xf, yf, xr, yr, epochs, lr, batch, gen):
    new = am.wrong_labels(yf, C, gen)  # the harness's draw (reference: random.choice)
    assert not (new == yf).any()
    xs, ys = torch.cat([xf, xr]), torch.cat([new, yr])
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        net.train()
        for b in torch.randperm(len(ys), generator=gen).split(batch):
            loss = F.cross_entropy(net(xs[b]), ys[b])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        net.eval()  # the notebook's evaluate() after each epoch
    return net


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("seed", [0, 1])
def test_amnesiac_equals_the_notebook(seed):
    net = tiny_cnn()
    forget, retain = toy()
    hp = make_hparams("amnesiac", {"lr": 0.01, "batch_size": BATCH})  # notebook: lr 1e-4, 128
    ctx = Context(
        torch.device("cpu"), seed, torch.Generator().manual_seed(seed), Recipe(), C, "amnesiac"
    )
    data = UnlearnData(forget, retain, Withheld("val", "amnesiac"), C)
    model = METHODS.get("amnesiac")(copy.deepcopy(net), data, hp, ctx)
    assert ctx.steps == 3 * 5  # 3 epochs of ceil(37 / 8) steps

    ref = reference_amnesiac(
        copy.deepcopy(net),
        *forget.tensors(),
        *retain.tensors(),
        epochs=3,
        lr=0.01,
        batch=BATCH,
        gen=torch.Generator().manual_seed(seed),
    )
    moved = rel(ref.state_dict()["0.weight"], net.state_dict()["0.weight"])
    assert moved > 1e-3  # the steps did something
    for (k, p), q in zip(model.state_dict().items(), ref.state_dict().values()):
        if p.is_floating_point():
            assert rel(p, q) <= 1e-9, (k, rel(p, q))
        else:
            assert torch.equal(p, q), k


def test_defaults_are_the_notebooks():
    hp = make_hparams("amnesiac")
    assert (hp.epochs, hp.lr, hp.batch_size) == (3, 1e-4, 128)
