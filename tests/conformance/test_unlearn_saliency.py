"""Conformance of ``salun`` and ``rl`` with the Unlearn-Saliency reference code,
github.com/OPTML-Group/Unlearn-Saliency (``Classification/``), at the commits that define them:

* **9576623** (Oct 2023, the first commit; the code of SalUn's Table 1): ``unlearn/RL.py``
  ``RL`` driven by ``unlearn/impl.py`` ``iterative_unlearn``. One SGD optimizer (lr,
  momentum, weight decay) for all epochs; each epoch, in train mode: a copy of D_f whose
  labels are all redrawn uniformly from every class (``np.random.randint``), concatenated with
  D_r (``ConcatDataset([forget, retain])``), one ``DataLoader(shuffle=True)`` over it; per
  batch: forward, mean CE, ``zero_grad``, backward, with a mask ``grad *= mask[name]``,
  ``step``. Harness: ``retain_mode="union"`` (both methods' default), ``mask_mode=
  "reference_2024"`` (gradients masked only).
* **f31f82e** (Apr 2024) to 47377e3: the CIFAR-10 branch of ``RL``: per epoch a pass over the
  shuffled forget loader, each batch under ``torch.randint`` labels, then a pass over the
  shuffled retain loader; gradients masked only. Harness: ``retain_mode="sequential"``,
  ``mask_mode="reference_2024"``.
* **a6e89fd** (Feb 2026, PR #33, today's HEAD): the same two loops (``union`` is now its
  CIFAR-100 branch), plus ``_restore_masked_params`` after every step: outside the mask the
  parameters are put back to ``theta0``, the values ``RL`` cloned when the epoch began, by
  ``p * m + theta0 * (1 - m)``, and the momentum buffer is multiplied by the mask. Harness:
  ``mask_mode="hard"``.
* the saliency mask, ``generate_mask.py`` ``save_gradient_ratio`` at a6e89fd (unchanged since
  b874ee9, Dec 2023): model in eval mode, the shuffled forget loader (the training transform:
  crop + flip), per batch ``loss = -CE``, ``zero_grad``, backward, ``gradients[name] +=
  grad``; then ``abs``; ``ranks = argsort(argsort(-cat(flat)))``, mask = ``ranks <
  int(numel * ratio)`` as integer tensors.

Every reference loader carries the training transform (``RandomCrop(32, padding=4)`` +
``RandomHorizontalFlip``, ``dataset.py``), the mask's loader included. Restated below in plain
torch (written for this test, not copied). The random draws are the one thing taken from the
harness: the same generator, drawn in the harness's order (the reference draws from numpy's
and torch's global RNGs; a crop offset pair per example, then a flip per example, per batch).
The network is a tiny CNN with BatchNorm computing in float64; the mask must be identical and
parameters and BatchNorm running statistics agree to 1e-9 relative after every run.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bench.core.spec import Recipe
from bench.unlearning.method import METHODS, Context, make_hparams
from methods.salun import saliency_mask
from tests.conformance.toys import ToDouble, assert_same_state, toy_data

C = 5
N_F, N_R = 10, 22
BATCH, EPOCHS, LR, MOMENTUM, WD, RATIO = 8, 2, 0.05, 0.9, 0.01, 0.4
PAD = 2
SEED = 7
RECIPE = Recipe(augment="crop_flip", crop_padding=PAD)


def _trained() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        ToDouble(),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, C),
    ).double()
    with torch.no_grad():  # a "trained" model: weights and running statistics off their init
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
        net[2].running_mean.uniform_(-0.2, 0.2)
        net[2].running_var.uniform_(0.5, 1.5)
    return net.eval()


def _data():
    return toy_data(N_F, N_R, C, "salun")


def _hp(method: str, retain_mode: str, mask_mode: str | None = None):
    kw = {"epochs": EPOCHS, "lr": LR, "momentum": MOMENTUM, "weight_decay": WD}
    kw.update(batch_size=BATCH, retain_mode=retain_mode, augment="recipe")
    if method == "salun":
        kw.update(mask_batch=BATCH, mask_ratio=RATIO, mask_mode=mask_mode)
    return make_hparams(method, kw)


def _harness(method: str, retain_mode: str, mask_mode: str | None = None):
    data, _, _ = _data()
    ctx = Context(torch.device("cpu"), SEED, torch.Generator().manual_seed(SEED), RECIPE, C)
    out = METHODS.get(method)(_trained(), data, _hp(method, retain_mode, mask_mode), ctx)
    return out, ctx


# ---------------------------------------------------------------------------------------------
# the reference, restated


def _train_transform(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomCrop(padding=PAD) + RandomHorizontalFlip on each image of a batch, with the
    harness's draws: an (row, column) offset pair per image, then a flip coin per image."""
    n, _, h, w = x.shape
    off = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    out = []
    for i in range(n):
        r, c = int(off[i, 0]), int(off[i, 1])
        img = padded[i, :, r : r + h, c : c + w]
        out.append(img.flip(-1) if flip[i] else img)
    return torch.stack(out)


