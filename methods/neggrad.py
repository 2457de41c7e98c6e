"""NegGrad: gradient ascent on the forget set (L2UL's naive baseline, "Case 1")."""

from __future__ import annotations

from dataclasses import dataclass

from torch.nn import functional as F

from bench.method import register_method
from bench.unlearning import ForgetCheck, run_until_forgotten, sgd


@dataclass(frozen=True)
class NegGradHP:
    """L2UL defaults (spec section 1.2/1.5): SGD lr 1e-3, momentum 0.9, weight decay 1e-4,
    forget batch 32, passes over D_f until its accuracy is 0, at most ``max_epochs`` passes
    (1000 for CIFAR-10 in the official code)."""

    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    forget_batch: int = 32
    max_epochs: int = 1000


@register_method(
    "neggrad",
    hparams=NegGradHP,
    needs=("forget",),
    citation="Cha et al., AAAI 2024 (L2UL), baseline case 1",
)
def neggrad(model, data, hp: NegGradHP, ctx):
    """Minimise L = -CE(g(x_f), y_f) over full, unshuffled passes of D_f in train mode; after
    each pass the D_f accuracy is measured in eval mode and the run stops at exactly 0 %.
    Reference implementation: github.com/csm9493/L2UL (``main_unlearn_*``, case 1)."""
    opt = sgd(model, hp)
    check = ForgetCheck(data.forget)

    def epoch(_e):
        model.train()
        for x, y in data.forget.loader(hp.forget_batch):
            loss = -F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            yield

    run_until_forgotten(model, ctx, check, hp.max_epochs, epoch, check_every_step=False)
    return model
