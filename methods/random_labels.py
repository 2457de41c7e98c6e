"""Random labels: fine-tune the forget set towards random wrong labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from bench.tuning.study import IntRange, LogUniform
from bench.unlearning.l2ul import forget_batches, objective_check, relabel_targets, report_success
from bench.unlearning.loops import cycle, other_labels, run_until_forgotten, sgd
from bench.unlearning.method import register_method


@dataclass(frozen=True)
class RandomLabelsHP:
    """Same optimizer and stop rule as NegGrad (spec section 5). ``use_retain`` adds one D_r
    batch of ``retain_batch`` to every step: the literature's "RL" variant (Golatkar et al.
    2020; Fan et al., SalUn, ICLR 2024). ``objective``: ``misclassify`` (labels re-drawn every
    epoch, stop at D_f accuracy 0) or ``relabel`` (one fixed y* per instance, stop when all of
    D_f is predicted as y*)."""

    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    forget_batch: int = 32
    max_epochs: int = 1000
    use_retain: bool = False
    retain_batch: int = 128
    objective: str = "misclassify"


def _needs(hp: RandomLabelsHP) -> tuple[str, ...]:
    return ("forget", "retain") if hp.use_retain else ("forget",)


#: the search space of ``python -m bench.tune`` (trial 0 is always the defaults)
SEARCH = {"lr": LogUniform(1e-5, 1e-1), "max_epochs": IntRange(1, 1000, log=True)}


@register_method(
    "random_labels",
    hparams=RandomLabelsHP,
    search=SEARCH,
    needs=_needs,
    citation="Golatkar et al. CVPR 2020; Fan et al. ICLR 2024 (RL)",
    no_reference=(
        "L2UL's random-label baseline (spec section 5) is not in csm9493/L2UL; the literature's "
        "RL with D_r, as Unlearn-Saliency runs it, is the `rl` method"
    ),
    deviations=(
        (
            "the stop rule (D_f accuracy exactly 0 after a pass) and the optimizer are NegGrad's "
            "(spec section 5)"
        ),
        (
            "objective=relabel (+CE towards a fixed y* != y, stop when all of D_f is predicted as "
            "y*) is a project option (spec section 5), not in the reference"
        ),
    ),
)
def random_labels(model, data, hp: RandomLabelsHP, ctx):
    """Minimise CE(g(x_f), y') where y' is drawn uniformly from the classes other than y_f,
    re-drawn every epoch; with ``use_retain``, plus CE on a cycled D_r batch. Stops when D_f
    accuracy is 0 (checked after every pass). Reference: github.com/OPTML-Group/Unlearn-Saliency
    (``unlearn/RL.py``).

    Relabel objective (project decision, spec section 5): y' = a fixed y* drawn once per call
    with ``ctx.generator`` (before any other draw); stop when every forget instance is predicted
    as its y*. Reports ``forget_success`` (% of D_f meeting the objective)."""
    y_star = relabel_targets(data.forget, hp, ctx, data.num_classes)
    opt = sgd(model, hp)
    check = objective_check(data.forget, y_star)
    retain = None
    if hp.use_retain:
        retain = cycle(
            lambda: data.retain.loader(hp.retain_batch, shuffle=True, generator=ctx.generator)
        )

    def epoch(_e):
        model.train()
        for x, y, t in forget_batches(data.forget, hp.forget_batch, y_star):
            y_rand = t if t is not None else other_labels(y, data.num_classes, ctx.generator)
            if retain is not None:
                xr, yr = next(retain)
                x, y_rand = torch.cat([x, xr]), torch.cat([y_rand, yr])
            loss = F.cross_entropy(model(x), y_rand)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            yield

    run_until_forgotten(model, ctx, check, hp.max_epochs, epoch, check_every_step=False)
    report_success(ctx, check, model)
    return model
