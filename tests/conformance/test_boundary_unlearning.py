"""Conformance of ``boundary_shrink`` and ``boundary_expanding`` with the Boundary Unlearning
code that produced SalUn's Table 1 (Fan et al., ICLR 2024; rows BS and BE):
github.com/OPTML-Group/Unlearn-Saliency @ a6e89fd17ff737c24c6aa16c9574469a234ffd91,
``Classification/unlearn/boundary_sh.py`` (``FGSM_perturb``, ``boundary_shrink_iter``,
``boundary_shrink``) and ``boundary_ex.py`` (``expand_model``, ``boundary_expanding_iter``),
driven by ``unlearn/impl.py`` (``iterative_unlearn``) and ``main_forget.py`` (the loaders). The
loops are the same at 9576623 (Oct 2023, the commit the table was run with) but for the
saliency-mask restore of PR #33, which acts only when a mask is given (never for BS / BE).

The reference, restated below in plain torch (float64):

Boundary Shrink
1. ``test_model`` = a copy of the original model, used in eval mode throughout, never updated;
2. per epoch (``unlearn_epochs``; SGD lr / momentum / weight decay over every parameter, built
   once), the model in train mode, one pass of the forget loader: shuffled
   (``shuffle=True``), the training transform (random crop with 4-pixel zero padding and
   horizontal flip on CIFAR), batch ``--batch_size``;
3. per batch: FGSM on ``test_model`` in eval mode: x_adv = x + 0.1 sign(grad_x CE(f(x), y))
   (mean CE), clamped to [0, 1], rounded to 8 bits; the new label is the **raw arg-max** of
   ``test_model(x_adv)`` over all classes, so it is the true label wherever the attack does
   not cross the boundary; then CE(model(x), label), ``zero_grad``, backward, ``step``.

Boundary Expanding
1. the last ``nn.Linear`` is replaced by one with one more output, its first C rows copied;
2. the same loop over the forget loader with every label = C (the shadow class).
The harness then drops the shadow output (a recorded deviation: the reference scores the
(C+1)-output model); the comparison is on the trained rows.

What is taken from the harness: the random draws (the reference uses the global RNG): one
``randperm`` of D_f per epoch, then per batch the crop offsets (``randint``, (n, 2)) and the
flips (``rand`` < 0.5), and for BE the shadow row (uniform +-1/sqrt(in_features), weight then
bias); the restatement consumes the same generator in that order. Parameters and BatchNorm
running statistics must agree to 1e-9 relative after several SGD steps.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import methods.boundary_shrink as bs
from bench.core.spec import Recipe
from bench.data import TensorSplit, View
from bench.unlearning.method import METHODS, Context, UnlearnData, Withheld, make_hparams

C, N_F = 5, 22  # batches of 8: 8, 8, 6
BATCH, EPOCHS, LR, WD, BOUND, PAD = 8, 3, 0.05, 5e-4, 0.1, 2
SEED = 4


pytestmark = pytest.mark.usefixtures("float64")


def tiny_cnn() -> nn.Module:
    """A "trained" tiny CNN with BatchNorm: weights and running statistics off their init."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, C),
    )
    with torch.no_grad():
        net[-1].weight.mul_(6.0)
        net[-1].bias[3] += 0.8  # a margin for class 3: FGSM with 0.1 does not always cross
        for bn in (net[1], net[4]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _data():
    """D_f: random 3x8x8 images labelled with the model's own clean prediction for 2/3 of
    them (as a trained model's D_f), a random label for the rest."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(N_F, 3, 8, 8, generator=g)
    with torch.no_grad():
        y = tiny_cnn()(x).argmax(1)
    y[::3] = torch.randint(0, C, (len(y[::3]),), generator=g)
    forget = View(TensorSplit(x, y), torch.arange(N_F), name="forget")
    return UnlearnData(forget, Withheld("retain", "boundary"), Withheld("val", "boundary"), C)


def _ctx() -> Context:
    g = torch.Generator().manual_seed(SEED)
    return Context(torch.device("cpu"), SEED, g, Recipe(augment="crop_flip", crop_padding=PAD), C)


def _hp(name: str, **kw):
    base = {"epochs": EPOCHS, "lr": LR, "weight_decay": WD, "batch_size": BATCH}
    return make_hparams(name, {**base, **kw})


# ---------------------------------------------------------------------------------------------
# the reference, restated


def reference_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomCrop(padding=PAD) then RandomHorizontalFlip, per image, with the harness's draws
    (offsets for the whole batch, then flips)."""
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g)
    flips = torch.rand(n, generator=g) < 0.5
    out = []
    for k in range(n):
        i, j = int(offsets[k, 0]), int(offsets[k, 1])
        img = F.pad(x[k], (PAD, PAD, PAD, PAD))[:, i : i + h, j : j + w]
        out.append(img.flip(-1) if flips[k] else img)
    return torch.stack(out)


