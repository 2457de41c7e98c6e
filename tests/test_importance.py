"""Known-answer tests for MAS importance, its normalization and the L2UL importance penalty."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.data.splits import TensorSplit, View
from bench.unlearning.importance import MASPenalty, mas_importance, normalize_importance


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(5, 3)


def _data(n: int = 7, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def hand_mas_linear(lin: nn.Linear, x: torch.Tensor, batch_size: int, accumulate: bool = True):
    """d/dW mean_i ||W x_i + b|| = mean_i u_i x_i^T and d/db = mean_i u_i with u_i = z_i/||z_i||;
    importance = sum over batches j of |G_j| * |B_j|, divided by the number of examples, where
    G_j = the gradient of batch j (per batch) or the sum of the gradients of batches 1..j
    (``accumulate``: the L2UL code, whose zero_grad never reaches the importance copy)."""
    w_imp, b_imp = torch.zeros_like(lin.weight), torch.zeros_like(lin.bias)
    gw_sum, gb_sum = torch.zeros_like(lin.weight), torch.zeros_like(lin.bias)
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            xb = x[s : s + batch_size]
            z = xb @ lin.weight.T + lin.bias
            u = z / z.norm(dim=1, keepdim=True)
            gw, gb = u.T @ xb / xb.shape[0], u.mean(0)
            if accumulate:
                gw_sum += gw
                gb_sum += gb
                gw, gb = gw_sum, gb_sum
            w_imp += gw.abs() * xb.shape[0]
            b_imp += gb.abs() * xb.shape[0]
    return w_imp / x.shape[0], b_imp / x.shape[0]


@pytest.mark.parametrize("accumulate", [True, False])
def test_mas_importance_linear_known_answer(accumulate):
    lin = _linear()
    x, y = _data(7)
    for bs in (1, 3, 32):
        omega = mas_importance(lin, (x, y), batch_size=bs, accumulate=accumulate)
        assert set(omega) == {"weight", "bias"}
        w_ref, b_ref = hand_mas_linear(lin, x, bs, accumulate=accumulate)
        torch.testing.assert_close(omega["weight"], w_ref, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(omega["bias"], b_ref, atol=1e-6, rtol=1e-5)
        assert not omega["weight"].requires_grad
    # batching matters (per-batch absolute values), so the check above is not vacuous
    assert not torch.allclose(
        mas_importance(lin, (x, y), 1, accumulate=accumulate)["weight"],
        mas_importance(lin, (x, y), 32, accumulate=accumulate)["weight"],
    )


def test_mas_importance_accumulation_is_the_default_and_differs_beyond_one_batch():
    """The reference's accumulating form is the default; it equals the per-batch form when D_f
    fits in one batch and differs when it does not."""
    lin = _linear()
    x, y = _data(7)
    default = mas_importance(lin, (x, y), batch_size=3)
    acc = mas_importance(lin, (x, y), batch_size=3, accumulate=True)
    per = mas_importance(lin, (x, y), batch_size=3, accumulate=False)
    torch.testing.assert_close(default["weight"], acc["weight"])
    assert not torch.allclose(acc["weight"], per["weight"])
    one_a = mas_importance(lin, (x, y), batch_size=32, accumulate=True)
    one_p = mas_importance(lin, (x, y), batch_size=32, accumulate=False)
    torch.testing.assert_close(one_a["weight"], one_p["weight"])


def test_mas_importance_view_equals_tensors():
    lin = _linear()
    x, y = _data(10)
    split = TensorSplit(x.view(10, 5, 1, 1), y)
    view = View(split, torch.tensor([9, 2, 4, 0, 7]))
    net = nn.Sequential(nn.Flatten(), lin)
    from_view = mas_importance(net, view, batch_size=2)
    xs = x[torch.tensor([9, 2, 4, 0, 7])].view(5, 5, 1, 1)
    from_tensors = mas_importance(net, (xs, y[:5]), batch_size=2)
    for n in from_view:
        torch.testing.assert_close(from_view[n], from_tensors[n])
    w_ref, _ = hand_mas_linear(lin, xs.flatten(1), 2)  # the default accumulates
    torch.testing.assert_close(from_view["1.weight"], w_ref, atol=1e-6, rtol=1e-5)


def _bn_model() -> nn.Sequential:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():  # running stats far from any batch's statistics
        model[1].running_mean.fill_(3.0)
        model[1].running_var.fill_(9.0)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    model.eval()
    return model


def test_mas_importance_uses_batch_statistics_and_leaves_model_unchanged():
    model = _bn_model()
    x, y = _data(8, seed=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    omega = mas_importance(model, (x, y), batch_size=4, accumulate=False)
    # the original model: same parameters and buffers, same mode, no gradients
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert set(omega) == {n for n, _ in model.named_parameters()}

    # explicit computation with BatchNorm normalizing by each batch's own statistics
    lin1, bn, lin2 = model[0], model[1], model[3]
    params = [lin1.weight, lin1.bias, bn.weight, bn.bias, lin2.weight, lin2.bias]
    ref = [torch.zeros_like(p) for p in params]
    for s in range(0, 8, 4):
        h = lin1(x[s : s + 4])
        h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias
        out = lin2(torch.relu(h))
        grads = torch.autograd.grad(out.norm(dim=1).mean(), params)
        for r, g in zip(ref, grads):
            r += g.abs() * 4
    for name, r in zip(["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"], ref):
        torch.testing.assert_close(omega[name], r / 8, atol=1e-6, rtol=1e-5)
    # eval-mode (running) statistics would give a different answer
    eval_ref = torch.zeros_like(lin2.weight)
    for s in range(0, 8, 4):
        (g,) = torch.autograd.grad(model(x[s : s + 4]).norm(dim=1).mean(), [lin2.weight])
        eval_ref += g.abs() * 4
    assert not torch.allclose(omega["3.weight"], eval_ref / 8, atol=1e-4)
    assert all(p.grad is None for p in model.parameters())


def test_mas_importance_does_not_touch_existing_grads_and_conv_bn_buffers():
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 4),
    )
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    bufs = {n: b.clone() for n, b in model.named_buffers()}
    x = torch.rand(10, 1, 6, 6)
    omega = mas_importance(model, (x, torch.zeros(10, dtype=torch.long)), batch_size=4)
    for n, b in model.named_buffers():
        assert torch.equal(b, bufs[n]), n
    assert model.training
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    assert all(torch.isfinite(o).all() and (o >= 0).all() for o in omega.values())
    with pytest.raises(ValueError):
        mas_importance(model, (x[:0], torch.zeros(0, dtype=torch.long)))


def test_normalize_importance_min_max_and_constant_guard():
    g = torch.Generator().manual_seed(5)
    omega = {
        "a": torch.rand(4, 3, generator=g) * 5 + 2,
        "b": torch.tensor([0.25, -1.0, 3.0]),
        "const": torch.full((2, 2), 0.3),
        "zeros": torch.zeros(6),
        "single": torch.tensor([4.0]),
    }
    out = normalize_importance(omega)
    for n in ("a", "b"):
        assert out[n].min() == 0 and out[n].max() == 1
        t = omega[n]
        torch.testing.assert_close(out[n], (t - t.min()) / (t.max() - t.min()))
    torch.testing.assert_close(out["b"], torch.tensor([1.25 / 4.0, 0.0, 1.0]))
    for n in ("const", "zeros", "single"):
        assert torch.equal(out[n], torch.zeros_like(omega[n]))
    assert all(not torch.isnan(v).any() for v in out.values())
    assert out["a"].shape == omega["a"].shape


def test_penalty_zero_at_theta0_and_hand_computed_after_shift():
    lin = _linear()
    omega_hat = {"weight": torch.zeros(3, 5), "bias": torch.tensor([0.0, 0.5, 1.0])}
    omega_hat["weight"][0, 0] = 0.75
    omega_hat["weight"][2, 4] = 1.0
    pen = MASPenalty(lin, omega_hat, lam=2.0)
    assert pen(lin).item() == 0.0
    with torch.no_grad():
        lin.weight[0, 0] += 0.5  # weight 1 - 0.75 = 0.25
        lin.weight[1, 2] -= 2.0  # weight 1
        lin.weight[2, 4] += 10.0  # weight 0: free to move
        lin.bias += torch.tensor([1.0, -2.0, 3.0])  # weights 1, 0.5, 0
    expected = 2.0 * (0.25 * 0.25 + 1.0 * 4.0 + 0.0 * 100.0 + 1.0 * 1.0 + 0.5 * 4.0) / 2
    value = pen(lin)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # differentiable: d/dtheta = lam * (1 - omega_hat) * (theta - theta0)
    (gw, gb) = torch.autograd.grad(value, [lin.weight, lin.bias])
    assert gw[0, 0].item() == pytest.approx(2.0 * 0.25 * 0.5)
    assert gw[1, 2].item() == pytest.approx(2.0 * 1.0 * -2.0)
    assert gw[2, 4].item() == 0.0
    torch.testing.assert_close(gb, torch.tensor([2.0, -2.0, 0.0]))


def test_penalty_from_normalized_mas_ignores_buffers():
    model = _bn_model()
    x, y = _data(8, seed=6)
    omega_hat = normalize_importance(mas_importance(model, (x, y), batch_size=4))
    pen = MASPenalty(model, omega_hat)
    assert pen(model).item() == 0.0
    with torch.no_grad():
        model[1].running_mean.add_(5.0)  # buffers are not regularized
        model[1].running_var.mul_(3.0)
    assert pen(model).item() == 0.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    expected = sum(((1 - omega_hat[n]) * 0.01).sum() for n, _ in model.named_parameters()) / 2
    assert pen(model).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError):
        MASPenalty(model, {"0.weight": omega_hat["0.weight"]})


def test_add_grad_equals_the_penalty_backpropagated():
    model = _bn_model()
    x, y = _data(8, seed=7)
    omega_hat = normalize_importance(mas_importance(model, (x, y), batch_size=4))
    pen = MASPenalty(model, omega_hat, lam=3.0)
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.add_(0.05 * (i + 1))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    (loss + pen(model)).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    pen.add_grad(model)
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
    # a parameter the loss did not reach gets the penalty's gradient alone
    model.zero_grad(set_to_none=True)
    pen.add_grad(model)
    (alone,) = torch.autograd.grad(pen(model), [next(model.parameters())])
    torch.testing.assert_close(next(model.parameters()).grad, alone)
    assert any(g.abs().sum() > 0 for g in expected)
