"""Conformance of ``l1_sparse`` with the l1-sparse unlearning of the reference code:
github.com/OPTML-Group/Unlearn-Sparse @ 80ba55d (``unlearn/FT.py``: ``FT_iter`` with
``with_l1=True``, reached by ``--unlearn FT_prune`` through ``unlearn/FT_prune.py`` and
``FT_l1``; ``unlearn/impl.py``: ``iterative_unlearn``; the file is unchanged since 16a2dbc,
Oct 2023), and the same loop in github.com/OPTML-Group/Unlearn-Saliency @ 9576623
(``Classification/unlearn/FT.py``, the code of SalUn's Table 1, which differs in the schedule
only where ``no_l1_epochs == unlearn_epochs``).

Restated below in plain torch (written for this test, not copied): one SGD optimizer (lr,
momentum, weight decay) for all epochs; each epoch, in train mode, the shuffled retain loader
with the training transform (``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip``,
``dataset.py``); per batch: ``current_alpha = alpha * (1 - epoch / (E - no_l1))`` while
``epoch < E - no_l1``, else ``alpha`` if ``E - no_l1 == 0`` (Unlearn-Sparse; 0 at
Unlearn-Saliency @ 9576623), else 0; loss = mean CE + ``current_alpha *
torch.linalg.norm(cat(p.view(-1) for p in model.parameters()), ord=1)``; ``zero_grad``,
backward, ``step``.

The random draws are taken from the harness: the same generator, in the harness's order (the
reference draws from torch's global RNG). The network is a tiny CNN with BatchNorm computing
in float64; parameters and BatchNorm running statistics must agree to 1e-9 relative.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bench.core.spec import Recipe
from bench.unlearning.method import METHODS, Context, make_hparams
from methods.l1_sparse import l1_weight
from tests.conformance.toys import ToDouble, assert_same_state, toy_data

C = 5
N_F, N_R = 6, 22
BATCH, EPOCHS, NO_L1, LR, MOMENTUM, WD, GAMMA = 8, 3, 1, 0.05, 0.9, 5e-4, 0.01
PAD = 2
SEED = 5
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
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
        net[2].running_mean.uniform_(-0.2, 0.2)
        net[2].running_var.uniform_(0.5, 1.5)
    return net.eval()


def _data():
    return toy_data(N_F, N_R, C, "l1_sparse")


def _harness(gamma: float = GAMMA):
    data, _, _ = _data()
    hp = make_hparams(
        "l1_sparse",
        {"epochs": EPOCHS, "no_l1_epochs": NO_L1, "gamma": gamma, "lr": LR, "momentum": MOMENTUM,
         "weight_decay": WD, "batch_size": BATCH, "augment": "recipe"},
    )  # fmt: skip
    ctx = Context(torch.device("cpu"), SEED, torch.Generator().manual_seed(SEED), RECIPE, C)
    return METHODS.get("l1_sparse")(_trained(), data, hp, ctx), ctx


# ---------------------------------------------------------------------------------------------
# the reference, restated


def reference_alpha(epoch: int, epochs: int, no_l1: int, alpha: float, sparse: bool = True):
    """``current_alpha``: Unlearn-Sparse @ 80ba55d (``sparse``) or Unlearn-Saliency @
    9576623 (no ``elif`` for ``epochs - no_l1 == 0``)."""
    if epoch < epochs - no_l1:
        return alpha * (1 - epoch / (epochs - no_l1))
    if sparse and epochs - no_l1 == 0:
        return alpha
    return 0


def _train_transform(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomCrop(padding=PAD) + RandomHorizontalFlip per image, with the harness's draws: an
    offset pair per image, then a flip coin per image."""
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


def l1_regularization(model: nn.Module) -> torch.Tensor:
    return torch.linalg.norm(torch.cat([p.view(-1) for p in model.parameters()]), ord=1)


def reference_ft_l1(alpha: float = GAMMA):
    _, x, y = _data()
    g = torch.Generator().manual_seed(SEED)
    model = _trained()
    optimizer = torch.optim.SGD(model.parameters(), LR, momentum=MOMENTUM, weight_decay=WD)
    steps = 0
    for epoch in range(EPOCHS):
        model.train()
        order = torch.arange(N_F, N_F + N_R)[torch.randperm(N_R, generator=g)]
        for rows in order.split(BATCH):
            image = _train_transform(x[rows], g)
            current_alpha = reference_alpha(epoch, EPOCHS, NO_L1, alpha)
            output = model(image)
            loss = F.cross_entropy(output, y[rows])
            loss += current_alpha * l1_regularization(model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    return model, steps


# ---------------------------------------------------------------------------------------------


def test_l1_sparse_equals_the_reference_loop():
    ours, ctx = _harness()
    ref, steps = reference_ft_l1()
    assert ctx.steps == steps == EPOCHS * -(-N_R // BATCH)
    assert_same_state(ours, ref)
    start = _trained().state_dict()
    assert float((ours.state_dict()["2.running_mean"] - start["2.running_mean"]).abs().max()) > 0
    # the penalty acts: without it the weights end elsewhere
    plain, _ = reference_ft_l1(alpha=0.0)
    a, b = ours.state_dict()["5.weight"], plain.state_dict()["5.weight"]
    assert float((a - b).abs().max() / b.abs().max()) > 1e-3


def test_augmentation_is_the_training_transform():
    """With the recipe's crop + flip off, the harness is no longer the reference."""
    data, _, _ = _data()
    hp = make_hparams(
        "l1_sparse",
        {"epochs": EPOCHS, "no_l1_epochs": NO_L1, "gamma": GAMMA, "lr": LR, "weight_decay": WD,
         "batch_size": BATCH, "augment": "none"},
    )  # fmt: skip
    ctx = Context(torch.device("cpu"), SEED, torch.Generator().manual_seed(SEED), RECIPE, C)
    plain = METHODS.get("l1_sparse")(_trained(), data, hp, ctx)
    ref, _ = reference_ft_l1()
    a, b = plain.state_dict()["5.weight"], ref.state_dict()["5.weight"]
    assert float((a - b).abs().max() / b.abs().max()) > 1e-3


@pytest.mark.parametrize("epochs", [1, 3, 10])
@pytest.mark.parametrize("no_l1", [0, 1, 3, 12])
def test_l1_schedule_is_the_references(epochs, no_l1):
    hp = make_hparams("l1_sparse", {"epochs": epochs, "no_l1_epochs": no_l1, "gamma": 0.2})
    ours = [l1_weight(e, hp) for e in range(epochs)]
    assert ours == [reference_alpha(e, epochs, no_l1, 0.2) for e in range(epochs)]
    saliency = [reference_alpha(e, epochs, no_l1, 0.2, sparse=False) for e in range(epochs)]
    if epochs != no_l1:  # the one case where the two references differ
        assert ours == saliency