def reference_fgsm(test_model: nn.Module, x, y, bound: float) -> torch.Tensor:
    """``FGSM_perturb``: one signed-gradient step of CE (mean), clamp, 8-bit discretisation."""
    test_model.zero_grad()
    x_adv = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(test_model(x_adv), y)
    loss.backward()
    x_adv = x_adv + x_adv.grad.detach().sign() * bound
    return (torch.round(torch.clamp(x_adv, 0.0, 1.0) * 255) / 255).detach()


def reference_shrink_label(test_model: nn.Module, x, y, bound: float) -> torch.Tensor:
    test_model.eval()
    x_adv = reference_fgsm(test_model, x, y, bound)
    return torch.argmax(test_model(x_adv), dim=1)  # every class, the true one included


def reference_loop(model, x, y, labels, g, epochs=EPOCHS, batch=BATCH, lr=LR, wd=WD):
    """``iterative_unlearn`` around a ``*_iter`` epoch: SGD built once, per epoch train mode
    and one shuffled, augmented pass; ``labels(xb, yb)`` gives each batch's targets."""
    opt = torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=wd)
    steps = 0
    for _ in range(epochs):
        model.train()
        for b in torch.randperm(len(y), generator=g).split(batch):
            xb, yb = reference_augment(x[b], g), y[b]
            target = labels(xb, yb)
            loss = F.cross_entropy(model(xb), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    return steps


def _rel(ours: nn.Module, ref: nn.Module) -> dict[str, float]:
    """Max relative difference per state entry (parameters and BN buffers)."""
    theirs = ref.state_dict()
    out = {}
    for name, value in ours.state_dict().items():
        scale = theirs[name].abs().max().clamp_min(1e-12)
        out[name] = float((value.double() - theirs[name].double()).abs().max() / scale)
    return out


def _assert_same_state(ours: nn.Module, ref: nn.Module, rtol: float = 1e-9) -> None:
    rel = _rel(ours, ref)
    worst = max(rel, key=rel.get)
    assert rel[worst] <= rtol, f"{worst}: relative {rel[worst]:.3g}"


# ---------------------------------------------------------------------------------------------
# Boundary Shrink


def test_neighbour_label_is_the_raw_argmax_on_the_fgsm_image():
    model = tiny_cnn()
    x, y = _data().forget.tensors()
    ours = bs.neighbour_labels(copy.deepcopy(model), x, y, BOUND)
    ref = reference_shrink_label(copy.deepcopy(model), x, y, BOUND)
    assert torch.equal(ours, ref)
    # the case that tells the rule apart: FGSM fails to cross for some, whose label stays y
    kept = int((ref == y).sum())
    assert 0 < kept < len(y), kept


def test_boundary_shrink_equals_the_reference_loop():
    model = tiny_cnn()
    data = _data()
    ctx = _ctx()
    ours = METHODS.get("boundary_shrink")(copy.deepcopy(model), data, _hp("boundary_shrink"), ctx)

    x, y = data.forget.tensors()
    ref = copy.deepcopy(model)
    test_model = copy.deepcopy(model)  # the original model, the attack's throughout
    g = torch.Generator().manual_seed(SEED)
    steps = reference_loop(
        ref, x, y, lambda xb, yb: reference_shrink_label(test_model, xb, yb, BOUND), g
    )
    assert ctx.steps == steps == EPOCHS * 3
    _assert_same_state(ours, ref)
    # the weights and the BatchNorm running statistics moved (train mode)
    moved = _rel(ours, model)
    assert moved["1.running_mean"] > 1e-3 and moved["7.weight"] > 1e-3


def test_boundary_shrink_defaults_are_the_references_arguments():
    """``arg_parser.py`` defaults (no README command for boundary_shrink): 10 epochs, SGD lr
    0.01, momentum 0.9, weight decay 5e-4, batch 256; the bound 0.1 is hard-coded; the forget
    loader carries the training transform (``augment='recipe'``)."""
    hp = make_hparams("boundary_shrink")
    assert (hp.epochs, hp.lr, hp.momentum, hp.weight_decay, hp.batch_size, hp.bound) == (
        10,
        0.01,
        0.9,
        5e-4,
        256,
        0.1,
    )
    assert hp.augment == "recipe"


def test_boundary_shrink_augments_with_the_recipe():
    """``augment='recipe'`` under a crop + flip recipe trains on cropped, flipped images: the
    result differs from the same run with ``augment='none'``, which equals the reference loop
    without the transform."""
    model, data = tiny_cnn(), _data()
    plain = METHODS.get("boundary_shrink")(
        copy.deepcopy(model), data, _hp("boundary_shrink", augment="none"), _ctx()
    )
    augmented = METHODS.get("boundary_shrink")(
        copy.deepcopy(model), data, _hp("boundary_shrink"), _ctx()
    )
    assert max(_rel(plain, augmented).values()) > 1e-3

    x, y = data.forget.tensors()
    ref, test_model = copy.deepcopy(model), copy.deepcopy(model)
    g = torch.Generator().manual_seed(SEED)
    opt = torch.optim.SGD(ref.parameters(), LR, momentum=0.9, weight_decay=WD)
    for _ in range(EPOCHS):
        ref.train()
        for b in torch.randperm(N_F, generator=g).split(BATCH):
            target = reference_shrink_label(test_model, x[b], y[b], BOUND)
            loss = F.cross_entropy(ref(x[b]), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    _assert_same_state(plain, ref)


# ---------------------------------------------------------------------------------------------
# Boundary Expanding


def test_boundary_expanding_equals_the_reference_loop():
    model = tiny_cnn()
    data = _data()
    ctx = _ctx()
    ours = METHODS.get("boundary_expanding")(
        copy.deepcopy(model), data, _hp("boundary_expanding"), ctx
    )

    x, y = data.forget.tensors()
    ref = copy.deepcopy(model)
    g = torch.Generator().manual_seed(SEED)
    old = ref[-1]
    wide = nn.Linear(old.in_features, C + 1)  # expand_model
    bound = old.in_features**-0.5
    with torch.no_grad():
        wide.weight[:-1] = old.weight
        wide.bias[:-1] = old.bias
        # the shadow row: nn.Linear's init, with the harness's draws (weight, then bias)
        for row, n in ((wide.weight[-1], old.in_features), (wide.bias[-1:], 1)):
            row.copy_((torch.rand(n, generator=g, dtype=torch.float32) * 2 - 1) * bound)
    ref[-1] = wide
    steps = reference_loop(ref, x, y, lambda xb, yb: torch.full_like(yb, C), g)
    assert ctx.steps == steps == EPOCHS * 3

    ref_pruned = copy.deepcopy(ref)
    ref_pruned[-1] = nn.Linear(old.in_features, C)
    with torch.no_grad():
        ref_pruned[-1].weight.copy_(wide.weight[:C])
        ref_pruned[-1].bias.copy_(wide.bias[:C])
    _assert_same_state(ours, ref_pruned)
    moved = _rel(ours, model)
    assert moved["1.running_mean"] > 1e-3 and moved["7.weight"] > 1e-3
    # the fraction the reference would score as forgotten: the shadow class's arg-max share
    ref.eval()
    with torch.no_grad():
        shadow = 100.0 * float((ref(x).argmax(1) == C).double().mean())
    assert ctx.extra["forget_shadow_fraction"] == pytest.approx(shadow)
