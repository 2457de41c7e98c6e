"""Conformance of ``ga``, ``finetune`` and ``iu`` with the baselines of Unlearn-Sparse (Jia et
al., NeurIPS 2023), which SalUn's Table 1 (Fan et al., ICLR 2024) ran as GA, FT and IU:
github.com/OPTML-Group/Unlearn-Sparse @ 80ba55d36d0871465c2d3e3896db26a98070e065
(``unlearn/GA.py``: ``GA``; ``unlearn/FT.py``: ``FT_iter`` without the l1 term;
``unlearn/Wfisher.py``: ``Wfisher`` and the second ``woodfisher``, N = 1000;
``unlearn/impl.py``: ``iterative_unlearn``; ``main_forget.py``: the loaders). These files are
unchanged there since 16a2dbc (Oct 2023); Unlearn-Saliency @ a6e89fd
(``Classification/unlearn/{GA,FT,Wfisher}.py``) computes the same when no saliency mask is
given.

The reference, restated below in plain torch (float64):

* ``iterative_unlearn``: SGD(every parameter, ``unlearn_lr``, momentum, weight decay) built
  once; per epoch the ``*_iter`` function, which puts the model in train mode and makes one
  pass of its loader; the MultiStepLR (x0.1 at epochs 91, 136) never fires in these epochs;
* the loaders (``replace_loader_dataset``): ``shuffle=True``, ``--batch_size``, the training
  dataset with its training transform (random crop with zero padding, horizontal flip);
* GA: per forget batch, loss = -CE(f(x), y) (mean), ``zero_grad``, backward, ``step``;
* FT: the same over the retain loader with loss = CE(f(x), y);
* IU (``Wfisher``): model in eval mode; forget_grad = sum over unshuffled forget batches of
  ``--batch_size`` of grad CE (mean) x batch size, retain_grad likewise over D_r;
  retain_grad *= n_f / ((n_f + n_r) n_r); forget_grad /= n_f + n_r; v = forget - retain;
  ``woodfisher`` over an unshuffled batch-1 retain loader: k = v, the first gradient starts
  o, each later g: t = o.g, k -= (k.g) / (N + t) o, o -= t / (N + t) o, returning once
  idx > N (N + 2 samples); then every parameter += alpha k (in ``parameters()`` order). Here
  N is a small value (the reference hard-codes 1000) so that the stop is exercised.

What is taken from the harness: the random draws (the reference uses the global RNG): per
epoch one ``randperm`` of the loader's view, then per batch the crop offsets (``randint``,
(n, 2)) and flips (``rand`` < 0.5); for IU's batch-1 loader the draws come per chunk of
``chunk`` samples (the harness vectorises the per-sample gradients). The restatement consumes
the same generator in that order. Parameters and BatchNorm running statistics must agree to
1e-9 relative after several SGD steps (IU: after its one update; its statistics do not move).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bench.core.spec import Recipe
from bench.unlearning.method import METHODS, Context, make_hparams
from tests.conformance.toys import toy_data

C, N_F, N_R, PAD, SEED = 5, 12, 30, 2, 7


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
        for bn in (net[1], net[4]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _data():
    return toy_data(N_F, N_R, C, "unlearn-sparse")


def _ctx() -> Context:
    g = torch.Generator().manual_seed(SEED)
    return Context(torch.device("cpu"), SEED, g, Recipe(augment="crop_flip", crop_padding=PAD), C)


def _run(name: str, hp: dict):
    data, x, y = _data()
    ctx = _ctx()
    out = METHODS.get(name)(tiny_cnn(), data, make_hparams(name, hp), ctx)
    return out, ctx, x, y


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


def reference_iterative(model, x, y, sign, epochs, lr, batch, g, wd=5e-4, momentum=0.9):
    """``iterative_unlearn`` around GA (sign -1) or FT (sign +1): the steps taken."""
    opt = torch.optim.SGD(model.parameters(), lr, momentum=momentum, weight_decay=wd)
    steps = 0
    for _ in range(epochs):
        model.train()
        for b in torch.randperm(len(y), generator=g).split(batch):
            image, target = reference_augment(x[b], g), y[b]
            loss = sign * F.cross_entropy(model(image), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    return steps


def reference_wfisher(model, xf, yf, xr, yr, g, alpha, n, batch, chunk):
    """``Wfisher`` with the second ``woodfisher`` (N = ``n``); the model is changed in place.
    Returns the number of batch-1 retain samples the recursion used."""
    model.eval()
    params = list(model.parameters())

    def sam_grad(loss):
        return torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)])

    def summed(x, y):
        total, count = torch.zeros(sum(p.numel() for p in params)), 0
        for s in range(0, len(y), batch):
            image, label = reference_augment(x[s : s + batch], g), y[s : s + batch]
            total += sam_grad(F.cross_entropy(model(image), label)) * len(label)
            count += len(label)
        return total, count

    forget_grad, total = summed(xf, yf)
    retain_grad, total_2 = summed(xr, yr)
    retain_grad *= total / ((total + total_2) * total_2)
    forget_grad /= total + total_2
    v = forget_grad - retain_grad

    def batch_one():  # unshuffled, batch 1; augmentation drawn a chunk at a time
        for s in range(0, len(yr), chunk):
            images = reference_augment(xr[s : s + chunk], g)
            for k in range(len(images)):
                yield images[k : k + 1], yr[s + k : s + k + 1]

    k_vec, o_vec, used = v.clone(), None, 0
    for idx, (image, label) in enumerate(batch_one()):
        sample_grad = sam_grad(F.cross_entropy(model(image), label))
        used += 1
        with torch.no_grad():
            if o_vec is None:
                o_vec = sample_grad.clone()
            else:
                tmp = torch.dot(o_vec, sample_grad)
                k_vec -= (torch.dot(k_vec, sample_grad) / (n + tmp)) * o_vec
                o_vec -= (tmp / (n + tmp)) * o_vec
        if idx > n:
            break
    with torch.no_grad():  # apply_perturb
        curr = 0
        for p in params:
            p += alpha * k_vec[curr : curr + p.numel()].view(p.shape)
            curr += p.numel()
    return used


def _rel(ours: nn.Module, ref: nn.Module) -> dict[str, float]:
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


def test_ga_equals_the_reference_loop():
    hp = {"epochs": 3, "lr": 0.05, "batch_size": 5}  # batches of 5, 5, 2
    ours, ctx, x, y = _run("ga", hp)
    ref = tiny_cnn()
    g = torch.Generator().manual_seed(SEED)
    steps = reference_iterative(ref, x[:N_F], y[:N_F], -1.0, 3, 0.05, 5, g)
    assert ctx.steps == steps == 9
    _assert_same_state(ours, ref)
    moved = _rel(ours, tiny_cnn())
    assert moved["1.running_mean"] > 1e-3 and moved["7.weight"] > 1e-3


def test_finetune_equals_the_reference_loop():
    hp = {"epochs": 2, "lr": 0.05, "batch_size": 8}  # batches of 8, 8, 8, 6
    ours, ctx, x, y = _run("finetune", hp)
    ref = tiny_cnn()
    g = torch.Generator().manual_seed(SEED)
    steps = reference_iterative(ref, x[N_F:], y[N_F:], 1.0, 2, 0.05, 8, g)
    assert ctx.steps == steps == 8
    _assert_same_state(ours, ref)
    moved = _rel(ours, tiny_cnn())
    assert moved["1.running_mean"] > 1e-3 and moved["7.weight"] > 1e-3


def test_iu_equals_the_reference_update():
    n, alpha, batch, chunk = 6, 3.0, 7, 3  # 8 retain samples of 30; chunks of 3
    hp = {"alpha": alpha, "woodfisher_n": n, "batch_size": batch, "chunk": chunk}
    ours, ctx, x, y = _run("iu", hp)
    ref = tiny_cnn()
    g = torch.Generator().manual_seed(SEED)
    used = reference_wfisher(ref, x[:N_F], y[:N_F], x[N_F:], y[N_F:], g, alpha, n, batch, chunk)
    assert ctx.extra["woodfisher_samples"] == used == n + 2
    _assert_same_state(ours, ref)
    moved = _rel(ours, tiny_cnn())
    assert moved["7.weight"] > 1e-3 and moved["1.running_mean"] == 0.0  # eval mode throughout


def test_defaults_are_the_references_arguments():
    """``arg_parser.py`` and the README commands: GA 5 epochs at lr 1e-4; FT 10 epochs at lr
    0.01; momentum 0.9, weight decay 5e-4; batch 256 (FT's default is the harness's 128, a
    recorded deviation: the salun-* suites pass 256); IU alpha 0.2, N = 1000; the training
    transform on every loader."""
    ga, ft, iu = (make_hparams(m) for m in ("ga", "finetune", "iu"))
    assert (ga.epochs, ga.lr, ga.momentum, ga.weight_decay, ga.batch_size) == (
        5,
        1e-4,
        0.9,
        5e-4,
        256,
    )
    assert (ft.epochs, ft.lr, ft.momentum, ft.weight_decay) == (10, 0.01, 0.9, 5e-4)
    assert (iu.alpha, iu.woodfisher_n, iu.batch_size) == (0.2, 1000, 256)
    assert ga.augment == ft.augment == iu.augment == "recipe"
