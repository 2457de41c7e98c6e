"""SalUn's Table 1 (Fan et al., ICLR 2024) as the harness runs it: the table's GA and RL
(OPTML-Group/Unlearn-Saliency ``Classification/unlearn/GA.py`` @ a6e89fd and ``RL.py`` @
9576623, the code that made the table), the reference's ResNet-18, the three ``salun-*``
suites and the forget sets' index files."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bench.core.spec import ForgetSpec
from bench.data import View, carve, load_dataset, select_forget
from bench.data.forget import positions_digest, write_forget_index
from bench.data.splits import TensorSplit
from bench.models.archs import ARCHS, build_model, count_params
from bench.protocol import plan
from bench.protocol.stages import Env, _write_forget_index
from bench.suites.catalog import SUITES
from bench.suites.salun import SALUN_OTHER_METHODS, SALUN_TABLE_METHODS
from bench.unlearning.method import METHODS, UnlearnData, Withheld, make_hparams
from methods.ga import ga
from methods.neggrad import neggrad
from methods.rl import rl
from tests.helpers import toy_ctx, toy_data  # noqa: E402

CPU = torch.device("cpu")
C = 4


def mlp_bn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, C)
    )


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# ---------------------------------------------------------------- GA


def test_ga_step_is_gradient_ascent_on_the_forget_loss():
    """One full-batch step without momentum or decay: theta + lr * grad CE(D_f) (the batch
    mean, in train mode; the shuffle does not change a full batch's mean or BN statistics)."""
    data, model = toy_data(), mlp_bn()
    ref = copy.deepcopy(model).train()
    x, y = data.forget.tensors()
    grads = torch.autograd.grad(F.cross_entropy(ref(x), y), list(ref.parameters()))
    want = flat(ref) + 0.1 * torch.cat([g.reshape(-1) for g in grads])
    hp = make_hparams("ga", {"epochs": 1, "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0})
    ctx = toy_ctx()
    out = ga(model, data, hp, ctx)
    assert ctx.steps == 1
    torch.testing.assert_close(flat(out), want, rtol=1e-5, atol=1e-6)


def test_ga_runs_its_epochs_with_no_stop_rule():
    """D_f already fully misclassified: L2UL's NegGrad stops at once, the table's GA takes
    all of its epochs x ceil(|D_f| / batch) steps and keeps raising the forget loss."""
    model = mlp_bn()
    x = toy_data().forget.split.x
    model.eval()
    with torch.no_grad():  # label every image with a class the model does not predict
        wrong = (model(x).argmax(1) + 1) % C
    train = View(TensorSplit(x, wrong), torch.arange(len(x)), CPU, "train")
    data = UnlearnData(
        train.subset(torch.arange(10), "forget"), Withheld("retain", "ga"), Withheld("val", "ga"), C
    )
    ctx = toy_ctx()
    neggrad(copy.deepcopy(model), data, make_hparams("neggrad"), ctx)
    assert ctx.steps == 0
    ctx = toy_ctx()
    hp = make_hparams("ga", {"epochs": 3, "batch_size": 4, "lr": 0.05})
    out = ga(copy.deepcopy(model), data, hp, ctx)
    assert ctx.steps == 3 * math.ceil(10 / 4)
    out.eval()
    xf, yf = data.forget.tensors()
    with torch.no_grad():
        assert F.cross_entropy(out(xf), yf) > F.cross_entropy(model(xf), yf)


def test_ga_sees_only_the_forget_set():
    hp = make_hparams("ga")
    assert METHODS.entry("ga").meta["needs"] == ("forget",)
    assert (hp.epochs, hp.lr, hp.batch_size, hp.weight_decay) == (5, 1e-4, 256, 5e-4)


# ---------------------------------------------------------------- RL


def trained_pairs(monkeypatch, data: UnlearnData, hp, seed: int = 0):
    """Run ``rl`` and return, per optimizer step, the (data row, label) pairs it trained on,
    rows found by their pixels (no augmentation)."""
    x_all = data.forget.split.x
    steps: list[list[tuple[int, int]]] = []
    real = F.cross_entropy
    seen: list[torch.Tensor] = []

    class Spy(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            seen.append(x.detach().clone())
            return self.inner(x)

    def ce(logits, target, *a, **kw):
        rows = [int((x_all == xi).flatten(1).all(1).nonzero()) for xi in seen[-1]]
        steps.append(list(zip(rows, target.tolist())))
        return real(logits, target, *a, **kw)

    monkeypatch.setattr(F, "cross_entropy", ce)
    ctx = toy_ctx(seed)
    rl(Spy(mlp_bn()), data, hp, ctx)
    assert ctx.steps == len(steps)
    return steps


def test_rl_union_trains_relabelled_forget_and_retain_as_one_shuffled_set(monkeypatch):
    """The table's RL (``RL.py`` @ 9576623): each epoch one shuffled pass over D_f and D_r
    together; every D_r row once under its label, every D_f row once under a label drawn
    from all classes for that epoch (the true one included)."""
    n_f, n_r, b, epochs = 8, 40, 6, 6
    data = toy_data(n_f, n_r)
    y_all = data.forget.split.targets.tolist()
    hp = make_hparams("rl", {"epochs": epochs, "batch_size": b, "augment": "none"})
    steps = trained_pairs(monkeypatch, data, hp)
    per_epoch = math.ceil((n_f + n_r) / b)
    assert len(steps) == epochs * per_epoch
    mixed = 0
    forget_labels = []
    for e in range(epochs):
        pairs = [p for s in steps[e * per_epoch : (e + 1) * per_epoch] for p in s]
        assert sorted(r for r, _ in pairs) == list(range(n_f + n_r))  # each row once
        assert all(t == y_all[r] for r, t in pairs if r >= n_f)  # D_r: its labels
        forget_labels.append([t for r, t in sorted(pairs) if r < n_f])
        mixed += sum(
            any(r < n_f for r, _ in s) and any(r >= n_f for r, _ in s)
            for s in steps[e * per_epoch : (e + 1) * per_epoch]
        )
    assert mixed > 0  # batches mix D_f and D_r
    flat_labels = [t for labels in forget_labels for t in labels]
    assert set(flat_labels) <= set(range(C))
    assert any(t == y_all[i % n_f] for i, t in enumerate(flat_labels))  # may be the true one
    assert len({tuple(labels) for labels in forget_labels}) > 1  # redrawn every epoch


@pytest.mark.parametrize("mode", ["union", "sequential"])
def test_rl_is_salun_with_every_weight_salient(mode):
    """``rl`` and ``salun`` share one loop (``union``: ``RL.py`` @ 9576623, the table's;
    ``sequential``: its CIFAR-10 branch since f31f82e): with a mask over every weight, SalUn
    is RL bit for bit, once RL's generator has made the mask pass's one draw (the shuffle of
    D_f; the toy recipe does not augment)."""
    data = toy_data()
    kw = {"epochs": 2, "lr": 0.05, "batch_size": 8, "retain_mode": mode}
    ctx = toy_ctx(3)
    torch.randperm(len(data.forget), generator=ctx.generator)  # the mask pass's shuffle
    a = rl(mlp_bn(), data, make_hparams("rl", kw), ctx)
    salun = METHODS.get("salun")
    b = salun(mlp_bn(), data, make_hparams("salun", {**kw, "mask_ratio": 1.0}), toy_ctx(3))
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), n


def test_rl_defaults_are_the_reference_arguments():
    hp = make_hparams("rl")
    assert (hp.epochs, hp.lr, hp.batch_size, hp.momentum, hp.weight_decay) == (
        10,
        0.01,
        256,
        0.9,
        5e-4,
    )
    assert hp.retain_mode == "union"
    assert set(METHODS.entry("rl").meta["needs"]) == {"forget", "retain"}


# ---------------------------------------------------------------- the reference's ResNet-18


def test_resnet18_salun_is_the_references_cifar_resnet18():
    m = build_model("resnet18_salun", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
    assert count_params(m) == 11_173_962
    assert isinstance(m.net.maxpool, nn.Identity)
    assert m.net.conv1.kernel_size == (3, 3) and m.net.conv1.stride == (1, 1)
    torch.testing.assert_close(m.norm.std.flatten(), torch.tensor([0.2470, 0.2435, 0.2616]))
    keys = set(m.net.state_dict())
    assert {"fc.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.bias"} <= keys
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert "resnet18_salun" in ARCHS


# ---------------------------------------------------------------- suites


def test_salun_cifar10_is_the_tables_protocol():
    specs = SUITES.get("salun-cifar10").expand()
    registered = set(METHODS.list())
    assert {s.method for s in specs} == registered - {"mnemonic"}
    assert set(SALUN_TABLE_METHODS) | set(SALUN_OTHER_METHODS) == registered - {"mnemonic"}
    assert {s.forget.label for s in specs} == {"frac=0.1", "frac=0.5", "class=0"}
    assert {s.seed for s in specs} == set(range(10))
    s = specs[0]
    assert (s.dataset, s.data.val_fraction, s.arch) == ("cifar10", 0.1, "resnet18_salun")
    r = s.recipe
    assert (r.epochs, r.lr, r.batch_size, r.schedule, r.augment) == (
        182,
        0.1,
        256,
        "cosine",
        "crop_flip",
    )
    assert "mia_svc" in s.metrics and {x.train_seed for x in specs} == {0}
    hp = {x.method: x.hparams_dict for x in specs}
    assert (hp["ga"]["epochs"], hp["ga"]["lr"]) == (5, 1e-4)
    assert (hp["finetune"]["epochs"], hp["finetune"]["lr"]) == (10, 0.01)
    assert (hp["salun"]["epochs"], hp["salun"]["lr"]) == (10, 0.013)
    assert hp["salun"]["mask_mode"] == "reference_2024"  # the code that made the table
    assert "salun-cifar10" in SUITES.get("full").parts


@pytest.mark.parametrize("name", ["salun-cifar10-cpu", "salun-digits"])
def test_small_variants_run_the_tables_methods(name):
    specs = SUITES.get(name).expand()
    assert {s.method for s in specs} == set(SALUN_TABLE_METHODS)
    assert {s.forget.label for s in specs} == {"frac=0.1", "frac=0.5", "class=0"}
    assert all(s.recipe.epochs > 0 for s in specs)  # trained from scratch: Retrain runs
    assert {s.hparams_dict["mask_mode"] for s in specs if s.method == "salun"} == {"reference_2024"}


def test_estimate_counts_forget_only_epochs_over_the_forget_set():
    (ga_spec,) = SUITES.get("salun-cifar10").expand(
        methods=["ga"], seeds=[0], forgets=[ForgetSpec("fraction", fraction=0.1)]
    )
    (be,) = SUITES.get("salun-cifar10").expand(
        methods=["boundary_expanding"], seeds=[0], forgets=[ForgetSpec("fraction", fraction=0.1)]
    )
    (ft,) = SUITES.get("salun-cifar10").expand(
        methods=["finetune"], seeds=[0], forgets=[ForgetSpec("fraction", fraction=0.1)]
    )
    evals = plan.run_seconds(ga_spec) - 5 * 4500 / plan.ASSUMED_TRAIN_IMG_S["resnet18_salun"]
    assert plan.run_seconds(be) == pytest.approx(evals + 10 * 4500 / 7000)
    assert plan.run_seconds(ft) == pytest.approx(evals + 10 * 45000 / 7000)


# ---------------------------------------------------------------- forget index files


def test_forget_index_is_content_addressed_and_readable_by_bench_eval(tmp_path):
    from bench.eval import read_indices

    pos = torch.tensor([7, 3, 11, 0])
    info = write_forget_index(tmp_path, pos)
    path = tmp_path / info["file"]
    assert info == {"digest": positions_digest(pos), "file": f"forget/{info['digest']}.npy", "n": 4}
    assert np.load(path).tolist() == [0, 3, 7, 11]
    assert read_indices(path, 20).tolist() == [0, 3, 7, 11]
    mtime = path.stat().st_mtime_ns
    assert write_forget_index(tmp_path, pos.flip(0)) == info and path.stat().st_mtime_ns == mtime
    a, b = torch.tensor([1, 2]), torch.tensor([5])
    cont = _write_forget_index(tmp_path, [a, b])
    assert cont["forget_index"]["digest"] == positions_digest(torch.tensor([1, 2, 5]))
    assert [r["n"] for r in cont["forget_requests"]] == [2, 1]
    assert all((tmp_path / r["file"]).is_file() for r in cont["forget_requests"])


def test_every_run_records_its_forget_sets_digest_and_file(tmp_path):
    from bench.core.records import iter_records
    from bench.execution.executors import run_specs

    grid = SUITES.get("salun-digits")
    forget = ForgetSpec("fraction", fraction=0.1)
    specs = grid.expand(methods=["ga"], seeds=[1], forgets=[forget])
    env = Env(out=tmp_path / "out", cache=tmp_path / "cache", device=CPU)
    assert set(run_specs(specs, env, "debug").values()) == {"done"}
    (meta,) = [r for r in iter_records(env.out) if r.get("type") == "meta"]
    carved = carve(load_dataset("digits", env.locations), grid.data)
    targets = carved.bundle.train.targets.index_select(0, carved.train)
    want = select_forget(targets, forget, 1)
    index = meta["forget_index"]
    assert index["digest"] == positions_digest(want) and index["n"] == want.numel()
    assert np.load(env.out / index["file"]).tolist() == want.tolist()
