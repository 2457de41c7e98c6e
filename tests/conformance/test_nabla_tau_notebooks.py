"""Conformance of ``nabla_tau``, ``nabla_tau_ft`` and the ``val_from="test"`` data layout with
the official ∇τ notebooks: github.com/dnl-trpp/Nabla-Tau @ 1012093bbaf445e683d4dc40794ef0a611fb91bf
(``Unlearning_main_Cifar10.ipynb`` cells 2, 5, 6 and 8; ``Unlearning_main_experiments_split_and_
alpha.ipynb`` cell 4 for BatchNorm in train mode).

The notebooks' ``unlearning`` routine is restated below in plain torch (``notebook_unlearning``):
AdamW (lr 1e-3, default weight decay) with LinearLR 1.0 -> 0.1 stepped after every forget-epoch;
alpha decreased by alpha0/forget_epochs after every forget-epoch; L_v = mean per-sample CE on
D_v in eval mode at forget-epochs 0, 5, 10, ...; the D_r iterator restarted at forget-epochs
i with i % (R // F) == 0; per step, the forget batch's forward pass, then the next retain batch's,
and one step on alpha * ReLU(L_v - L_f)^2 + (1 - alpha) * L_r. The batch order is the one thing
taken from the harness: one ``randperm`` per pass from the run's generator, retain before forget
when both start a pass (the notebooks' DataLoaders shuffle with their own generator).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import methods.nabla_tau as nt
from bench.core.spec import DataSpec, Recipe
from bench.data import TensorSplit, View, carve, load_dataset
from bench.data.datasets import Locations
from bench.unlearning.method import METHODS, Context, UnlearnData, Withheld, make_hparams

BATCH = 8
N_F, N_R, N_V = 24, 100, 40  # F = 3, R = 13 batches: 13 forget-epochs, restarts every 4


def notebook_unlearning(net, forget, retain, val, start_alpha, forget_epochs, bn_train, gen):
    """The notebooks' ``unlearning`` (see the module docstring). Returns the alpha used in
    each forget-epoch and the LR of each forget-epoch."""
    (xf, yf), (xr, yr), (xv, yv) = forget, retain, val
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1.0, end_factor=0.1, total_iters=forget_epochs
    )
    n_forget, n_retain = math.ceil(len(yf) / BATCH), math.ceil(len(yr) / BATCH)
    alpha, alphas, lrs, val_loss = start_alpha, [], [], None
    for i in range(forget_epochs):
        net.eval()
        if i % 5 == 0:
            with torch.no_grad():
                val_loss = float(F.cross_entropy(net(xv), yv, reduction="sum")) / len(yv)
        if i % (n_retain // n_forget) == 0:
            r_perm = torch.randperm(len(yr), generator=gen)
            retain_iter = iter(r_perm.split(BATCH))
        f_perm = torch.randperm(len(yf), generator=gen)
        net.train(bn_train)
        alphas.append(alpha)
        lrs.append(optimizer.param_groups[0]["lr"])
        for fb in f_perm.split(BATCH):
            net.zero_grad()
            out = net(xf[fb])
            rb = next(retain_iter)
            r_out = net(xr[rb])
            forget_losses = F.cross_entropy(out, yf[fb], reduction="none")
            retain_losses = F.cross_entropy(r_out, yr[rb], reduction="none")
            delta_val_loss = val_loss - forget_losses.mean()
            loss = alpha * F.relu(delta_val_loss) ** 2 + (1 - alpha) * retain_losses.mean()
            loss.backward()
            optimizer.step()
        alpha = alpha - start_alpha / forget_epochs
        scheduler.step()
    net.eval()
    return alphas, lrs


@pytest.fixture(scope="module")
def toy():
    """A tiny MLP with BatchNorm that has memorised D_f (L_f << L_v), and its data."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N_F + N_R + N_V, 6, generator=g)
    w = torch.randn(6, 3, generator=g)
    y = (x @ w).argmax(1)
    y[N_F + N_R :] = torch.randint(0, 3, (N_V,), generator=g)  # D_v: unseen and noisy
    torch.manual_seed(0)
    # no bias before BatchNorm (as in ResNets): in train mode its gradient is zero up to
    # rounding noise, which Adam would scale into lr-sized steps that depend on summation order
    net = nn.Sequential(
        nn.Linear(6, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3)
    )
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(net(x[: N_F + N_R]), y[: N_F + N_R]).backward()
        opt.step()
    net.eval()
    split = TensorSplit(x, y)
    ar = torch.arange(len(y))
    views = [
        View(split, ar[:N_F], name="forget"),
        View(split, ar[N_F : N_F + N_R], name="retain"),
        View(split, ar[N_F + N_R :], name="val"),
    ]
    return net, views


