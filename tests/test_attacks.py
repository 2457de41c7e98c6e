"""Known-answer tests for the L2UL targeted L2 PGD attack and adversarial-set generation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.models.archs import Classifier
from bench.unlearning.attacks import l2_pgd_targeted, make_adversarial_set, random_targets

C = 10


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_conv(num_classes: int = C) -> nn.Module:
    """A small conv classifier with BatchNorm on 1x8x8 inputs, wrapped like the bench archs."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )
    model = Classifier(net, mean=(0.5,), std=(0.25,))
    model.train()
    with torch.no_grad():  # non-trivial running stats, so eval vs train mode differ
        model(torch.rand(64, 1, 8, 8))
    return model


def block_linear() -> nn.Module:
    """Linear classifier on 64 pixels where class c mostly reads pixels 6c..6c+5, so every class
    is reachable inside the [0, 1] box within a small L2 distance."""
    torch.manual_seed(1)
    lin = nn.Linear(64, C)
    with torch.no_grad():
        lin.weight.mul_(0.1)
        lin.bias.zero_()
        for c in range(C):
            lin.weight[c, 6 * c : 6 * c + 6] += 1.0
    return nn.Sequential(nn.Flatten(), lin)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=_gen(seed))


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1)


def reference_pgd(model, x, target, eps, step, iters, generator):
    """Per-example, literal transcription of advertorch 0.2.3's L2 PGD (rand_init_delta,
    perturb_iterative with minimize=True, normalize_by_pnorm, clamp_by_pnorm), one image at a
    time, independent of the vectorized implementation under test."""
    model.eval()
    out = []
    for i in range(x.shape[0]):
        xi, ti = x[i : i + 1], target[i : i + 1]
        delta = torch.rand(xi.shape, generator=generator) - xi
        delta = delta * min(1.0, eps / max(float(delta.norm()), 1e-30))
        delta = torch.clamp(xi + delta, 0, 1) - xi
        for _ in range(iters):
            delta = delta.clone().requires_grad_(True)
            loss = -F.cross_entropy(model(xi + delta), ti, reduction="sum")
            loss.backward()
            g = delta.grad
            g = g / max(float(g.norm()), 1e-6)
            with torch.no_grad():
                d = delta + step * g
                d = torch.clamp(xi + d, 0, 1) - xi
                d = d * min(1.0, eps / max(float(d.norm()), 1e-30))
            delta = d
        out.append(torch.clamp(xi + delta.detach(), 0, 1))
    model.zero_grad(set_to_none=True)
    return torch.cat(out)


def test_outputs_in_box_and_ball():
    model = tiny_conv()
    x = images(32)
    t = random_targets(torch.zeros(32, dtype=torch.long), C, "all", _gen(1))
    for eps in (0.3, 2.0):
        adv = l2_pgd_targeted(model, x, t, eps=eps, step=0.1, iters=10, generator=_gen(2))
        assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
        assert adv.min() >= 0 and adv.max() <= 1
        assert (l2(adv, x) <= eps + 1e-5).all()
    # the random start alone (0 iterations) also lies in the box and the ball
    adv0 = l2_pgd_targeted(model, x, t, eps=0.5, iters=0, generator=_gen(2))
    assert adv0.min() >= 0 and adv0.max() <= 1 and (l2(adv0, x) <= 0.5 + 1e-5).all()
    assert (l2(adv0, x) > 0).all()
    # no random start and no iterations: the clean images
    assert torch.equal(l2_pgd_targeted(model, x, t, iters=0, rand_init=False), x)


def test_matches_per_example_advertorch_reference():
    model = tiny_conv()
    x = images(4, seed=3)
    t = torch.tensor([0, 1, 2, 3])
    ours = l2_pgd_targeted(model, x, t, eps=1.0, step=0.1, iters=12, generator=_gen(4))
    ref = reference_pgd(model, x, t, eps=1.0, step=0.1, iters=12, generator=_gen(4))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_targeted_attack_reaches_targets_on_linear_model():
    model = block_linear()
    x = images(64, seed=5)
    y = model(x).argmax(1)
    t = random_targets(y, C, "all", _gen(6))
    assert (model(x).argmax(1) == t).float().mean() < 0.2
    adv = l2_pgd_targeted(model, x, t, eps=3.0, step=0.1, iters=100, generator=_gen(7))
    with torch.no_grad():
        hit = (model(adv).argmax(1) == t).float().mean().item()
    assert hit >= 0.95
    assert (l2(adv, x) <= 3.0 + 1e-5).all()


