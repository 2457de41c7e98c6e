"""Conformance of ``fisher`` (Fisher forgetting) with the reference notebook:
github.com/AdityaGolatkar/SelectiveForgetting @ 4c02825 (``Forgetting.ipynb``: ``hessian``,
``get_mean_var`` and the cell that draws the noise; the code is unchanged since the first code
commit 6bf8e6f). meghdadk/SCRUB @ 9cc8740 (``small_scale_unlearning.ipynb``,
``large_scale_unlearning.ipynb``) and the copy vendored by the nabla-tau notebooks
(dnl-trpp/Nabla-Tau @ 1012093, ``SCRUB/``) carry the same two functions unchanged; SCRUB's
large-scale notebook draws the noise with alpha 1e-7 instead of 1e-6.

The reference, restated below in plain torch (float64):

1. ``hessian(D_r)``: model in eval mode; D_r one example at a time (batch 1, unshuffled); for
   every class y: CE(output, y), gradients, ``grad2_acc += softmax(output)[y] * grad**2``;
   finally divided by |D_r|. The labels of D_r are not used for the diagonal.
2. ``get_mean_var(p, alpha)``: ``var = 1 / (grad2_acc + 1e-8)`` clamped at 1e3, then at 1e2
   where ``p.size(0) == num_classes``; times alpha; for ndim > 1 the mean over dim 1,
   expanded; where ``p.size(0) == num_classes`` and class forgetting: mean 0 and var 1e-4 on
   the forgotten class's row; x10 where ``p.size(0) == num_classes``, else x10 for 1-d
   tensors.
3. ``p = mu + sqrt(var) * N(0, 1)``, one ``normal_`` per parameter in ``parameters()`` order.

The noise is drawn from the same seeded generator on both sides (the reference uses the global
RNG after ``torch.manual_seed(seed)``), so parameters are compared exactly, as are the Fisher
diagonal and the variance term.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import methods.fisher as mf
from bench.core.spec import Recipe
from bench.data import TensorSplit, View
from bench.unlearning.method import METHODS, Context, UnlearnData, Withheld, make_hparams

C = 5  # classes


pytestmark = pytest.mark.usefixtures("float64")


def tiny_cnn(width2: int = 4) -> nn.Module:
    """conv-BN-ReLU x2, average pool, linear head; ``width2=C`` gives a non-head layer whose
    ``size(0)`` equals the number of classes (what the reference's head test catches)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, bias=False),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, width2, 3, padding=1),
        nn.BatchNorm2d(width2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width2, C),
    )
    x = torch.rand(30, 1, 8, 8)
    net.train()
    for _ in range(3):  # non-trivial running statistics
        net(x)
    net.eval()
    return net


def toy(class_forget: bool):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(36, 1, 8, 8, generator=g)
    y = torch.arange(36) % C
    split = TensorSplit(x, y)
    if class_forget:
        f, r = (y == 2).nonzero().flatten(), (y != 2).nonzero().flatten()
    else:
        f, r = torch.arange(6), torch.arange(6, 36)
    return split, View(split, f, name="forget"), View(split, r, name="retain")


def reference_hessian(model, xr, yr):
    """``hessian``: per example, per class, prob-weighted squared gradients, averaged."""
    model.eval()
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(yr)):
        out = model(xr[i : i + 1])
        prob = F.softmax(out, dim=-1).detach()
        for y in range(out.shape[1]):
            loss = F.cross_entropy(out, torch.tensor([y]))
            model.zero_grad()
            loss.backward(retain_graph=True)
            for n, p in model.named_parameters():
                acc[n] += prob[:, y] * p.grad.pow(2)
    return {n: a / len(yr) for n, a in acc.items()}


def reference_mean_var(p, f, alpha, forget_class):
    var = (1.0 / (f + 1e-8)).clamp(max=1e3)
    if p.size(0) == C:
        var = var.clamp(max=1e2)
    var = alpha * var
    if p.ndim > 1:
        var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
    mu = p.detach().clone()
    if p.size(0) == C and forget_class is not None:
        mu[forget_class] = 0
        var[forget_class] = 0.0001
    if p.size(0) == C or p.ndim == 1:
        var *= 10
    return mu, var


def reference_fisher(model, xr, yr, alpha, forget_class, seed):
    fisher = reference_hessian(model, xr, yr)
    g = torch.Generator().manual_seed(seed)
    stds = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            mu, var = reference_mean_var(p, fisher[n], alpha, forget_class)
            stds[n] = var.sqrt()
            p.copy_(mu + var.sqrt() * torch.empty_like(p).normal_(generator=g))
    return fisher, stds


def harness(model, forget, retain, seed, **hp):
    ctx = Context(
        torch.device("cpu"), seed, torch.Generator().manual_seed(seed), Recipe(), C, "fisher"
    )
    data = UnlearnData(forget, retain, Withheld("val", "fisher"), C)
    return METHODS.get("fisher")(model, data, make_hparams("fisher", hp), ctx), ctx


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def assert_same_state(a, b, tol=1e-9):
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        if p.is_floating_point():
            assert rel(p, q) <= tol, (k, rel(p, q))
        else:
            assert torch.equal(p, q), k


@pytest.mark.parametrize("class_forget", [False, True])
@pytest.mark.parametrize("width2", [4, C])
def test_fisher_equals_the_reference(class_forget, width2):
    net = tiny_cnn(width2)
    split, forget, retain = toy(class_forget)
    xr, yr = retain.tensors()
    # the Fisher diagonal and the variance term, exactly
    fish = mf.fisher_diag(copy.deepcopy(net), retain, C, chunk=7)
    ref_net = copy.deepcopy(net)
    ref_fish, ref_std = reference_fisher(ref_net, xr, yr, 1e-6, 2 if class_forget else None, seed=3)
    for n in ref_fish:
        assert rel(fish[n], ref_fish[n]) <= 1e-9, n
    hp = make_hparams("fisher")
    stds = mf.noise_std(net, fish, hp, [2] if class_forget else [], num_classes=C)
    for n in ref_std:
        assert rel(stds[n][0], ref_std[n]) <= 1e-9, n
    # the whole method: parameters and BatchNorm statistics
    model, ctx = harness(copy.deepcopy(net), forget, retain, seed=3)
    assert ctx.steps == 0
    assert_same_state(model, ref_net)


def test_alpha_of_scrubs_large_scale_notebook():
    """SCRUB's large-scale notebook draws the noise with alpha 1e-7: an ``alpha`` setting."""
    net = tiny_cnn()
    split, forget, retain = toy(False)
    xr, yr = retain.tensors()
    ref_net = copy.deepcopy(net)
    reference_fisher(ref_net, xr, yr, 1e-7, None, seed=5)
    model, _ = harness(copy.deepcopy(net), forget, retain, seed=5, alpha=1e-7)
    assert_same_state(model, ref_net)
