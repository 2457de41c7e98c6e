"""Amnesiac unlearning (random-relabel form): train on D_r plus D_f with random wrong labels."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from bench.core import runtime
from bench.core.reference import Reference
from bench.unlearning.loops import other_labels
from bench.unlearning.method import register_method


@dataclass(frozen=True)
class AmnesiacHP:
    """Settings of the nabla-tau notebooks' Amnesiac baseline (spec section 3.4): 3 epochs,
    Adam lr 1e-4, batch 128, train mode."""

    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 128


def wrong_labels(y: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """One label per example, uniform over the classes other than its own (drawn on the CPU
    with ``generator``; never equal to ``y``)."""
    return other_labels(y.cpu(), num_classes, generator)


@register_method(
    "amnesiac",
    hparams=AmnesiacHP,
    needs=("forget", "retain"),
    citation=(
        "Graves, Nagisetty, Ganesh, 'Amnesiac Machine Learning', AAAI 2021 (random-relabel "
        "form of the nabla-tau notebooks, Trippa et al., and of SSD, Foster et al.)"
    ),
    reference=(
        "https://github.com/dnl-trpp/Nabla-Tau (Unlearning_main_Cifar10.ipynb: amnesiac); "
        "Graves et al. published no code"
    ),
    references=(
        Reference(
            "dnl-trpp/Nabla-Tau",
            "1012093",
            "Unlearning_main_Cifar10.ipynb: amnesiac, fit_one_unlearning_cycle",
            role="the relabelling form (also SSD/src/forget_random_strategies.py: amnesiac)",
            conformance="tests/conformance/test_amnesiac.py",
        ),
    ),
    deviations=(
        "the wrong labels and the batch order come from the run's generator (reference: "
        "random.choice with rejection and an unseeded DataLoader; the same distributions)",
        "Graves et al.'s full method (undoing the logged updates of batches that held D_f) is "
        "not implemented; no public code has it",
    ),
    quick_hp={"epochs": 3, "lr": 0.01, "batch_size": 32},
)
def amnesiac(model, data, hp: AmnesiacHP, ctx):
    """Amnesiac unlearning (Graves et al., AAAI 2021) as run by the nabla-tau notebooks (spec
    section 3.4). Needs D_f and D_r. Reference: dnl-trpp/Nabla-Tau @ 1012093
    (``Unlearning_main_Cifar10.ipynb``: ``amnesiac``, the same function as SSD's
    ``forget_random_strategies.py``); conformance test ``tests/conformance/test_amnesiac.py``
    (parameters and BatchNorm statistics equal in float64).

    Every forget example gets one random wrong label (:func:`wrong_labels`, drawn once per call
    with ``ctx.generator`` before any shuffle); D_f with those labels followed by D_r is one
    training set, and the model trains ``epochs`` epochs of CE on it (shuffled every epoch with
    ``ctx.generator``, train mode, Adam). Reports ``relabel_changed`` (fraction of D_f whose
    new label differs from its own: 1 by construction).

    Deviations: the labels and the order come from the run's generator (reference:
    ``random.choice`` and an unseeded DataLoader; the same distributions). Graves et al.'s full
    method also undoes the stored updates of batches that contained D_f (needs training-time
    logging; the authors published no code); the notebooks, SSD and this implementation use
    only the relabelling variant."""
    forget, retain = data.forget, data.retain
    if forget.split is not retain.split:
        raise ValueError("amnesiac: D_f and D_r must be views of the same split")
    y_f = forget.targets
    new_f = wrong_labels(y_f, data.num_classes, ctx.generator)
    ctx.report("relabel_changed", float((new_f != y_f.cpu()).float().mean()))
    idx = torch.cat([forget.indices, retain.indices])
    labels = torch.cat([new_f, retain.targets.cpu()])
    opt = torch.optim.Adam(model.parameters(), lr=hp.lr)
    model.train()
    for _ in range(hp.epochs):
        perm = torch.randperm(idx.numel(), generator=ctx.generator)
        view = dataclasses.replace(forget, indices=idx[perm], name="forget_relabelled+retain")
        ys = labels[perm]
        for b, (x, _) in enumerate(view.loader(hp.batch_size)):
            y = runtime.to_device(ys[b * hp.batch_size : b * hp.batch_size + x.shape[0]], x.device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ctx.step()
    return model