def _loader(rows: torch.Tensor, x: torch.Tensor, g: torch.Generator, shuffle: bool = True):
    """A DataLoader over ``rows`` with the training transform: (positions, images) per
    batch; ``shuffle`` draws the epoch's permutation when iteration starts."""
    order = rows[torch.randperm(len(rows), generator=g)] if shuffle else rows
    for b in order.split(BATCH):
        yield b, _train_transform(x[b], g)


def reference_generate_mask(model, x, y, g):
    """``generate_mask.py`` ``save_gradient_ratio`` @ a6e89fd, for one ratio."""
    model.eval()
    gradients = {name: 0 for name, _ in model.named_parameters()}
    for rows, image in _loader(torch.arange(N_F), x, g):
        loss = -F.cross_entropy(model(image), y[rows])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.grad is not None:
                    gradients[name] += param.grad
    gradients = {name: torch.abs(t) for name, t in gradients.items()}
    all_elements = -torch.cat([t.flatten() for t in gradients.values()])
    threshold_index = int(len(all_elements) * RATIO)
    ranks = torch.argsort(torch.argsort(all_elements))
    mask, start = {}, 0
    for name, t in gradients.items():
        r = ranks[start : start + t.numel()]
        hard = torch.zeros_like(r)  # int64, as the saved masks
        hard[r < threshold_index] = 1
        mask[name] = hard.reshape(t.shape)
        start += t.numel()
    return mask


def reference_rl(retain_mode: str, with_mask: bool = False, restore: bool = False):
    """``RL`` under ``iterative_unlearn``: ``union`` = @ 9576623 (and a6e89fd's CIFAR-100
    branch), ``sequential`` = the CIFAR-10 branch since f31f82e; ``restore`` = a6e89fd's
    ``_restore_masked_params``. Returns the model, the mask and the number of steps."""
    _, x, y = _data()
    g = torch.Generator().manual_seed(SEED)
    model = _trained()
    mask = reference_generate_mask(model, x, y, g) if with_mask else None
    optimizer = torch.optim.SGD(model.parameters(), LR, momentum=MOMENTUM, weight_decay=WD)
    steps = 0

    def step(image, target, theta0):
        nonlocal steps
        loss = F.cross_entropy(model(image), target)
        optimizer.zero_grad()
        loss.backward()
        if mask:
            for name, param in model.named_parameters():
                if param.grad is not None:
                    param.grad *= mask[name]
        optimizer.step()
        if mask and restore:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    m = mask[name].to(dtype=param.dtype)
                    if torch.count_nonzero(1 - m) == 0:
                        continue
                    param.data.mul_(m).add_(theta0[name] * (1 - m))
                    state = optimizer.state.get(param, None)
                    if state is not None and "momentum_buffer" in state:
                        state["momentum_buffer"].mul_(m)
        steps += 1

    for _epoch in range(EPOCHS):
        model.train()
        theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
        if retain_mode == "union":
            forget_targets = torch.randint(0, C, (N_F,), generator=g)  # np.random.randint
            targets = torch.cat([forget_targets, y[N_F:]])  # ConcatDataset([forget, retain])
            for rows, image in _loader(torch.arange(N_F + N_R), x, g):
                step(image, targets[rows], theta0)
        else:
            for rows, image in _loader(torch.arange(N_F), x, g):
                step(image, torch.randint(0, C, rows.shape, generator=g), theta0)
            for rows, image in _loader(torch.arange(N_F, N_F + N_R), x, g):
                step(image, y[rows], theta0)
    return model, mask, steps