def test_seeded_and_deterministic():
    model = tiny_conv()
    x = images(8)
    t = torch.arange(8) % C
    a = l2_pgd_targeted(model, x, t, eps=1.0, iters=5, generator=_gen(11))
    b = l2_pgd_targeted(model, x, t, eps=1.0, iters=5, generator=_gen(11))
    c = l2_pgd_targeted(model, x, t, eps=1.0, iters=5, generator=_gen(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_mode_restored_no_param_grads_no_buffer_change():
    model = tiny_conv()
    bufs = {n: b.clone() for n, b in model.named_buffers()}
    x, t = images(8), torch.arange(8) % C
    model.train()
    l2_pgd_targeted(model, x, t, eps=1.0, iters=3, generator=_gen())
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    for n, b in model.named_buffers():  # eval mode during the attack: running stats untouched
        assert torch.equal(b, bufs[n]), n
    # a mixed state (BN frozen in eval, rest training) is restored module by module
    model.net[1].eval()
    l2_pgd_targeted(model, x, t, eps=1.0, iters=2, generator=_gen())
    assert model.training and not model.net[1].training and model.net[0].training
    model.eval()
    l2_pgd_targeted(model, x, t, eps=1.0, iters=2, generator=_gen())
    assert not any(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_existing_param_grads_untouched_and_works_under_no_grad():
    model = tiny_conv()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    x, t = images(4), torch.arange(4)
    with torch.no_grad():
        adv = l2_pgd_targeted(model, x, t, eps=1.0, iters=3, generator=_gen())
    assert not torch.equal(adv, x)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())


def test_random_targets_all_never_true_label_and_uniform():
    for num_classes in (2, 3, 10, 100):
        y = torch.arange(4000) % num_classes
        t = random_targets(y, num_classes, "all", _gen(num_classes))
        assert t.dtype == torch.long and t.shape == y.shape
        assert (t != y).all() and t.min() >= 0 and t.max() < num_classes
    y = torch.zeros(9000, dtype=torch.long)
    t = random_targets(y, 10, "all", _gen(1))
    counts = torch.bincount(t, minlength=10)
    assert counts[0] == 0
    assert (counts[1:] - 1000).abs().max() < 150  # uniform over the 9 other classes


def test_random_targets_all_with_exclude():
    y = torch.arange(5000) % 10
    excl = (y * 3 + 1) % 10
    excl[::7] = y[::7]  # exclude == y: only one forbidden class on those rows
    t = random_targets(y, 10, "all", _gen(2), exclude=excl)
    assert (t != y).all() and (t != excl).all() and t.min() >= 0 and t.max() < 10
    # every allowed class shows up: uniform over the remaining 8 classes per (y, y*) pair
    rows = (y == 0) & (excl == 1)
    counts = torch.bincount(t[rows], minlength=10)
    assert counts[0] == 0 and counts[1] == 0 and (counts[2:] > 0).all()
    # three classes with y != y*: a single class is left and is always chosen
    y3, e3 = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 2])
    assert torch.equal(random_targets(y3, 3, "all", _gen(), exclude=e3), torch.tensor([2, 0, 1, 1]))
    with pytest.raises(ValueError):
        random_targets(torch.tensor([0]), 2, "all", _gen(), exclude=torch.tensor([1]))


def test_random_targets_first10_quirk():
    y = torch.arange(5000) % 100  # CIFAR-100 labels
    g_ref = _gen(3)
    raw = torch.randint(0, 10, y.shape, generator=g_ref)
    t = random_targets(y, 100, "first10", _gen(3))
    assert t.min() >= 0 and t.max() <= 9
    assert torch.equal(t, torch.where(raw == y, torch.full_like(raw, 5), raw))
    # a hit on the true label becomes 5, even when the true label is 5 (the official quirk)
    hit = raw == y
    assert hit.any() and (t[hit] == 5).all()
    assert ((y == 5) & (t == 5)).any()
    with pytest.raises(ValueError):
        random_targets(y, 100, "first10", _gen(), exclude=y)
    with pytest.raises(ValueError):
        random_targets(torch.tensor([0]), 5, "first10", _gen())
    with pytest.raises(ValueError):
        random_targets(y, 100, "some", _gen())


def test_make_adversarial_set_order_labels_and_chunking():
    model = tiny_conv()
    k, n_adv, eps = 5, 3, 0.2
    fx = images(k, seed=9)
    fy = torch.tensor([0, 5, 2, 5, 9])
    x_adv, y_adv = make_adversarial_set(
        model,
        fx,
        fy,
        n_adv,
        C,
        eps=eps,
        step=0.05,
        iters=4,
        target_label_range="first10",
        generator=_gen(21),
    )
    assert x_adv.shape == (n_adv * k, 1, 8, 8) and y_adv.shape == (n_adv * k,)
    # targets: n_adv consecutive draws of one target set each, in order
    g = _gen(21)
    expected = torch.cat([random_targets(fy, C, "first10", g) for _ in range(n_adv)])
    assert torch.equal(y_adv, expected)
    # row j*k+i is forget instance i (closest source, inside its eps ball)
    dist = torch.cdist(x_adv.flatten(1), fx.flatten(1))
    assert torch.equal(dist.argmin(1), torch.arange(n_adv * k) % k)
    assert (dist.min(1).values <= eps + 1e-5).all()
    # chunking gives the same examples; the whole set equals one attack on the repeated D_f
    x_chunk, y_chunk = make_adversarial_set(
        model,
        fx,
        fy,
        n_adv,
        C,
        eps=eps,
        step=0.05,
        iters=4,
        target_label_range="first10",
        generator=_gen(21),
        batch_size=4,
    )
    assert torch.equal(y_chunk, y_adv)
    torch.testing.assert_close(x_chunk, x_adv, atol=1e-6, rtol=0)
    direct = l2_pgd_targeted(
        model, fx.repeat(n_adv, 1, 1, 1), expected, eps=eps, step=0.05, iters=4, generator=g
    )
    torch.testing.assert_close(direct, x_adv, atol=1e-6, rtol=0)


def test_make_adversarial_set_all_with_exclude_and_empty():
    model = tiny_conv()
    fx, fy = images(4), torch.tensor([1, 2, 3, 4])
    ystar = torch.tensor([2, 3, 4, 5])
    _, y_adv = make_adversarial_set(
        model,
        fx,
        fy,
        50,
        C,
        eps=0.5,
        iters=1,
        target_label_range="all",
        generator=_gen(),
        exclude=ystar,
    )
    assert y_adv.shape == (200,)
    assert (y_adv != fy.repeat(50)).all() and (y_adv != ystar.repeat(50)).all()
    x0, y0 = make_adversarial_set(model, fx, fy, 0, C, generator=_gen())
    assert x0.shape == (0, 1, 8, 8) and y0.shape == (0,)
