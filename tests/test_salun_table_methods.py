"""Defining invariants of the two methods of SalUn's Table 1 (Fan et al., ICLR 2024) that the
registry had lacked: influence unlearning (``iu``, the WoodFisher form of
OPTML-Group/Unlearn-Saliency @ a6e89fd ``Classification/unlearn/Wfisher.py``) and Boundary
Expanding (``boundary_expanding``, ``Classification/unlearn/boundary_ex.py`` there), on toy
models with answers computed here from a plain restatement of the reference."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bench.core import runtime
from bench.core.errors import BenchError
from bench.core.spec import Recipe
from bench.data import View
from bench.models.archs import build_model
from bench.models.train import accuracy
from bench.run import main
from bench.unlearning.method import METHODS, Context, UnlearnData, Withheld, make_hparams
from methods.boundary_expanding import (
    BoundaryExpandingHP,
    boundary_expanding,
    classifier_head,
    prune_head,
    widen_head,
)
from methods.iu import IUHP, iu
from tests.helpers import toy_ctx, toy_data  # noqa: E402

CPU = torch.device("cpu")
C = 4


def mlp_bn(seed: int = 0) -> nn.Module:
    """A small BN MLP with non-trivial running statistics (so eval mode matters)."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU())
    m.append(nn.Linear(12, C))
    with torch.no_grad():
        m[2].running_mean.uniform_(-0.2, 0.2)
        m[2].running_var.uniform_(0.5, 2.0)
    return m


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def forget_loss(model: nn.Module, data: UnlearnData) -> float:
    x, y = data.forget.tensors()
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


# ---------------------------------------------------------------- IU


def reference_iu(model: nn.Module, data: UnlearnData, alpha: float, n: int, batch: int):
    """Wfisher.py restated line by line in float64: (theta after, v, g_0). Mean-CE gradients
    of batches times their size summed over D_f and D_r; the normalisation; the recursion over
    batch-1 retain gradients in order, returning after index N + 1; theta + alpha * k."""
    m = copy.deepcopy(model).double().eval()
    params = [p for p in m.parameters() if p.requires_grad]

    def grad_of(x, y):
        loss = F.cross_entropy(m(x.double()), y)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

    def summed(x, y):
        return sum(
            grad_of(x[s : s + batch], y[s : s + batch]) * len(y[s : s + batch])
            for s in range(0, len(y), batch)
        )

    xf, yf = data.forget.tensors()
    xr, yr = data.retain.tensors()
    forget_grad, retain_grad = summed(xf, yf), summed(xr, yr)
    total, total_2 = len(yf), len(yr)
    retain_grad = retain_grad * (total / ((total + total_2) * total_2))
    forget_grad = forget_grad / (total + total_2)
    v = forget_grad - retain_grad
    k, o, g0 = v.clone(), None, None
    for idx in range(total_2):
        g = grad_of(xr[idx : idx + 1], yr[idx : idx + 1])
        if o is None:
            o, g0 = g.clone(), g.clone()
        else:
            tmp = torch.dot(o, g)
            k = k - (torch.dot(k, g) / (n + tmp)) * o
            o = o - (tmp / (n + tmp)) * o
        if idx > n:
            break
    return flat_params(m) + alpha * k, v, g0


def test_iu_is_the_references_woodfisher_step():
    data, model = toy_data(), mlp_bn()
    hp = IUHP(alpha=5.0, woodfisher_n=3, batch_size=16, chunk=3, augment="none")
    expected, v, g0 = reference_iu(model, data, hp.alpha, hp.woodfisher_n, hp.batch_size)
    theta0 = flat_params(model).double()
    buffers0 = {k: b.clone() for k, b in model.named_buffers()}
    ctx = toy_ctx()
    out = iu(copy.deepcopy(model), data, hp, ctx)
    got = flat_params(out).double()
    assert torch.allclose(got, expected, rtol=0, atol=1e-5)
    # the test is not vacuous: the step is large and the recursion bends it away from v
    assert (got - theta0).abs().max() > 0.1
    assert (expected - (theta0 + hp.alpha * v)).abs().max() > 1e-2
    # as the reference writes it, the correction lies along the first retain gradient only
    r = (expected - theta0) / hp.alpha - v
    assert (r - torch.dot(r, g0) / torch.dot(g0, g0) * g0).norm() < 1e-8 * max(1.0, r.norm())
    assert ctx.extra["woodfisher_samples"] == hp.woodfisher_n + 2 and ctx.steps == 0
    # eval mode throughout: BN running statistics untouched
    assert all(torch.equal(b, buffers0[k]) for k, b in out.named_buffers())
    assert not out.training