def _steps_per_epoch(retain_mode: str) -> int:
    if retain_mode == "union":
        return -(-(N_F + N_R) // BATCH)
    return -(-N_F // BATCH) + -(-N_R // BATCH)


# ---------------------------------------------------------------------------------------------


def test_saliency_mask_equals_the_reference():
    _, x, y = _data()
    data, _, _ = _data()
    g = torch.Generator().manual_seed(SEED)
    hp = _hp("salun", "union", "hard")
    ours = saliency_mask(_trained(), data.forget, hp, g, "crop_flip", PAD)
    ref = reference_generate_mask(_trained(), x, y, torch.Generator().manual_seed(SEED))
    assert ours.keys() == ref.keys()
    for name in ours:
        assert torch.equal(ours[name].long(), ref[name]), name
    kept = sum(int(m.sum()) for m in ours.values())
    assert kept == int(sum(m.numel() for m in ours.values()) * RATIO)
    # the mask pass saw the training transform: without it the mask differs
    plain = saliency_mask(_trained(), data.forget, hp, torch.Generator().manual_seed(SEED))
    assert any(not torch.equal(plain[n], ours[n]) for n in ours)


@pytest.mark.parametrize(
    "retain_mode, mask_mode",
    [
        ("union", "reference_2024"),  # 9576623: Table 1 (the salun-* suites)
        ("sequential", "reference_2024"),  # f31f82e
        ("sequential", "hard"),  # a6e89fd, CIFAR-10 branch
        ("union", "hard"),  # a6e89fd, CIFAR-100 branch
    ],
)
def test_salun_equals_the_reference(retain_mode, mask_mode):
    ours, ctx = _harness("salun", retain_mode, mask_mode)
    ref, mask, steps = reference_rl(retain_mode, with_mask=True, restore=mask_mode == "hard")
    assert ctx.steps == steps == EPOCHS * _steps_per_epoch(retain_mode)
    assert_same_state(ours, ref)
    start = _trained().state_dict()
    # BatchNorm statistics moved (train mode), so did the salient weights
    assert float((ours.state_dict()["2.running_mean"] - start["2.running_mean"]).abs().max()) > 0
    moved = ours.state_dict()["5.weight"] - start["5.weight"]
    assert float(moved[mask["5.weight"].bool()].abs().max()) > 1e-3
    off = moved[~mask["5.weight"].bool()]
    if mask_mode == "hard":
        assert float(off.abs().max()) == 0.0
    else:  # weight decay (and its momentum) moved them
        assert float(off.abs().min()) > 0.0


@pytest.mark.parametrize("retain_mode", ["union", "sequential"])
def test_rl_equals_the_reference(retain_mode):
    """``rl``: ``union`` = ``RL.py`` @ 9576623 (Table 1), ``sequential`` = @ a6e89fd (and
    f31f82e) without a mask."""
    ours, ctx = _harness("rl", retain_mode)
    ref, _, steps = reference_rl(retain_mode)
    assert ctx.steps == steps == EPOCHS * _steps_per_epoch(retain_mode)
    assert_same_state(ours, ref)


def test_the_two_loops_differ():
    """The table's loop is not the HEAD loop: same data, same draws, different models."""
    union, _, _ = reference_rl("union", with_mask=True)
    seq, _, _ = reference_rl("sequential", with_mask=True)
    a, b = union.state_dict()["5.weight"], seq.state_dict()["5.weight"]
    assert float((a - b).abs().max() / b.abs().max()) > 1e-2
