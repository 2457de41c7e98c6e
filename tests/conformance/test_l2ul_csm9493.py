"""Conformance with the L2UL reference code: csm9493/L2UL @ 5fb777b (the CIFAR-10 script
``main_unlearn_cifar10_mixed_label_resnet18.py``, unchanged in these parts since b8b335b, and
``utils.py`` of b8b335b: ``naive_train``, ``estimate_parameter_importance``).

Each test restates, in a few lines of plain torch written for this test, what the reference does
step by step (not its code), runs the harness's method on the same tiny BatchNorm network and
data, and asserts the same parameters and BatchNorm running statistics (<= 1e-6 relative):

* NegGrad (case 1): full unshuffled passes of -CE over D_f in train mode;
* ADV (case 2): per step ``model.train()``, ``output_adv = model(adv_data)`` **then**
  ``output = model(data)`` (two passes, so BatchNorm normalizes each with its own batch
  statistics and updates its running statistics twice, the second time from D_f alone), loss
  -CE(output) * n_f/n + CE(output_adv) * n_a/n, SGD(lr, momentum 0.9, wd 1e-4); D_f batches
  come from one ``itertools.cycle`` created before the epoch loop (an epoch starts where the
  previous one ended);
* ADV+IMP (case 3): ADV + lam * sum (1 - Omega_hat) (theta - theta0)^2 / 2 with Omega the MAS
  importance computed on a deep copy in train mode whose gradients are never cleared (the
  reference zeroes another model's optimizer), min-max normalized per tensor.

The adversarial set is fixed by hand (the attack has its own tests), and the stop rule is
replaced by one that never passes so that both loops run the same number of steps.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

import bench.unlearning.l2ul as l2ul
from bench.core.spec import Recipe
from bench.data.splits import TensorSplit, View
from bench.unlearning.importance import mas_importance, normalize_importance
from bench.unlearning.loops import ForgetCheck
from bench.unlearning.method import Context, UnlearnData, Withheld, make_hparams
from tests.conformance.toys import ToDouble

NUM_CLASSES = 3
K, FORGET_BATCH = 6, 4  # two forget batches (4 + 2): the cycle's phase matters
N_ADV, ADV_BATCH = 10, 4  # three adversarial steps per epoch (4 + 4 + 2)
EPOCHS = 2
LR = 0.05  # larger than the paper's 1e-3 so that the steps move the weights visibly


def _net() -> nn.Module:
    """A tiny BatchNorm network computing in float64 (data stay float32, as the harness's
    loaders give them), so that both loops agree to rounding far below the tolerance and any
    difference in what they compute shows."""
    torch.manual_seed(0)
    return nn.Sequential(
        ToDouble(),
        nn.Conv2d(3, 4, 3, padding=1, bias=False),  # as in ResNets: a bias before BatchNorm
        # gets no gradient, constant importance, and the reference's 0/0 (our guard's case)
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5, bias=False),
        nn.BatchNorm1d(5),
        nn.ReLU(),
        nn.Linear(5, NUM_CLASSES),
    ).double()


def _data():
    g = torch.Generator().manual_seed(1)
    x_f = torch.rand(K, 3, 4, 4, generator=g)
    y_f = torch.randint(0, NUM_CLASSES, (K,), generator=g)
    x_adv = torch.rand(N_ADV, 3, 4, 4, generator=g)
    y_adv = torch.randint(0, NUM_CLASSES, (N_ADV,), generator=g)
    return x_f, y_f, x_adv, y_adv


class _NeverPasses(ForgetCheck):
    def hits(self, model):
        super().hits(model)  # the same eval/train switch as the real check
        return torch.ones((), dtype=torch.long)


def _run_harness(method: str, monkeypatch, **hp):
    x_f, y_f, x_adv, y_adv = _data()
    monkeypatch.setattr(l2ul, "make_adversarial_set", lambda *a, **k: (x_adv, y_adv))
    monkeypatch.setattr(l2ul, "objective_check", lambda forget, y_star: _NeverPasses(forget))
    model = _net()
    forget = View(TensorSplit(x_f, y_f), torch.arange(K), torch.device("cpu"), "forget")
    data = UnlearnData(forget, Withheld("retain", method), Withheld("val", method), NUM_CLASSES)
    ctx = Context(torch.device("cpu"), 0, torch.Generator().manual_seed(0), Recipe(), NUM_CLASSES)
    fields = {"lr": LR, "forget_batch": FORGET_BATCH, "max_epochs": EPOCHS, **hp}
    if method.startswith("adv"):
        fields["adv_batch"] = ADV_BATCH
    if method.endswith("mas"):
        fields["mas_batch"] = FORGET_BATCH  # the reference reuses the forget loader
    from bench.unlearning.method import METHODS

    out = METHODS.get(method)(model, data, make_hparams(method, fields), ctx)
    assert ctx.cap_hit
    return out, ctx


# ---------------------------------------------------------------------------------------------
# the reference, restated


def _reference_importance(model: nn.Module, x_f, batch_size: int) -> dict[str, torch.Tensor]:
    """estimate_parameter_importance: a deep copy in train mode; per batch, backward of the
    mean L2 norm of the outputs; importance += |p.grad| * |B|; p.grad is never zeroed (the
    optimizer passed in belongs to the original model); / (batches * batch size); then per
    tensor (imp - min) / (max - min) and 1 - that."""
    net = copy.deepcopy(model)
    net.train()
    imp = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    n_batches = K // batch_size + 1
    batches = [x_f[s : s + batch_size] for s in range(0, K, batch_size)]
    for images in itertools.islice(batches, n_batches):
        torch.norm(net(images), p=2, dim=1).mean().backward()  # accumulates into .grad
        for n, p in net.named_parameters():
            if p.grad is not None:
                imp[n] += p.grad.abs() * images.shape[0]
    imp = {n: v / (n_batches * batch_size) for n, v in imp.items()}
    return {n: 1 - (v - v.min()) / (v.max() - v.min()) for n, v in imp.items()}


def _reference_negative_gradient():
    model = _net()
    x_f, y_f, _, _ = _data()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
    ce = nn.CrossEntropyLoss()
    for _ in range(EPOCHS):
        model.train()
        for s in range(0, K, FORGET_BATCH):
            opt.zero_grad()
            (-ce(model(x_f[s : s + FORGET_BATCH]), y_f[s : s + FORGET_BATCH])).backward()
            opt.step()
        model.eval()
    return model


def _reference_adv(importance: bool, lam: float = 1.0):
    model = _net()
    x_f, y_f, x_adv, y_adv = _data()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
    origin = {n: p.clone().detach() for n, p in model.named_parameters()}
    weight = _reference_importance(model, x_f, FORGET_BATCH) if importance else None
    forget_batches = [
        (x_f[s : s + FORGET_BATCH], y_f[s : s + FORGET_BATCH]) for s in range(0, K, FORGET_BATCH)
    ]
    forget_cycle = itertools.cycle(forget_batches)  # created once, before the epochs
    adv_batches = [
        (x_adv[s : s + ADV_BATCH], y_adv[s : s + ADV_BATCH]) for s in range(0, N_ADV, ADV_BATCH)
    ]
    ce = nn.CrossEntropyLoss()
    for _ in range(EPOCHS):
        for (adv_data, adv_target), (data, target) in zip(adv_batches, forget_cycle):
            model.train()
            opt.zero_grad()
            output_adv = model(adv_data)
            output = model(data)
            n = adv_data.shape[0] + data.shape[0]
            loss = -ce(output, target) * (data.shape[0] / n) + ce(output_adv, adv_target) * (
                adv_data.shape[0] / n
            )
            if weight is not None:
                reg = sum(
                    torch.sum(weight[n_] * (p - origin[n_]).pow(2)) / 2
                    for n_, p in model.named_parameters()
                )
                loss = loss + reg * lam
            loss.backward()
            opt.step()
            model.eval()  # the stop check
    return model


def _assert_same_state(ours: nn.Module, ref: nn.Module, rtol: float = 1e-6) -> None:
    theirs = ref.state_dict()
    for name, value in ours.state_dict().items():
        torch.testing.assert_close(value, theirs[name], rtol=rtol, atol=1e-9, msg=name)


# ---------------------------------------------------------------------------------------------


def test_neggrad_matches_naive_train_passes(monkeypatch):
    ours, ctx = _run_harness("neggrad", monkeypatch)
    assert ctx.steps == EPOCHS * 2
    _assert_same_state(ours, _reference_negative_gradient())


def test_adv_only_makes_two_batchnorm_passes_per_step(monkeypatch):
    ours, ctx = _run_harness("adv_only", monkeypatch)
    assert ctx.steps == EPOCHS * 3
    ref = _reference_adv(importance=False)
    _assert_same_state(ours, ref)
    # the running statistics were updated twice per step
    assert int(ours[2].num_batches_tracked) == 2 * EPOCHS * 3


def test_union_batch_is_a_different_method(monkeypatch):
    """The named deviation (one concatenated pass) really differs on a BatchNorm network."""
    ours, _ = _run_harness("adv_only", monkeypatch, union_batch=True)
    ref = _reference_adv(importance=False)
    assert int(ours[2].num_batches_tracked) == EPOCHS * 3
    assert not torch.allclose(ours[2].running_mean, ref[2].running_mean, rtol=1e-3)


def test_adv_mas_matches_reference_with_accumulated_importance(monkeypatch):
    ours, ctx = _run_harness("adv_mas", monkeypatch)
    assert ctx.steps == EPOCHS * 3
    _assert_same_state(ours, _reference_adv(importance=True))


def test_mas_importance_accumulates_like_the_reference():
    model = _net()
    x_f, y_f, _, _ = _data()
    ref = _reference_importance(model, x_f, FORGET_BATCH)
    ours = normalize_importance(mas_importance(model, (x_f, y_f), FORGET_BATCH))
    for name, w in ref.items():
        torch.testing.assert_close(1 - ours[name], w, rtol=1e-6, atol=1e-6, msg=name)
    per_batch = normalize_importance(
        mas_importance(model, (x_f, y_f), FORGET_BATCH, accumulate=False)
    )
    assert any(not torch.allclose(per_batch[n], ours[n], atol=1e-4) for n in ours)


@pytest.mark.parametrize("method", ["adv_only", "adv_mas"])
def test_default_is_the_reference_form(method):
    hp = make_hparams(method)
    assert hp.union_batch is False
    if method == "adv_mas":
        assert hp.mas_accumulate is True
