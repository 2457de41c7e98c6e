"""Fisher forgetting (Golatkar et al., CVPR 2020): Fisher-shaped Gaussian noise on the weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from bench import runtime
from bench.method import hparam, register_method
from methods.cf_k import last_k_modules


@dataclass(frozen=True)
class FisherHP:
    """Defaults of the reference notebook (SelectiveForgetting): ``alpha`` 1e-6 (the function
    default there is 3e-6, the call uses 1e-6), variance clamp 1e3 (1e2 for the head), x10 on
    the head and on 1-d parameters, eps 1e-8. ``chunk`` = samples per vectorised per-sample
    gradient call (memory only; the result does not depend on it)."""

    alpha: float = hparam(1e-6, ge=0)
    max_var: float = hparam(1e3, gt=0)
    max_var_head: float = hparam(1e2, gt=0)
    boost: float = hparam(10.0, gt=0)
    eps: float = hparam(1e-8, gt=0)
    chunk: int = 64


@runtime.full_precision
def fisher_diag(
    model: nn.Module, view, num_classes: int, chunk: int = 64
) -> dict[str, torch.Tensor]:
    """Diagonal of the (true) Fisher information on ``view``, model in eval mode:
    F = mean_x sum_y p(y|x) (d/dtheta log p(y|x))^2, by parameter name. Per-sample gradients
    via ``torch.func.vmap``; the labels of ``view`` are not used (expectation under the
    model's own predictive distribution, as in the reference ``hessian``)."""
    was = model.training
    model.eval()
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}

    def logp(ps, x, y):
        out = functional_call(model, (ps, buffers), (x.unsqueeze(0),))
        return -F.cross_entropy(out, y.unsqueeze(0))

    per_sample = vmap(grad(logp), in_dims=(None, 0, 0))
    n = 0
    for x, _ in view.loader(chunk):
        with torch.no_grad():
            prob = F.softmax(model(x), dim=-1)
        for y in range(num_classes):
            ys = torch.full((x.shape[0],), y, dtype=torch.long, device=x.device)
            g = per_sample(params, x, ys)
            w = prob[:, y]
            for name, gi in g.items():
                fisher[name] += torch.einsum("b,b...->...", w, gi.pow(2))
        n += x.shape[0]
    model.train(was)
    return {name: f / max(n, 1) for name, f in fisher.items()}


def noise_std(model: nn.Module, fisher: dict[str, torch.Tensor], hp: FisherHP, forget_classes=()):
    """Per-parameter noise std (and mean override for forgotten classes) of the reference's
    ``get_mean_var``: var = alpha * clamp(1/(F+eps), max_var) (``max_var_head`` for the head);
    for weights (ndim > 1) var is averaged over dim 1 (one variance per output unit); x``boost``
    on the head and on 1-d parameters (biases, BatchNorm). Rows of the head for classes in
    ``forget_classes`` get mean 0 and variance 1e-4 (class forgetting). Returns
    ``{name: (std, zero_rows)}``."""
    head = last_k_modules(model, 1)[0]
    head_ids = {id(p) for p in head.parameters(recurse=False)}
    out = {}
    for name, p in model.named_parameters():
        is_head = id(p) in head_ids
        var = (1.0 / (fisher[name] + hp.eps)).clamp(max=hp.max_var_head if is_head else hp.max_var)
        var = hp.alpha * var
        if p.ndim > 1:
            var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
        rows = list(forget_classes) if is_head else []
        if rows:
            var[rows] = 1e-4
        if is_head or p.ndim == 1:
            var = var * hp.boost
        out[name] = (var.sqrt(), rows)
    return out


@register_method(
    "fisher",
    hparams=FisherHP,
    needs=("forget", "retain"),
    citation=(
        "Golatkar, Achille, Soatto, 'Eternal Sunshine of the Spotless Net: Selective "
        "Forgetting in Deep Networks', CVPR 2020 (Fisher forgetting)"
    ),
    reference="https://github.com/AdityaGolatkar/SelectiveForgetting (Forgetting.ipynb)",
    quick_hp={},
    retain_only=True,  # moves towards the retrained model using D_r's Fisher only
    one_shot=True,  # no optimizer steps
)
def fisher(model, data, hp: FisherHP, ctx):
    """theta <- theta + std * n, n ~ N(0, I) drawn from ``ctx.generator``, with std from the
    diagonal Fisher of D_r (:func:`fisher_diag`, :func:`noise_std`). This is the reference
    code's variant: std = sqrt(alpha / F) (clamped, row-averaged), i.e. alpha^(1/2) F^(-1/2),
    not the paper's (lambda sigma_h^2)^(1/4) F^(-1/4) of eq. (8). Data: retain (Fisher, and
    the class set), forget (its classes).

    Class forgetting (detected as: a class of D_f absent from D_r) also sets the head's rows
    of those classes to 0 with variance 1e-4, as the reference does for class forgetting;
    for instance forgetting only the noise is applied. No optimizer steps (``ctx.step`` is
    not called). Deviations: the "head" is the last parameterised layer (the reference tests
    ``p.size(0) == num_classes``, which also catches any layer of that width); the noise is
    drawn on the CPU and moved to the device."""
    fish = fisher_diag(model, data.retain, data.num_classes, hp.chunk)
    retain_classes = set(torch.unique(data.retain.targets).tolist())
    forget_classes = sorted(set(torch.unique(data.forget.targets).tolist()) - retain_classes)
    stds = noise_std(model, fish, hp, forget_classes)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std, rows = stds[name]
            n = torch.randn(p.shape, generator=ctx.generator, dtype=p.dtype).to(p.device)
            if rows:
                p[rows] = 0.0
            p.add_(std * n)
    ctx.report(
        "fisher_noise_mean_std", float(torch.cat([s.flatten() for s, _ in stds.values()]).mean())
    )
    model.eval()
    return model
