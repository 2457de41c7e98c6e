"""Conformance of ``scrub`` with the authors' code: github.com/meghdadk/SCRUB at HEAD 98ffb11
(``thirdparty/repdistiller/helper/loops.py``: ``train_distill``; ``helper/util.py``:
``adjust_learning_rate``; ``distiller_zoo/KD.py``: ``DistillKL``; ``large_scale_unlearning.ipynb``
cells 32-36: the settings and the epoch loop) and at 1ec2963 (the same loop plus the SGDA
smoothing term ``param_dist(model_s, swa_model, opt.smoothing)`` and the ``AveragedModel``
with ``avg_fn`` beta = 0.1 updated from epoch ``sstart`` = 10; ``small_scale_unlearning.ipynb``:
``args.optim = 'adam'``).

Restated below in plain torch (written for this test, not copied):

* per epoch ``e = 1..sgda_epochs``: lr = base * rate ** (number of decay epochs < e) (set
  only when that number is > 0); ``if e <= msteps``: ``train_distill(forget_loader,
  "maximize")``; then ``train_distill(retain_loader, "minimize")``; (1ec2963) ``if e >=
  sstart: swa_model.update_parameters(model_s)``;
* ``train_distill``: student ``train()``, teacher ``eval()``; per batch ``logit_s =
  model_s(x)``, ``logit_t = model_t(x)`` under ``no_grad``; ``loss_div = kl_div(log_softmax
  (s/T), softmax(t/T), sum) * T**2 / B``; minimize: ``gamma * CE + alpha * loss_div + beta *
  0``; maximize: ``-loss_div``; (1ec2963) ``+ smoothing * sum ||theta - theta_swa||_fro``;
  ``zero_grad``, ``backward``, ``step``;
* the optimizer: ``SGD(lr, momentum, weight_decay)``, ``Adam(lr, weight_decay)`` or
  ``RMSprop(lr, momentum, weight_decay)`` by ``args.optim``.

The batch orders are the one thing taken from the harness: the same draws of a generator
seeded as the run's, per epoch D_f's permutation (in a max epoch) then D_r's (the reference's
DataLoaders draw theirs from the global RNG). A tiny CNN with BatchNorm computing in float64;
parameters and running statistics must agree to 1e-9 relative.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bench.core.spec import Recipe
from bench.unlearning.method import METHODS, Context, make_hparams
from methods.scrub import NABLA_TAU_HP, SMALL_SCALE_HP
from tests.conformance.toys import ToDouble, assert_same_state, toy_data

C = 4
N_F, N_R = 10, 30
SEED = 5


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        ToDouble(),
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, C),
    ).double()
    with torch.no_grad():
        net[2].running_mean.uniform_(-0.2, 0.2)
        net[2].running_var.uniform_(0.5, 1.5)
    return net.eval()


def _data():
    return toy_data(N_F, N_R, C, "scrub")


def _harness(hp: dict):
    data, _, _ = _data()
    ctx = Context(torch.device("cpu"), SEED, torch.Generator().manual_seed(SEED), Recipe(), C)
    out = METHODS.get("scrub")(_net(), data, make_hparams("scrub", hp), ctx)
    return out, ctx


# ---------------------------------------------------------------------------------------------
# the reference, restated


def distill_kl(y_s, y_t, T):
    p_s = F.log_softmax(y_s / T, dim=1)
    p_t = F.softmax(y_t / T, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * (T**2) / y_s.shape[0]


def param_dist(model, swa_params, p):
    dist = 0.0
    for p1, p2 in zip(model.parameters(), swa_params):
        dist += torch.norm(p1 - p2, p="fro")
    return p * dist


def reference_scrub(hp: dict):
    """The SCRUB epoch loop with ``hp`` (the harness's names for the reference's ``args``)."""
    _, x, y = _data()
    model_t = _net()
    model_s = copy.deepcopy(model_t)
    swa = [p.detach().clone() for p in model_s.parameters()]  # AveragedModel(model_s)
    n_averaged = 0
    params = model_s.parameters()
    if hp["optimizer"] == "sgd":
        opt = torch.optim.SGD(
            params, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"]
        )
    elif hp["optimizer"] == "adam":
        opt = torch.optim.Adam(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    else:
        opt = torch.optim.RMSprop(
            params, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"]
        )
    decay = [int(e) for e in hp["lr_decay_epochs"].split(",")]
    g = torch.Generator().manual_seed(SEED)
    T, steps = hp["temperature"], 0

    def train_distill(rows, batch, split):
        nonlocal steps
        model_s.train()
        model_t.eval()
        for b in rows[torch.randperm(len(rows), generator=g)].split(batch):
            logit_s = model_s(x[b])
            with torch.no_grad():
                logit_t = model_t(x[b])
            loss_cls = F.cross_entropy(logit_s, y[b])
            loss_div = distill_kl(logit_s, logit_t, T)
            if split == "minimize":
                loss = hp["gamma"] * loss_cls + hp["alpha"] * loss_div + 0 * 0
            else:
                loss = -loss_div
            if hp["smoothing"]:  # 1ec2963 (0 at HEAD, where the term is gone)
                loss = loss + param_dist(model_s, swa, hp["smoothing"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1

    for epoch in range(1, hp["epochs"] + 1):
        n_decays = sum(epoch > d for d in decay)
        if n_decays > 0:
            for group in opt.param_groups:
                group["lr"] = hp["lr"] * hp["lr_decay_rate"] ** n_decays
        if epoch <= hp["max_epochs"]:
            train_distill(torch.arange(N_F), hp["forget_batch"], "maximize")
        train_distill(torch.arange(N_F, N_F + N_R), hp["retain_batch"], "minimize")
        if hp["smoothing"] and epoch >= 10:  # sstart
            with torch.no_grad():
                for a, p in zip(swa, model_s.parameters()):
                    a.copy_(p if n_averaged == 0 else (1 - 0.1) * a + 0.1 * p)
            n_averaged += 1
    return model_s, steps


def _full(overrides: dict) -> dict:
    import dataclasses

    return dataclasses.asdict(make_hparams("scrub", overrides))


# small batches (4 + 4 + 2 forget, 8 x 3 + 6 retain) and a larger lr than the papers' so that
# the steps move the weights visibly; decay epochs inside the run
SMALL = {"forget_batch": 4, "retain_batch": 8, "lr_decay_epochs": "2,3"}
CASES = {
    # the registered defaults: the authors' large-scale setting (HEAD loop, smoothing 0)
    "large_scale": {**SMALL, "lr": 0.05, "epochs": 4},
    # their small-scale setting: Adam, T = 2, msteps 3, with the smoothing term (1ec2963)
    "small_scale_adam": {**SMALL_SCALE_HP, **SMALL, "lr": 0.01, "epochs": 4},
    # the nabla-tau copy: SGD, smoothing 0.5; 12 epochs, past sstart = 10 (the SGDA average)
    "nabla_tau_sgda": {
        **NABLA_TAU_HP,
        **SMALL,
        **{"forget_batch": 4, "retain_batch": 15, "lr": 0.05, "epochs": 12, "max_epochs": 3},
    },
    "rmsprop": {**SMALL, "optimizer": "rmsprop", "lr": 1e-3, "epochs": 3},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_scrub_equals_the_reference_loop(case):
    hp = _full(CASES[case])
    ours, ctx = _harness(hp)
    ref, steps = reference_scrub(hp)
    assert ctx.steps == steps
    assert_same_state(ours, ref)
    moved = _net().state_dict()
    assert float((ours.state_dict()["5.weight"] - moved["5.weight"]).abs().max()) > 1e-4
    assert float((ours.state_dict()["2.running_var"] - moved["2.running_var"]).abs().max()) > 0


def test_defaults_are_the_authors_large_scale_settings():
    hp = make_hparams("scrub")
    assert (hp.optimizer, hp.lr, hp.momentum, hp.weight_decay) == ("sgd", 5e-4, 0.9, 5e-4)
    assert (hp.epochs, hp.max_epochs, hp.lr_decay_epochs, hp.lr_decay_rate) == (3, 2, "3,5,9", 0.1)
    assert (hp.temperature, hp.gamma, hp.alpha, hp.smoothing) == (4.0, 0.99, 0.001, 0.0)
    assert (hp.forget_batch, hp.retain_batch) == (512, 256)


def test_smoothing_term_changes_the_loop():
    """The SGDA term is not a no-op: with it the loop differs from HEAD's (smoothing 0)."""
    base = {**SMALL, "lr": 0.05, "epochs": 3}
    with_term, _ = _harness(_full({**base, "smoothing": 0.5}))
    head, _ = reference_scrub(_full(base))
    diff = max(
        float((a - b).abs().max()) for a, b in zip(with_term.state_dict().values(),
                                                   head.state_dict().values())
    )  # fmt: skip
    assert diff > 1e-4
