"""NegGrad: gradient ascent on the forget set (L2UL's naive baseline, "Case 1")."""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.reference import Reference
from bench.tuning.study import IntRange, LogUniform
from bench.unlearning.l2ul import L2ULFields, unlearn
from bench.unlearning.method import register_method


@dataclass(frozen=True)
class NegGradHP(L2ULFields):
    """L2UL defaults (spec section 1.2/1.5): SGD lr 1e-3, momentum 0.9, weight decay 1e-4,
    forget batch 32, passes over D_f until its accuracy is 0, at most ``max_epochs`` passes
    (1000 for CIFAR-10 in the official code). ``objective='relabel'`` (spec section 5) trains
    +CE towards a fixed y* != y instead and stops when all of D_f is predicted as y*."""


#: the search space of ``python -m bench.tune`` (trial 0 is always the defaults): the learning
#: rate and the epoch cap (the stop rule ends a run once D_f is forgotten)
SEARCH = {"lr": LogUniform(1e-5, 1e-1), "max_epochs": IntRange(1, 1000, log=True)}


@register_method(
    "neggrad",
    hparams=NegGradHP,
    search=SEARCH,
    needs=("forget",),
    citation="Cha et al., AAAI 2024 (L2UL), baseline case 1",
    references=(
        Reference(
            "csm9493/L2UL",
            "5fb777b",
            "main_unlearn_cifar10_mixed_label_resnet18.py: case 1; utils.py@b8b335b: naive_train",
            conformance="tests/conformance/test_l2ul_csm9493.py",
        ),
    ),
    deviations=(
        (
            "the cap is max_epochs passes/epochs; the reference's `if max_iter < j` runs max_iter "
            "+ 1 (set max_epochs=1001 to match)"
        ),
        (
            "objective=relabel (+CE towards a fixed y* != y, stop when all of D_f is predicted as "
            "y*) is a project option (spec section 5), not in the reference"
        ),
    ),
)
def neggrad(model, data, hp: NegGradHP, ctx):
    """Minimise L = -CE(g(x_f), y_f) over full, unshuffled passes of D_f in train mode; after
    each pass the D_f accuracy is measured in eval mode and the run stops at exactly 0 %.
    Reference: csm9493/L2UL @ 5fb777b (``main_unlearn_cifar10_mixed_label_resnet18.py``, case
    1, with ``utils.naive_train`` of b8b335b); conformance test
    ``tests/conformance/test_l2ul_csm9493.py``.

    Deviations: (1) the cap is ``max_epochs`` passes; the reference's ``if max_iter < j`` runs
    max_iter + 1 = 1001 (set ``max_epochs=1001`` to match); (2) relabel objective (project
    decision, spec section 5; not in the official code): y*_i drawn uniformly from the classes
    other than y_i with ``ctx.generator`` once per call; loss +CE(g(x_f), y*); stop when every
    forget instance is predicted as its y*. Reports ``forget_success`` (% of D_f meeting the
    objective)."""
    return unlearn(model, data, hp, ctx, adversarial=False, importance=False)