def _harness(method, toy, seed=0, withhold_val=False, **hp):
    net, (forget, retain, val) = toy
    data = UnlearnData(forget, retain, Withheld("val", method) if withhold_val else val, 3)
    ctx = Context(
        torch.device("cpu"), seed, torch.Generator().manual_seed(seed), Recipe(), 3, method=method
    )
    hp = make_hparams(method, {"batch_size": BATCH, **hp})
    return METHODS.get(method)(copy.deepcopy(net), data, hp, ctx), ctx


def _notebook(toy, start_alpha, forget_epochs, bn_train, seed=0):
    net, views = toy
    net = copy.deepcopy(net)
    tensors = [v.tensors() for v in views]
    gen = torch.Generator().manual_seed(seed)
    alphas, lrs = notebook_unlearning(
        net, *tensors, start_alpha, forget_epochs, bn_train=bn_train, gen=gen
    )
    return net, alphas, lrs


def assert_same_state(a: nn.Module, b: nn.Module, rtol=1e-6):
    for (key, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        if p.is_floating_point():
            scale = q.abs().max().clamp_min(1e-12)
            assert float((p - q).abs().max() / scale) <= rtol, key
        else:
            assert torch.equal(p, q), key


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_nabla_tau_equals_the_notebook_loop(toy, bn_mode, monkeypatch):
    seen = []
    real = nt.nabla_tau_loss

    def spy(forget_losses, retain_losses, val_loss, alpha):
        seen.append((alpha, val_loss))
        return real(forget_losses, retain_losses, val_loss, alpha)

    monkeypatch.setattr(nt, "nabla_tau_loss", spy)
    model, ctx = _harness("nabla_tau", toy, bn_mode=bn_mode)
    # the notebook constants: STARTING_ALPHA = SPLIT * 5/3, int(R / (F * 2) * 6) forget-epochs
    alpha0, epochs = (N_F / (N_F + N_R)) * 5 / 3, int((13 / (3 * 2)) * 6)
    assert ctx.extra["alpha0"] == pytest.approx(alpha0) and ctx.extra["forget_epochs"] == epochs
    assert ctx.steps == epochs * 3 == len(seen)
    ref, alphas, lrs = _notebook(toy, alpha0, epochs, bn_train=bn_mode == "train")
    assert_same_state(model, ref)
    # the alpha and LR schedules: alpha0 - e * alpha0 / E and LinearLR's factors
    assert [a for a, _ in seen[::3]] == pytest.approx(alphas, rel=1e-12, abs=1e-15)
    assert alphas == pytest.approx([alpha0 * (1 - e / epochs) for e in range(epochs)])
    assert [1e-3 * f for f in nt.lr_factors(0.1, epochs)] == pytest.approx(lrs, rel=1e-12)
    # the memory term was active: L_f below L_v at the start, L_v refreshed at epochs 5, 10
    assert ctx.extra["forget_loss_start"] < ctx.extra["val_loss_start"]
    vals = [v for _, v in seen[::3]]
    assert len({vals[0], vals[5], vals[10]}) == 3 and vals[1:5] == [vals[0]] * 4


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_finetune_baseline_is_the_loop_with_alpha0_zero_and_the_doubled_rule(toy, bn_mode):
    model, ctx = _harness("nabla_tau_ft", toy, withhold_val=True, bn_mode=bn_mode)
    epochs = int((13 / 3) * 6)  # the notebook's fine-tuning rule int(R / F * 6) = 26
    assert ctx.extra["forget_epochs"] == epochs and ctx.steps == epochs * 3
    ref, alphas, _ = _notebook(toy, 0.0, epochs, bn_train=bn_mode == "train")
    assert alphas == [0.0] * epochs
    assert_same_state(model, ref)
    # ... and nabla_tau itself with alpha0 = 0 for that many forget-epochs
    same, _ = _harness("nabla_tau", toy, bn_mode=bn_mode, alpha0=0.0, forget_epochs=epochs)
    assert_same_state(model, same, rtol=0.0)


def test_val_from_test_is_the_notebooks_random_split_of_the_held_out_data(tmp_path):
    bundle = load_dataset("digits", Locations(None, tmp_path))
    carved = carve(bundle, DataSpec("digits", val_fraction=0.5, val_from="test", split_seed=42))
    # notebook cell 2: RNG = seed_everything(SEED); test_set, val_set = random_split(held_out,
    # [0.5, 0.5], generator=RNG); pretraining and the forget/retain split use all of train
    rng = torch.Generator().manual_seed(42)
    test_set, val_set = torch.utils.data.random_split(range(len(bundle.test)), [0.5, 0.5], rng)
    assert carved.test.tolist() == sorted(test_set.indices)
    assert carved.val.tolist() == sorted(val_set.indices)
    assert carved.val_split is bundle.test
    assert carved.train.tolist() == list(range(len(bundle.train)))
    assert np.intersect1d(carved.test.numpy(), carved.val.numpy()).size == 0
