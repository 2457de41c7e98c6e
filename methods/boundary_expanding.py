"""Boundary Expanding (Chen et al., CVPR 2023): push D_f into an extra "shadow" class, then
remove that class's output."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bench.core import runtime
from bench.core.errors import BenchError
from bench.core.reference import Reference
from bench.unlearning.loops import SalUnTableSGD
from bench.unlearning.method import register_method
from methods.boundary_shrink import CHEN_2023, fit_forget_to

#: the reference this file restates (SalUn's Table 1 was produced with it)
REFERENCE = (
    "https://github.com/OPTML-Group/Unlearn-Saliency/blob/"
    "a6e89fd17ff737c24c6aa16c9574469a234ffd91/Classification/unlearn/boundary_ex.py"
)


@dataclass(frozen=True)
class BoundaryExpandingHP(SalUnTableSGD):
    """Defaults of the reference (Unlearn-Saliency ``arg_parser.py``; its README gives no BE
    command, so ``main_forget.py --unlearn boundary_expanding`` runs with these): 10 epochs
    over D_f, SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256. ``augment``: the
    reference's D_f loader carries the training transform (random crop + flip on CIFAR), i.e.
    ``recipe`` = the pretraining augmentation. The paper and its authors' code
    (TY-LEE-KR/Boundary-Unlearning-Code) use lr 1e-5, momentum 0.9, no weight decay, 10
    epochs: pass those to reproduce the paper rather than SalUn's table."""


