"""Defining invariants of the Fisher, Boundary Shrink, UNSIR, CF-k and EU-k baselines on toy
models with known answers."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bench.core.spec import Recipe
from bench.unlearning.method import Context, UnlearnData, Withheld
from methods.boundary_shrink import BoundaryShrinkHP, boundary_shrink, neighbour_labels
from methods.cf_k import CFkHP, cf_k, last_k_modules
from methods.eu_k import EUkHP, eu_k
from methods.fisher import FisherHP, fisher, fisher_diag, noise_std
from methods.unsir import UnsirHP, learn_noise, unsir


class ToyView:
    """The parts of ``bench.data.View`` the methods use, over in-memory tensors."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    @property
    def targets(self):
        return self.y

    def tensors(self):
        return self.x, self.y

    def loader(self, batch, shuffle=False, generator=None, augment="none", crop_padding=4):
        idx = (
            torch.randperm(len(self.y), generator=generator)
            if shuffle
            else torch.arange(len(self.y))
        )
        for s in range(0, len(idx), batch):
            i = idx[s : s + batch]
            yield self.x[i], self.y[i]


def ctx_for(num_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Context(torch.device("cpu"), seed, g, Recipe(), num_classes, method="toy")


def toy_data(n=64, c=3, shape=(1, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g)
    y = torch.arange(n) % c
    forget, retain = ToyView(x[:8], y[:8]), ToyView(x[8:], y[8:])
    return UnlearnData(forget, retain, Withheld("val", "toy"), c)


def toy_cnn(c=3):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, c),
    )


# ---------------------------------------------------------------- Fisher forgetting


def _softmax_regression(p):
    """Linear(d, C) with zero weights and bias log p: the predictive distribution is p
    everywhere, so the Fisher is known in closed form."""
    lin = nn.Linear(2, len(p))
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.log(torch.tensor(p)))
    return nn.Sequential(lin)


def test_fisher_diag_matches_closed_form_for_softmax_regression():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    model = _softmax_regression(p.tolist())
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.5, 1.0]])
    fish = fisher_diag(model, ToyView(x, torch.zeros(3, dtype=torch.long)), 4, chunk=2)
    # d log p_y / d b_k = 1[y=k] - p_k, so F(b_k) = p_k (1 - p_k); F(W_kj) = p_k(1-p_k) E[x_j^2]
    expect_b = p * (1 - p)
    assert torch.allclose(fish["0.bias"], expect_b, atol=1e-6)
    expect_w = expect_b[:, None] * x.pow(2).mean(0)[None, :]
    assert torch.allclose(fish["0.weight"], expect_w, atol=1e-6)


def test_fisher_noise_is_larger_where_retain_fisher_is_smaller():
    p = [0.5, 0.3, 0.15, 0.05]  # F(b) = .25, .21, .1275, .0475
    model = _softmax_regression(p)
    x = torch.rand(16, 2, generator=torch.Generator().manual_seed(1))
    fish = fisher_diag(model, ToyView(x, torch.zeros(16, dtype=torch.long)), 4)
    hp = FisherHP()
    std_b, _ = noise_std(model, fish, hp)["0.bias"]
    expect = torch.sqrt(hp.boost * hp.alpha / (fish["0.bias"] + hp.eps))  # below the clamp
    assert torch.allclose(std_b, expect, rtol=1e-5)
    assert (std_b.diff() > 0).all()  # Fisher decreasing along the classes, noise increasing
    # a dead unit (zero Fisher) gets the clamped maximum
    fish0 = {k: v.clone() for k, v in fish.items()}
    fish0["0.bias"][0] = 0.0
    std0, _ = noise_std(model, fish0, hp)["0.bias"]
    assert std0[0] == pytest.approx(math.sqrt(hp.boost * hp.alpha * hp.max_var_head), rel=1e-5)