def test_iu_raises_the_forget_loss():
    data, model = toy_data(), mlp_bn()
    before = forget_loss(model, data)
    out = iu(copy.deepcopy(model), data, IUHP(alpha=2.0, augment="none"), toy_ctx())
    assert forget_loss(out, data) > before + 0.01


def test_iu_is_fp32_under_bf16_and_deterministic_with_augmentation():
    data, model = toy_data(), mlp_bn()
    hp = IUHP(alpha=5.0, woodfisher_n=10, augment="crop_flip")
    runs = {}
    for precision, seed in (("fp32", 0), ("bf16", 0), ("fp32", 1)):
        runtime.configure(precision)
        try:
            with runtime.autocast(CPU):
                out = iu(copy.deepcopy(model), data, hp, toy_ctx(seed))
            runs[precision, seed] = flat_params(out)
        finally:
            runtime.configure("auto")
    assert torch.equal(runs["fp32", 0], runs["bf16", 0])  # every step of IU is in fp32
    assert not torch.equal(runs["fp32", 0], runs["fp32", 1])  # the crops follow the seed


# ---------------------------------------------------------------- Boundary Expanding


def harness_model(arch: str) -> nn.Module:
    return build_model(arch, C, (3, 8, 8), (0.5,) * 3, (0.25,) * 3)


@pytest.mark.parametrize("arch", ["smallcnn", "mlp", "resnet20_cifar"])
def test_widen_and_prune_keep_the_other_classes_rows(arch):
    torch.manual_seed(0)
    model = harness_model(arch)
    layout = {k: v.shape for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 8, 8)
    _, _, head = classifier_head(model, C)
    w0, b0 = head.weight.detach().clone(), head.bias.detach().clone()
    wide = widen_head(model, C, torch.Generator().manual_seed(0))
    model.eval()
    assert model(x).shape == (2, C + 1) and classifier_head(model, C + 1)[2] is wide
    assert torch.equal(wide.weight[:C], w0) and torch.equal(wide.bias[:C], b0)
    bound = head.in_features**-0.5  # nn.Linear's own initialisation range
    assert wide.weight[C].abs().max() <= bound and wide.bias[C].abs() <= bound
    with torch.no_grad():  # as if trained: every row moves
        wide.weight.add_(1.0)
        wide.bias.add_(1.0)
    pruned = prune_head(model, C)
    assert model(x).shape == (2, C)
    assert torch.equal(pruned.weight, wide.weight[:C]) and torch.equal(pruned.bias, wide.bias[:C])
    assert {k: v.shape for k, v in model.state_dict().items()} == layout  # same keys, shapes


def reference_be(model: nn.Module, data: UnlearnData, hp: BoundaryExpandingHP, seed: int):
    """boundary_ex.py + impl.py restated on a toy model: the last Linear widened by one row
    (the old rows copied; the shadow row and bias uniform in +-1/sqrt(fan_in), drawn first
    from the seeded generator), SGD over all parameters, epochs of shuffled D_f batches
    labelled C in train mode, then the first C rows kept."""
    g = torch.Generator().manual_seed(seed)
    m = copy.deepcopy(model)
    old = m[-1]
    wide = nn.Linear(old.in_features, C + 1)
    bound = old.in_features**-0.5
    with torch.no_grad():
        wide.weight[:C] = old.weight
        wide.bias[:C] = old.bias
        wide.weight[C] = (torch.rand(old.in_features, generator=g) * 2 - 1) * bound
        wide.bias[C] = ((torch.rand(1, generator=g) * 2 - 1) * bound)[0]
    m[-1] = wide
    opt = torch.optim.SGD(m.parameters(), hp.lr, hp.momentum, weight_decay=hp.weight_decay)
    x, _ = data.forget.tensors()
    m.train()
    for _ in range(hp.epochs):
        order = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), hp.batch_size):
            xb = x[order[s : s + hp.batch_size]]
            loss = F.cross_entropy(m(xb), torch.full((len(xb),), C))
            opt.zero_grad()
            loss.backward()
            opt.step()
    pruned = nn.Linear(old.in_features, C)
    with torch.no_grad():
        pruned.weight.copy_(wide.weight[:C])
        pruned.bias.copy_(wide.bias[:C])
    m[-1] = pruned
    return m