def classifier_head(model: nn.Module, num_classes: int) -> tuple[nn.Module, str, nn.Linear]:
    """``(parent, attribute, linear)`` of the model's classifier head: its last ``nn.Linear``
    in ``named_modules()`` order (the reference's rule), which must have ``num_classes``
    outputs. :class:`BenchError` when the model has no ``nn.Linear`` or the last one is not
    ``num_classes`` wide (an architecture whose head is a convolution, or that registers
    another linear layer after its head)."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = name, module
    if found is None:
        raise BenchError(
            f"boundary_expanding widens the classifier's final nn.Linear, and "
            f"{type(model).__name__} has no nn.Linear; use an architecture with a linear head"
        )
    name, linear = found
    if linear.out_features != num_classes:
        raise BenchError(
            f"boundary_expanding: the last nn.Linear of {type(model).__name__} ({name!r}) has "
            f"{linear.out_features} outputs, not the {num_classes} classes: it needs the "
            f"classifier head to be the model's last nn.Linear"
        )
    parent_name, _, attr = name.rpartition(".")
    return model.get_submodule(parent_name), attr, linear


def _linear_like(old: nn.Linear, out_features: int) -> nn.Linear:
    return nn.Linear(
        old.in_features,
        out_features,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )


@torch.no_grad()
def widen_head(model: nn.Module, num_classes: int, generator: torch.Generator) -> nn.Linear:
    """Replace the head (:func:`classifier_head`) by a ``num_classes + 1``-output linear layer
    whose first ``num_classes`` rows (weights and bias) are copies of the old head's and whose
    last row, the shadow class, is drawn as ``nn.Linear`` initialises it: weight and bias
    uniform in +-1/sqrt(in_features) (``generator``, on the CPU). Returns the new layer."""
    parent, attr, old = classifier_head(model, num_classes)
    new = _linear_like(old, num_classes + 1)
    bound = 1.0 / math.sqrt(old.in_features) if old.in_features else 0.0

    def draw(n: int) -> torch.Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float32) * 2 - 1
        return (u * bound).to(device=old.weight.device, dtype=old.weight.dtype)

    new.weight[:num_classes] = old.weight
    new.weight[num_classes] = draw(old.in_features)
    if old.bias is not None:
        new.bias[:num_classes] = old.bias
        new.bias[num_classes] = draw(1)[0]
    setattr(parent, attr, new)
    return new


@torch.no_grad()
def prune_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """Replace the widened head (``num_classes + 1`` outputs) by a ``num_classes``-output
    linear layer holding its first ``num_classes`` rows: the shadow class's output is
    dropped, every other row kept as trained. Returns the new layer."""
    parent, attr, wide = classifier_head(model, num_classes + 1)
    new = _linear_like(wide, num_classes)
    new.weight.copy_(wide.weight[:num_classes])
    if wide.bias is not None:
        new.bias.copy_(wide.bias[:num_classes])
    setattr(parent, attr, new)
    return new


@torch.no_grad()
def _outputs(model: nn.Module, x: torch.Tensor) -> int | None:
    """Number of outputs of ``model`` on ``x`` (eval mode: no BN statistics move), or
    ``None`` when the forward pass fails on a shape mismatch."""
    was = model.training
    model.eval()
    try:
        return int(model(x).shape[-1])
    except RuntimeError:
        return None
    finally:
        model.train(was)


@torch.no_grad()
def shadow_fraction(model: nn.Module, forget, shadow: int) -> float:
    """% of D_f whose arg-max over all outputs is the ``shadow`` class (eval mode, fp32): what
    the reference, which never drops the shadow output, scores as forgotten."""
    was = model.training
    model.eval()
    hits = n = 0
    with runtime.fp32():
        for x, _ in forget.loader(1024):
            hits += int((model(x).argmax(1) == shadow).sum())
            n += x.shape[0]
    model.train(was)
    return 100.0 * hits / max(n, 1)


@register_method(
    "boundary_expanding",
    hparams=BoundaryExpandingHP,
    needs=("forget",),
    citation=f"{CHEN_2023} (Boundary Expanding)",
    reference=REFERENCE,
    references=(
        Reference(
            "OPTML-Group/Unlearn-Saliency",
            "a6e89fd17ff737c24c6aa16c9574469a234ffd91",
            "Classification/unlearn/boundary_ex.py: expand_model, boundary_expanding_iter "
            "(+ unlearn/impl.py, main_forget.py loaders, arg_parser.py defaults)",
            role="SalUn Table 1 (BE); the same loop as at 9576623",
            conformance="tests/conformance/test_boundary_unlearning.py"
            "::test_boundary_expanding_equals_the_reference_loop",
        ),
        Reference(
            "TY-LEE-KR/Boundary-Unlearning-Code",
            "86c2f1f",
            "boundary_unlearning.py: boundary_expanding",
            role="the paper's code: prunes the shadow output as the harness does; its lr "
            "1e-5, no weight decay, no augmentation are hyperparameter values",
        ),
    ),
    deviations=(
        "the shadow output is dropped after training (as in the paper's code): the reference "
        "scores the (C+1)-output model, so a D_f example predicted as the shadow class counts "
        "as forgotten there but is predicted as its best remaining class here "
        "(forget_shadow_fraction reports the share)",
        "the shadow row's initialisation, the shuffles and the crops/flips come from the run's "
        "generator (reference: the global RNG; same distributions)",
        "the reference's MultiStepLR (x0.1 at epochs 91 and 136) never fires within its 10 "
        "epochs and is not implemented",
        "a model whose last nn.Linear is not its C-wide output layer is refused; the "
        "reference widens whichever nn.Linear is last",
    ),
    quick_hp={},  # the defaults take 10 steps (0.2 s) and forget the toy D_f
)
def boundary_expanding(model, data, hp: BoundaryExpandingHP, ctx):
    """Boundary Expanding (Chen et al., CVPR 2023), as SalUn's Table 1 ran it: the reference
    github.com/OPTML-Group/Unlearn-Saliency @ a6e89fd (``Classification/unlearn/
    boundary_ex.py``, with ``unlearn/impl.py``'s optimizer and loop). Data: D_f only.

    1. Widen the head (:func:`widen_head`): the model's last ``nn.Linear`` gets one more
       output, the shadow class C, its other rows copied (``expand_model``).
    2. ``epochs`` passes over D_f, reshuffled every pass (the reference's forget loader has
       ``shuffle=True``) with the training augmentation, every example labelled C; CE, SGD
       (lr, momentum, weight decay) over all parameters, the new head's included; model in
       train mode, so BN statistics move (``boundary_expanding_iter``; the loop is
       ``methods.boundary_shrink.fit_forget_to``, shared with Boundary Shrink).
    3. Drop the shadow output (:func:`prune_head`): the head is C-wide again, holding the
       trained rows of the other classes. Reports ``forget_shadow_fraction`` (% of D_f
       predicted as the shadow class just before, the reference's notion of forgotten).

    Steps 1-2 are restated step by step in ``tests/conformance/test_boundary_unlearning.py``
    (parameters and BatchNorm statistics equal to 1e-9 in float64, with crop + flip).

    Deviations: (i) the reference never prunes: it scores the (C+1)-output model, so a D_f
    example predicted as the shadow class counts as misclassified and the MIA sees softmaxes
    over C+1 classes; here, as in the authors' own code (TY-LEE-KR/Boundary-Unlearning-Code
    @ 86c2f1f, ``boundary_unlearning.py``, which returns the pruned model), the shadow
    output is removed, because every harness metric scores C-class models: such an example
    is predicted as its best remaining class, which may be its true class, so D_f accuracy
    can be higher than the reference would report (``forget_shadow_fraction`` gives the
    difference). (ii) The shadow row, the shuffles and the crops/flips are drawn from
    ``ctx.generator``, not the global RNG (same distributions). (iii) The reference's
    MultiStepLR (x0.1 at epochs 91 and 136) never fires within its 10 epochs and is not
    implemented. (iv) A model whose last ``nn.Linear`` is not its C-wide output layer is
    refused (:class:`BenchError`); the reference would widen whichever is last."""
    c = data.num_classes
    widen_head(model, c, ctx.generator)
    x0, _ = next(iter(data.forget.loader(1)))
    if _outputs(model, x0) != c + 1:
        raise BenchError(
            f"boundary_expanding: widening the last nn.Linear of {type(model).__name__} did "
            f"not widen the model's output, so it is not the classifier head"
        )
    opt = torch.optim.SGD(
        model.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
    )
    augment = ctx.augmentation(hp.augment)
    fit_forget_to(
        model,
        data.forget,
        opt,
        ctx,
        lambda x, y: torch.full_like(y, c),
        epochs=hp.epochs,
        batch_size=hp.batch_size,
        shuffle=True,
        augment=augment,
        crop_padding=ctx.recipe.crop_padding,
    )
    ctx.report("forget_shadow_fraction", shadow_fraction(model, data.forget, c))
    prune_head(model, c)
    model.eval()
    return model
