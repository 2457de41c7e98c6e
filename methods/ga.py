"""GA: gradient ascent on the forget set for a fixed number of epochs, as SalUn's Table 1 and
the Unlearn-Sparse protocol run it (no stop rule; compare ``neggrad``, L2UL's variant)."""

from __future__ import annotations

from dataclasses import dataclass

from torch.nn import functional as F

from bench.core.reference import Reference
from bench.unlearning.loops import SalUnTableSGD, sgd
from bench.unlearning.method import register_method

#: the reference this file restates (the ``unlearn/GA.py`` of Unlearn-Sparse @ 80ba55d is the
#: same loop); the table's runs used the file as first committed (9576623, Oct 2023): the same
#: loop without the mask restore of PR #33, which only acts when a saliency mask is given
REFERENCE = (
    "https://github.com/OPTML-Group/Unlearn-Saliency/blob/"
    "a6e89fd17ff737c24c6aa16c9574469a234ffd91/Classification/unlearn/GA.py"
)


@dataclass(frozen=True)
class GAHP(SalUnTableSGD):
    """The table's GA: 5 epochs at lr 1e-4 (the GA command of Unlearn-Saliency's README as
    first committed, 9576623: ``--unlearn GA --unlearn_lr 0.0001 --unlearn_epochs 5``);
    momentum 0.9, weight decay 5e-4, batch 256 (its ``arg_parser.py`` defaults).
    ``augment``: ``recipe`` = the pretraining augmentation, as the reference's forget loader
    carries the training transform (random crop + flip on CIFAR)."""

    epochs: int = 5
    lr: float = 1e-4


@register_method(
    "ga",
    hparams=GAHP,
    needs=("forget",),
    citation=(
        "Thudi et al., EuroS&P 2022 (gradient ascent); as run by Jia et al., NeurIPS 2023 "
        "(Unlearn-Sparse) and Fan et al., ICLR 2024 (SalUn, Table 1: GA)"
    ),
    reference=REFERENCE,
    references=(
        Reference(
            "OPTML-Group/Unlearn-Sparse",
            "80ba55d36d0871465c2d3e3896db26a98070e065",
            "unlearn/GA.py: GA (+ unlearn/impl.py, main_forget.py loaders, arg_parser.py)",
            role="Unlearn-Sparse's GA (unchanged since 16a2dbc, Oct 2023)",
            conformance="tests/conformance/test_unlearn_sparse_baselines.py::test_ga_equals_the_reference_loop",
        ),
        Reference(
            "OPTML-Group/Unlearn-Saliency",
            "a6e89fd17ff737c24c6aa16c9574469a234ffd91",
            "Classification/unlearn/GA.py: GA",
            role="SalUn Table 1 (GA): the same loop when no saliency mask is given (also at "
            "9576623, the table-time commit)",
            conformance="tests/conformance/test_unlearn_sparse_baselines.py::test_ga_equals_the_reference_loop",
        ),
    ),
    deviations=(
        "the shuffles and crops/flips come from the run's generator (reference: the global "
        "RNG and an unseeded DataLoader; same distributions)",
        "the reference's MultiStepLR (x0.1 at epochs 91 and 136) never fires within its 5 "
        "epochs and is not implemented, nor its warm-up (off by default)",
    ),
    quick_hp={"epochs": 10, "lr": 0.05, "batch_size": 8},
)
def ga(model, data, hp: GAHP, ctx):
    """Gradient ascent on D_f (the reference's ``GA``, driven by ``unlearn/impl.py``'s
    ``iterative_unlearn``). Data: D_f only.

    ``epochs`` passes over D_f, reshuffled every pass with ``ctx.generator`` (the reference's
    forget loader has ``shuffle=True``), augmented as ``augment`` says; for every batch one
    SGD step (lr, momentum, weight decay) on L = -CE(f(x_f), y_f) (mean over the batch) with
    the model in train mode, so BatchNorm statistics move. Exactly ``epochs`` x
    ceil(|D_f| / batch_size) steps: there is no stop rule, D_f accuracy may reach 0 and the
    ascent goes on (``neggrad`` is L2UL's variant: unshuffled batches of 32, no augmentation,
    stop at D_f accuracy 0). Restated step by step in
    ``tests/conformance/test_unlearn_sparse_baselines.py`` (Unlearn-Sparse @ 80ba55d; the
    parameters and BatchNorm statistics equal to 1e-9 in float64, with crop + flip).

    Deviations: (i) the reference's MultiStepLR (x0.1 at epochs 91 and 136) never fires within
    its 5 epochs and is not implemented, nor its warm-up (off by default); (ii) the shuffles
    and crops come from ``ctx.generator`` instead of the global RNG (same distributions)."""
    opt = sgd(model, hp)
    augment = ctx.augmentation(hp.augment)
    for _ in range(hp.epochs):
        model.train()
        for x, y in data.forget.loader(
            hp.batch_size,
            shuffle=True,
            generator=ctx.generator,
            augment=augment,
            crop_padding=ctx.recipe.crop_padding,
        ):
            loss = -F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ctx.step()
    return model
