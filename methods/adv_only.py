"""ADV: NegGrad plus training on targeted adversarial examples of D_f (L2UL "Case 2")."""

from __future__ import annotations

from dataclasses import dataclass

from bench.l2ul import AdvFields, L2ULFields, unlearn
from bench.method import register_method


@dataclass(frozen=True)
class AdvOnlyHP(L2ULFields, AdvFields):
    """L2UL CIFAR-10 defaults (spec sections 1.2, 1.3, 1.5): SGD lr 1e-3, momentum 0.9, weight
    decay 1e-4; forget batch 32, adversarial batch 256; N_adv = 20 targeted L2-PGD examples per
    forget instance (eps 4.0, step 0.1, 100 iterations, random start); at most 1000 epochs;
    targets drawn from all classes other than y (``target_label_range='all'``; ``first10``
    reproduces the published runs' quirk). ``objective``: ``misclassify`` or ``relabel``."""


@register_method(
    "adv_only",
    hparams=AdvOnlyHP,
    needs=("forget",),
    citation="Cha et al., AAAI 2024 (L2UL), case 2 (adversarial examples only)",
)
def adv_only(model, data, hp: AdvOnlyHP, ctx):
    """Minimise L = -(n_f/(n_f+n_a)) CE(g(x_f), y_f) + (n_a/(n_f+n_a)) CE(g(x_a), y_a) using only
    the pretrained model and D_f (Cha et al., "Learning to Unlearn: Instance-wise Unlearning for
    Pre-trained Classifiers", AAAI 2024; reference code github.com/csm9493/L2UL, case 2).

    Algorithm: D_adv (k * n_adv images labelled with their attack *targets*) is generated once
    per call from D_f with :func:`bench.attacks.make_adversarial_set` (model in eval mode). One
    epoch zips the unshuffled adversarial batches (``adv_batch``) with cycled, unshuffled
    forget batches (``forget_batch``); the model is in train mode for each update and the stop
    rule (D_f accuracy exactly 0, eval mode) is checked after every step; at most
    ``max_epochs`` epochs (``cap_hit`` otherwise).

    Deviations / project decisions: (1) forget and adversarial images go through the network
    as one concatenated batch (BatchNorm sees their joint statistics); (2) adversarial targets
    never equal y (``target_label_range='all'``, see ``random_targets``); (3) the forget cycle
    restarts at D_f's first batch every epoch; (4) the relabel objective (spec section 5):
    +CE(g(x_f), y*) with y* drawn once per call, adversarial targets exclude y*, stop when
    every forget instance is predicted as y* (``relabel`` + ``first10`` is an error)."""
    return unlearn(model, data, hp, ctx, adversarial=True, importance=False)