def test_fisher_same_seed_same_result_and_noise_has_the_std():
    data = toy_data()
    m0 = toy_cnn()
    m0.eval()
    a = fisher(copy.deepcopy(m0), data, FisherHP(alpha=1e-4), ctx_for(3, seed=5))
    b = fisher(copy.deepcopy(m0), data, FisherHP(alpha=1e-4), ctx_for(3, seed=5))
    c = fisher(copy.deepcopy(m0), data, FisherHP(alpha=1e-4), ctx_for(3, seed=6))
    for (k, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), k
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    # the displacement is exactly std * N(0, 1) with the generator's draws
    stds = noise_std(m0, fisher_diag(m0, data.retain, 3), FisherHP(alpha=1e-4))
    g = torch.Generator().manual_seed(5)
    for (k, p0), pa in zip(m0.named_parameters(), a.parameters()):
        n = torch.randn(p0.shape, generator=g)
        assert torch.allclose(pa - p0, stds[k][0] * n, atol=1e-6), k


# ---------------------------------------------------------------- Boundary Shrink


def test_neighbour_labels_are_the_raw_argmax_the_true_label_where_fgsm_fails():
    """The reference (Unlearn-Saliency boundary_sh.py, and the paper's own code) labels each
    sample with the arg-max over all classes on the FGSM image: the class reached, or the true
    label where the step does not cross (the harness had excluded the true class)."""
    # logits = (x0, x1, -5 + 0 x): class 2 is far away, so a crossing step lands in the other
    # of classes 0 and 1
    lin = nn.Linear(2, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        lin.bias.copy_(torch.tensor([0.0, 0.0, -5.0]))
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.tensor([[0.9, 0.1], [0.6, 0.5], [0.2, 0.8], [0.45, 0.5]])
    y = torch.tensor([0, 0, 1, 1])
    # a step of 0.5 crosses for every point; none at all leaves every label as it is; a step
    # of 0.1 crosses for the two points near the diagonal only
    assert torch.equal(neighbour_labels(model, x, y, 0.5), torch.tensor([1, 1, 0, 0]))
    assert torch.equal(neighbour_labels(model, x, y, 1e-9), y)
    assert torch.equal(neighbour_labels(model, x, y, 0.1), torch.tensor([0, 1, 1, 0]))


def test_boundary_shrink_defaults_follow_salun_table_reference():
    """Unlearn-Saliency's arguments (lr 0.01, weight decay 5e-4, batch 256, the training
    transform), not the paper's lr 1e-5 / no weight decay / batch 64 the harness had."""
    hp = BoundaryShrinkHP()
    assert (hp.lr, hp.momentum, hp.weight_decay, hp.batch_size, hp.epochs) == (
        0.01,
        0.9,
        5e-4,
        256,
        10,
    )
    assert hp.augment == "recipe"


def test_boundary_shrink_reshuffles_forget_set_every_epoch():
    """The reference's forget loader has shuffle=True: batches differ between epochs (the
    harness had walked D_f in order)."""
    data = toy_data(n=64, c=3)
    seen = []
    real = data.forget.loader

    def spy(batch, shuffle=False, generator=None, **kw):
        seen.append(shuffle)
        return real(batch, shuffle=shuffle, generator=generator, **kw)

    data.forget.loader = spy
    boundary_shrink(toy_cnn(), data, BoundaryShrinkHP(epochs=2, batch_size=4), ctx_for(3))
    assert seen == [True, True]


def test_boundary_shrink_lowers_forget_accuracy():
    torch.manual_seed(0)
    data = toy_data(n=96, c=3)
    model = toy_cnn()
    x, y = data.retain.tensors()
    xf, yf = data.forget.tensors()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(150):  # memorise everything, D_f included
        loss = F.cross_entropy(model(torch.cat([x, xf])), torch.cat([y, yf]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert (model(xf).argmax(1) == yf).float().mean() == 1.0
    ctx = ctx_for(3)
    out = boundary_shrink(model, data, BoundaryShrinkHP(lr=0.01, epochs=10), ctx)
    assert ctx.steps == 10
    assert (out(xf).argmax(1) == yf).float().mean() <= 0.5


# ---------------------------------------------------------------- UNSIR


def test_unsir_noise_raises_forget_class_loss_and_steps_are_counted():
    data = toy_data(n=200, c=3)
    model = toy_cnn()
    with torch.no_grad():
        model[7].weight.mul_(20)  # confident logits, as after training
    model.eval()
    hp = UnsirHP(
        noise_batch=16,
        noise_steps=20,
        noise_repeats=3,
        samples_per_class=20,
        batch_size=32,
        noise_bn="eval",
        noise_label="own",
        noise_take="all",
    )
    ctx = ctx_for(3)
    ref = copy.deepcopy(model.state_dict())
    for cls in range(3):
        noise = learn_noise(model, cls, (1, 4, 4), hp, ctx)
        rand = torch.randn(noise.shape, generator=torch.Generator().manual_seed(cls))
        t = torch.full((16,), cls)
        with torch.no_grad():
            assert F.cross_entropy(model(noise), t) > F.cross_entropy(model(rand), t) + 1.0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ref.items())  # untouched
    ctx = ctx_for(3)
    unsir(copy.deepcopy(model), data, hp, ctx)
    # forget labels {0, 1, 2} -> 3 classes x 16 noise x 3 repeats = 144 noise + 60 retain
    # = 204 impair samples (7 batches of 32), then 60 repair samples (2 batches)
    assert ctx.extra["impair_steps"] == math.ceil(204 / 32) == 7
    assert ctx.extra["repair_steps"] == math.ceil(60 / 32) == 2
    assert ctx.steps == 9


def test_unsir_defaults_follow_the_notebook_noise_in_train_mode_and_c_images_per_copy():
    """The reference learns the noise in train mode (BatchNorm running statistics absorb it,
    parameters stay) and adds only C = channels images per noise copy (fails on the former
    eval-mode, all-images code)."""
    data = toy_data(n=200, c=3)
    model = toy_cnn()
    model.eval()
    hp = UnsirHP(noise_batch=16, noise_steps=5, noise_repeats=3, samples_per_class=20)
    params = {k: v.clone() for k, v in model.named_parameters()}
    stats = model[1].running_mean.clone()
    learn_noise(model, 0, (1, 4, 4), hp, ctx_for(3))
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in params.items())
    assert not torch.equal(model[1].running_mean, stats)
    assert not model.training  # the mode is restored
    ctx = ctx_for(3)
    unsir(copy.deepcopy(model), data, dataclasses.replace(hp, batch_size=32), ctx)
    # 3 classes x 1 channel x 3 repeats = 9 noise images + 60 retain = 69 -> 3 batches of 32
    assert ctx.extra["impair_steps"] == 3


# ---------------------------------------------------------------- CF-k / EU-k


def test_last_k_modules_counts_parameterised_layers_in_order():
    m = toy_cnn()
    assert last_k_modules(m, 1) == [m[7]]
    assert last_k_modules(m, 3) == [m[4], m[5], m[7]]
    assert last_k_modules(m, 99) == [m[0], m[1], m[4], m[5], m[7]]


def _split_state(model, k):
    names = {
        n for n, mod in model.named_modules() if any(mod is t for t in last_k_modules(model, k))
    }
    state = model.state_dict()
    inside = {key for key in state if key.rsplit(".", 1)[0] in names}
    return inside, set(state) - inside


@pytest.mark.parametrize("k", [1, 2])
def test_cf_k_former_reading_changes_only_the_last_k_layers(k):
    data = toy_data()
    m0 = toy_cnn()
    hp = CFkHP(k=k, epochs=2, batch_size=16, head="trained", frozen_bn="eval")  # former reading
    out = cf_k(copy.deepcopy(m0), data, hp, ctx_for(3))
    inside, outside = _split_state(m0, k)
    s0, s1 = m0.state_dict(), out.state_dict()
    assert all(torch.equal(s0[key], s1[key]) for key in outside)  # params and BN statistics
    assert any(not torch.equal(s0[key], s1[key]) for key in inside)
    assert all(p.requires_grad for p in out.parameters())  # freezing undone


def test_eu_k_former_reading_reinitialises_last_k_and_keeps_the_rest():
    data = toy_data()
    m0 = toy_cnn()
    # re-initialisation only, the former reading (head counted, statistics reset)
    hp = EUkHP(k=2, epochs=0, head="trained", frozen_bn="eval", reset_stats=True)
    a = eu_k(copy.deepcopy(m0), data, hp, ctx_for(3, seed=1))
    b = eu_k(copy.deepcopy(m0), data, hp, ctx_for(3, seed=1))
    c = eu_k(copy.deepcopy(m0), data, hp, ctx_for(3, seed=2))
    inside, outside = _split_state(m0, 2)
    s0, sa, sb, sc = (m.state_dict() for m in (m0, a, b, c))
    assert all(torch.equal(s0[key], sa[key]) for key in outside)
    assert not torch.equal(s0["7.weight"], sa["7.weight"])  # re-initialised head
    assert torch.equal(sa["5.weight"], torch.ones(8)) and torch.equal(
        sa["5.running_var"], torch.ones(8)
    )
    assert all(torch.equal(sa[key], sb[key]) for key in inside)  # seeded
    assert not torch.equal(sa["7.weight"], sc["7.weight"])
    bound = 1 / math.sqrt(8)  # default Linear init range
    assert sa["7.weight"].abs().max() <= bound and sa["7.bias"].abs().max() <= bound
    # then training moves only the re-initialised layers
    hp = dataclasses.replace(hp, epochs=2, batch_size=16)
    t = eu_k(copy.deepcopy(m0), data, hp, ctx_for(3, seed=1))
    st = t.state_dict()
    assert all(torch.equal(s0[key], st[key]) for key in outside)
    assert not torch.equal(st["7.weight"], sa["7.weight"])


def test_cf_k_defaults_follow_scrub_head_frozen_whole_model_in_train_mode():
    """SCRUB's cfk_unlearn: the last k layers before the head are trained, the head stays
    frozen, and every BatchNorm (the frozen ones too) runs in train mode, so their running
    statistics move; plain SGD, batch 64 (fails on the former code: head trained, frozen
    BatchNorms in eval mode)."""
    data = toy_data()
    m0 = toy_cnn()
    hp = CFkHP(epochs=2)
    assert (hp.k, hp.momentum, hp.weight_decay, hp.batch_size, hp.augment) == (2, 0, 0, 64, "none")
    out = cf_k(copy.deepcopy(m0), data, hp, ctx_for(3))
    s0, s1 = m0.state_dict(), out.state_dict()
    assert torch.equal(s0["7.weight"], s1["7.weight"]) and torch.equal(s0["7.bias"], s1["7.bias"])
    assert torch.equal(s0["0.weight"], s1["0.weight"])  # frozen parameters
    assert not torch.equal(s0["4.weight"], s1["4.weight"])  # trained (layers 4, 5)
    assert not torch.equal(s0["1.running_mean"], s1["1.running_mean"])  # frozen BN, train mode


def test_eu_k_defaults_keep_running_statistics_and_decay_the_lr():
    """euk_unlearn copies parameters only (running statistics stay) and trains 25 epochs with
    the x0.1 decay after epochs 10, 15, 20 (fails on the former code: statistics reset, 10
    epochs, no decay)."""
    from methods.cf_k import lr_at

    hp = EUkHP()
    assert hp.epochs == 25 and not hp.reset_stats
    assert [lr_at(hp, e) for e in (0, 10, 11, 15, 16, 21)] == pytest.approx(
        [0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-5]
    )
    data = toy_data()
    m0 = toy_cnn()
    a = eu_k(copy.deepcopy(m0), data, dataclasses.replace(hp, epochs=0), ctx_for(3, seed=1))
    s0, sa = m0.state_dict(), a.state_dict()
    assert torch.equal(sa["5.running_var"], s0["5.running_var"])  # kept
    assert not torch.equal(sa["4.weight"], s0["4.weight"])  # re-initialised
    assert torch.equal(sa["7.weight"], s0["7.weight"])  # head untouched
