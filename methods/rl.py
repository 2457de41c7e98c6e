"""RL: fine-tuning on the forget set under random labels together with the retained set, as
SalUn's Table 1 runs it (compare ``random_labels``, L2UL's D_f-only variant with a stop rule)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from bench.core import runtime
from bench.core.errors import BenchError
from bench.core.reference import Reference
from bench.data import View
from bench.unlearning.loops import SalUnTableSGD, sgd
from bench.unlearning.method import hparam, register_method

#: the reference's ``unlearn/RL.py`` as it was when the table was made (first commit, Oct
#: 2023, unchanged for CIFAR-10 until f31f82e, Apr 2024): D_f relabelled, concatenated with
#: D_r, one shuffled loader
REFERENCE_2023 = (
    "https://github.com/OPTML-Group/Unlearn-Saliency/blob/"
    "95766237d2c29c391c9bb0f0dbdb67d31e995f4c/Classification/unlearn/RL.py"
)
#: the reference today: its CIFAR-10 branch runs a D_f pass, then a D_r pass (``sequential``)
REFERENCE = (
    "https://github.com/OPTML-Group/Unlearn-Saliency/blob/"
    "a6e89fd17ff737c24c6aa16c9574469a234ffd91/Classification/unlearn/RL.py"
)
RETAIN_MODES = ("union", "sequential")
#: Unlearn-Saliency's commits: the first (Oct 2023, the code of SalUn's Table 1) and today's
SALUN_REPO = "OPTML-Group/Unlearn-Saliency"
TABLE_COMMIT = "95766237d2c29c391c9bb0f0dbdb67d31e995f4c"
HEAD_COMMIT = "a6e89fd17ff737c24c6aa16c9574469a234ffd91"
CONFORMANCE = "tests/conformance/test_unlearn_saliency.py"
#: the deviations ``rl`` and ``salun`` share (their loop is one function, random_label_epoch)
LOOP_DEVIATIONS = (
    "labels, shuffles and crop/flip draws come from ctx.generator, not numpy's and torch's "
    "global RNGs (same distributions; the conformance test feeds both the same draws)",
    "the reference's MultiStepLR (x0.1 at epochs 91 and 136) never fires within 10 epochs "
    "and is not implemented, nor its warm-up (off by default)",
    "RL.py @ 9576623 relabels D_f only for cifar10 and svhn (other datasets train on D_f "
    "under its true labels); the harness relabels on every dataset",
)


@dataclass(frozen=True)
class RLHP(SalUnTableSGD):
    """The table's RL: 10 epochs, momentum 0.9, weight decay 5e-4, batch 256 (Unlearn-
    Saliency's ``arg_parser.py`` defaults; its READMEs give no command for the RL baseline,
    only for SalUn = RL with a mask: 10 epochs at lr 0.1 in the first README, 0.013 today).
    ``lr`` 0.01 is ``--unlearn_lr``'s default: the table's value is unknown. ``augment``:
    ``recipe`` = the pretraining augmentation (the reference's loaders carry the training
    transform). ``retain_mode``: ``union`` (default: the code that made the table) or
    ``sequential`` (the reference's CIFAR-10 branch since Apr 2024); see :func:`rl`."""

    retain_mode: str = hparam("union", choices=RETAIN_MODES)


def _union(forget: View, retain: View, order: Tensor) -> View:
    """The rows of D_f followed by those of D_r, taken in ``order``."""
    if forget.split is not retain.split:
        raise BenchError("rl: D_f and D_r must be views of one train split")
    rows = torch.cat([forget.indices, retain.indices])
    return View(forget.split, rows.index_select(0, order), forget.device, "forget+retain")


@register_method(
    "rl",
    hparams=RLHP,
    needs=("forget", "retain"),
    citation=(
        "Golatkar et al., CVPR 2020 (random labels); as run by Fan et al., ICLR 2024 (SalUn, "
        "Table 1: RL)"
    ),
    reference=REFERENCE_2023,
    references=(
        Reference(
            SALUN_REPO,
            TABLE_COMMIT,
            "Classification/unlearn/RL.py: RL; unlearn/impl.py: iterative_unlearn",
            role="table-time loop (SalUn Table 1): retain_mode='union', the default",
            conformance=f"{CONFORMANCE}::test_rl_equals_the_reference",
        ),
        Reference(
            SALUN_REPO,
            HEAD_COMMIT,
            "Classification/unlearn/RL.py: RL, cifar10 branch (since f31f82e)",
            role="HEAD loop: retain_mode='sequential'",
            conformance=f"{CONFORMANCE}::test_rl_equals_the_reference",
        ),
    ),
    deviations=LOOP_DEVIATIONS,
    quick_hp={"epochs": 3, "lr": 0.03, "batch_size": 16},
)
def rl(model, data, hp: RLHP, ctx):
    """Random-label fine-tuning with D_r (the reference's ``RL``, driven by
    ``unlearn/impl.py``'s ``iterative_unlearn``). Data: D_f and D_r. Exactly ``epochs``
    epochs, no stop rule; every step is one SGD step (lr, momentum, weight decay) on the mean
    CE of a batch, model in train mode, batches augmented as ``augment`` says.

    ``retain_mode="union"`` (the code that made Table 1: ``RL.py`` from its first commit,
    9576623, Oct 2023, until f31f82e, Apr 2024, for CIFAR-10; still its CIFAR-100 branch):
    each epoch draws a new label for every D_f example, uniformly from *all* classes (so it
    may be the true one: the reference's ``np.random.randint(0, num_classes)`` on its copy of
    D_f), then makes one pass over D_f and D_r together, shuffled as one set, in batches of
    ``batch_size`` (its ``ConcatDataset`` loader): a batch mixes relabelled D_f examples with
    D_r examples under their true labels, and an epoch is ceil((|D_f| + |D_r|) / batch)
    steps.

    ``retain_mode="sequential"`` (the reference's CIFAR-10 branch since f31f82e; SalUn's loop
    with every weight salient): each epoch a shuffled pass over D_f, each batch with labels
    drawn uniformly from all classes, then a shuffled pass over D_r with its labels.

    ``random_labels`` is L2UL's variant: D_f only (optionally one D_r batch per step), wrong
    labels only, unshuffled batches of 32, stop at D_f accuracy 0.

    Follows Unlearn-Saliency @ 9576623 (``union``) and @ a6e89fd (``sequential``, the same
    loop since f31f82e), restated step by step in
    ``tests/conformance/test_unlearn_saliency.py`` (parameters and BatchNorm statistics equal
    with crop + flip on). Deviations (``deviations=`` of the registration): (i) the random
    labels, shuffles and crops come from ``ctx.generator``, not numpy's and torch's global
    RNGs (same distributions); (ii) the reference's MultiStepLR (x0.1 at epochs 91 and 136)
    never fires within 10 epochs and is not implemented, nor its warm-up (off by default;
    with it on, the reference's line would fail on an undefined ``i``); (iii) ``RL.py`` @
    9576623 relabels D_f only on cifar10 and svhn; the harness relabels on every dataset."""
    opt = sgd(model, hp)

    def step(x: Tensor, y: Tensor) -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx.step()

    for _ in range(hp.epochs):
        model.train()
        random_label_epoch(data, hp, ctx, step)
    return model


def random_label_epoch(data, hp, ctx, step: Callable[[Tensor, Tensor], None]) -> None:
    """One epoch of the reference's random-label loop, shared by ``rl`` and ``salun``:
    ``step(x, y)`` is called once per batch (``hp.batch_size``, ``hp.augment``), in the order
    ``hp.retain_mode`` says (see :func:`rl`). Generator draws, in order: ``union``: the D_f
    labels (one per example), the permutation of D_f + D_r, then per batch the crop/flip
    draws; ``sequential``: the D_f permutation, per D_f batch its crop/flip draws then its
    labels, then the D_r permutation and per batch its crop/flip draws."""
    augment = ctx.augmentation(hp.augment)
    kw = {"generator": ctx.generator, "augment": augment, "crop_padding": ctx.recipe.crop_padding}
    c = data.num_classes
    n_f = len(data.forget)
    if hp.retain_mode == "union":
        y_rand = torch.randint(0, c, (n_f,), generator=ctx.generator)
        order = torch.randperm(n_f + len(data.retain), generator=ctx.generator)
        labels = torch.cat([y_rand, data.retain.targets.cpu()]).index_select(0, order)
        s = 0
        for x, _ in _union(data.forget, data.retain, order).loader(hp.batch_size, **kw):
            step(x, runtime.to_device(labels[s : s + x.shape[0]], x.device))
            s += x.shape[0]
    else:
        for x, y in data.forget.loader(hp.batch_size, shuffle=True, **kw):
            y_rand = torch.randint(0, c, y.shape, generator=ctx.generator)
            step(x, runtime.to_device(y_rand, y.device))
        for x, y in data.retain.loader(hp.batch_size, shuffle=True, **kw):
            step(x, y)