def test_boundary_expanding_is_the_references_loop_then_pruned():
    data, model = toy_data(), mlp_bn()
    hp = BoundaryExpandingHP(epochs=3, lr=0.1, batch_size=3, augment="none")
    expected = reference_be(model, data, hp, seed=0)
    ctx = toy_ctx(0)
    out = boundary_expanding(copy.deepcopy(model), data, hp, ctx)
    assert ctx.steps == 3 * 3  # ceil(8 / 3) batches per epoch
    for (k, a), (_, b) in zip(out.state_dict().items(), expected.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), k  # BN statistics moved as in train mode
    assert not torch.equal(out[2].running_mean, model[2].running_mean)
    assert 0.0 <= ctx.extra["forget_shadow_fraction"] <= 100.0


def test_boundary_expanding_lowers_forget_accuracy_keeping_the_classes(setup):
    from bench.core.spec import ForgetSpec
    from bench.data import select_forget

    env, _, bundle, carved, model0 = setup

    targets = bundle.train.targets.index_select(0, carved.train)
    f = select_forget(targets, ForgetSpec("instance", k=16), 0)
    train = View(bundle.train, carved.train, env.device, "train")
    forget = train.subset(f, "forget")
    data = UnlearnData(forget, Withheld("retain", "be"), Withheld("val", "be"), bundle.num_classes)
    ctx = Context(env.device, 0, torch.Generator().manual_seed(0), Recipe(), bundle.num_classes)
    model = boundary_expanding(copy.deepcopy(model0), data, make_hparams("boundary_expanding"), ctx)
    x, _ = forget.tensors()
    assert model(x).shape == (len(x), bundle.num_classes)
    before, after = accuracy(model0, forget), accuracy(model, forget)
    assert before >= 75 and after < before - 25, (before, after)
    assert ctx.extra["forget_shadow_fraction"] > 50  # D_f went to the shadow class


class _ConvHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, C, 4)

    def forward(self, x):
        return self.conv(x).flatten(1)


class _LinearAfterHead(nn.Module):
    """The last registered Linear (``pre``) is C wide but is not the output layer."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(C, C)
        self.pre = nn.Linear(16, C)

    def forward(self, x):
        return self.head(torch.relu(self.pre(x.flatten(1))))


@pytest.mark.parametrize(
    "model, match",
    [
        (_ConvHead(), "has no nn.Linear"),
        (nn.Sequential(nn.Flatten(), nn.Linear(16, C), nn.Linear(C, 7)), "7 outputs"),
        (_LinearAfterHead(), "not the classifier head"),
    ],
)
def test_boundary_expanding_refuses_a_model_without_a_final_linear_head(model, match):
    with pytest.raises(BenchError, match=match):
        boundary_expanding(model, toy_data(), BoundaryExpandingHP(augment="none"), toy_ctx())


# ---------------------------------------------------------------- registry


def test_both_are_listed_with_their_metadata(capsys):
    assert main(["--list", "methods"]) == 0
    listed = capsys.readouterr().out.split()
    for name, needs in (("iu", ("forget", "retain")), ("boundary_expanding", ("forget",))):
        assert name in listed
        meta = METHODS.entry(name).meta
        assert meta["needs"] == needs
        assert "/blob/" in meta["reference"] and meta["citation"]
        make_hparams(name, meta["quick_hp"])  # the quick hyperparameters are valid
    assert METHODS.entry("iu").meta["one_shot"]
    with pytest.raises(BenchError, match="alpha"):
        make_hparams("iu", {"alpha": 0.0})
    with pytest.raises(BenchError, match="augment"):
        make_hparams("boundary_expanding", {"augment": "mixup"})
