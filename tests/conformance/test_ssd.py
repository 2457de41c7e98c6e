"""Conformance of ``ssd`` with the Selective Synaptic Dampening reference code:
github.com/if-loops/selective-synaptic-dampening @ cdfdc0e (``src/ssd.py``:
``ParameterPerturber.calc_importance`` and ``modify_weight``; ``src/forget_full_class_
strategies.py``: ``ssd_tuning``, ``get_classwise_ds``, ``build_retain_forget_sets``;
``src/forget_full_class_main.py`` and ``src/forget_random_main.py``: the loaders).

Restated below in plain torch (written for this test, not copied):

* class forgetting: ``get_classwise_ds`` walks the training set in index order into one
  bucket per class; ``build_retain_forget_sets`` makes D_r = the buckets of the other classes
  in ascending class order, D_f = the forget class's bucket; ``forget_train_dl =
  DataLoader(forget_train, b)``, ``full_train_dl = DataLoader(ConcatDataset((retain_train,
  forget_train)), b)``, both unshuffled, ``b`` = the script's ``-b`` default 64;
* random forgetting: ``random_split`` gives D_f and D_r each in a random order; the forget
  loader has batch 128 and the full loader ``-b`` = 128 (the script's default);
* ``ssd_tuning``: ``model.eval()``; I_f = ``calc_importance(forget_train_dl)``, I_D =
  ``calc_importance(full_train_dl)``: per batch ``opt.zero_grad()``, ``CrossEntropyLoss`` of
  the batch, backward, ``imp += grad ** 2``; then ``imp /= len(loader)`` (batches);
* ``modify_weight``: where ``I_f > I_D * alpha``: ``w = (I_D * lambda / I_f) ** 1``, values
  above ``lower_bound`` = 1 set to 1, ``p *= w``.

The random orders are the one thing taken from the harness: the same draws of a generator seeded
as the run's (D_f's order first, then D_r's). A tiny CNN with BatchNorm computing in float64;
parameters and running statistics must agree to 1e-9 relative.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.core.spec import Recipe
from bench.data import TensorSplit, View
from bench.unlearning.method import METHODS, Context, UnlearnData, Withheld, make_hparams
from tests.conformance.toys import ToDouble

C = 5
SEED = 4


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


def _split(n: int):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 8, 8, generator=g)
    y = torch.randint(0, C, (n,), generator=g)  # classes interleaved in index order
    return TensorSplit(x, y), x, y


def _data(split, forget_rows: torch.Tensor, n: int) -> UnlearnData:
    keep = torch.ones(n, dtype=torch.bool)
    keep[forget_rows] = False
    forget = View(split, forget_rows.sort().values, name="forget")
    retain = View(split, keep.nonzero().flatten(), name="retain")
    return UnlearnData(forget, retain, Withheld("val", "ssd"), C)


def _harness(data, **hp):
    ctx = Context(torch.device("cpu"), SEED, torch.Generator().manual_seed(SEED), Recipe(), C)
    model = METHODS.get("ssd")(_net(), data, make_hparams("ssd", hp), ctx)
    return model, ctx


# ---------------------------------------------------------------------------------------------
# the reference, restated


def calc_importance(model, batches):
    params = dict(model.named_parameters())
    imp = {k: torch.zeros_like(p) for k, p in params.items()}
    criterion = nn.CrossEntropyLoss()
    n = 0
    for x, y in batches:
        model.zero_grad(set_to_none=True)  # opt.zero_grad() of an SGD over the parameters
        criterion(model(x), y).backward()
        for k, p in params.items():
            if p.grad is not None:
                imp[k] += p.grad.clone().pow(2)
        n += 1
    return {k: v / float(n) for k, v in imp.items()}  # len(dataloader)


@torch.no_grad()
def modify_weight(model, original_importance, forget_importance, alpha, lam):
    selected = 0
    for (_name, p), oimp, fimp in zip(
        model.named_parameters(), original_importance.values(), forget_importance.values()
    ):
        locations = torch.where(fimp > oimp.mul(alpha))
        weight = (oimp.mul(lam).div(fimp)).pow(1)
        update = weight[locations]
        update[torch.where(update > 1)] = 1
        p[locations] = p[locations].mul(update)
        selected += len(locations[0])
    return selected


def _batches(x, y, rows, b):
    return [(x[rows[s : s + b]], y[rows[s : s + b]]) for s in range(0, len(rows), b)]


def reference_ssd(x, y, forget_rows, retain_rows, b, alpha=10.0, lam=1.0):
    model = _net().eval()
    sample_importances = calc_importance(model, _batches(x, y, forget_rows, b))
    full = torch.cat([retain_rows, forget_rows])  # ConcatDataset((retain, forget))
    original_importances = calc_importance(model, _batches(x, y, full, b))
    n = modify_weight(model, original_importances, sample_importances, alpha, lam)
    return model, n


def classwise_sets(y, forget_class):
    buckets = {c: [] for c in range(C)}
    for i, label in enumerate(y.tolist()):  # get_classwise_ds: index order
        buckets[label].append(i)
    retain = [i for c in range(C) if c != forget_class for i in buckets[c]]
    forget = [i for c in range(C) if c == forget_class for i in buckets[c]]
    return torch.tensor(forget), torch.tensor(retain)


def _assert_same_state(ours: nn.Module, ref: nn.Module, rtol: float = 1e-9) -> None:
    theirs = ref.state_dict()
    for name, value in ours.state_dict().items():
        scale = theirs[name].abs().max().clamp_min(1e-12)
        assert float((value - theirs[name]).abs().max() / scale) <= rtol, name


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [10.0, 2.0])
def test_class_forgetting_matches_the_reference(alpha):
    n = 150  # D_r ~ 120 rows: full-set batches of 64 straddle D_r and D_f
    split, x, y = _split(n)
    forget_class = 2
    f_rows, r_rows = classwise_sets(y, forget_class)
    assert len(r_rows) % 64 and not torch.equal(r_rows, r_rows.sort().values)  # class order
    ref, n_ref = reference_ssd(x, y, f_rows, r_rows, 64, alpha=alpha)
    ours, ctx = _harness(_data(split, (y == forget_class).nonzero().flatten(), n), alpha=alpha)
    assert ctx.extra["whole_classes"] == 1.0 and ctx.extra["batch_size"] == 64
    assert ctx.extra["selected"] == n_ref > 0
    _assert_same_state(ours, ref)


def test_random_forgetting_matches_the_reference():
    n = 200  # D_r 160 rows: one full-set batch of 128, then 32 D_r rows + the 40 of D_f
    split, x, y = _split(n)
    forget = torch.randperm(n, generator=torch.Generator().manual_seed(7))[:40].sort().values
    data = _data(split, forget, n)
    g = torch.Generator().manual_seed(SEED)  # random_split's orders: D_f's, then D_r's
    f_rows = data.forget.indices[torch.randperm(40, generator=g)]
    r_rows = data.retain.indices[torch.randperm(160, generator=g)]
    ref, n_ref = reference_ssd(x, y, f_rows, r_rows, 128, alpha=2.0)
    ours, ctx = _harness(data, alpha=2.0)
    assert ctx.extra["whole_classes"] == 0.0 and ctx.extra["batch_size"] == 128
    assert ctx.extra["selected"] == n_ref > 0
    _assert_same_state(ours, ref)


def test_separate_passes_are_not_the_reference():
    """The harness's former layout (D_r and D_f as two passes, index order) selects other
    weights: a batch that straddles D_r and D_f is not two batches."""
    n = 150
    split, x, y = _split(n)
    f_rows, r_rows = classwise_sets(y, 2)
    ref, n_ref = reference_ssd(x, y, f_rows, r_rows, 64, alpha=2.0)
    data = _data(split, (y == 2).nonzero().flatten(), n)
    old, ctx = _harness(data, alpha=2.0, order="separate", batch_size=64)
    assert ctx.extra["selected"] != n_ref
    with torch.no_grad():
        diff = max(float((a - b).abs().max()) for a, b in zip(old.parameters(), ref.parameters()))
    assert diff > 1e-6
