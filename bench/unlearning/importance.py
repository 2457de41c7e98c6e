"""MAS weight importance and the L2UL importance penalty (spec section 1.4).

Memory Aware Synapses (Aljundi et al., "Memory Aware Synapses: Learning what (not) to forget",
ECCV 2018) scores each parameter by the magnitude of the gradient of the L2 norm of the network
output. L2UL (Cha et al., "Learning to Unlearn: Instance-wise Unlearning for Pre-trained
Classifiers", AAAI 2024; official code github.com/csm9493/L2UL) computes it on the forget set
D_f only, min-max normalizes it per parameter tensor, and regularizes towards the pretrained
weights with weight (1 - importance): parameters that matter for D_f are free to move, the
others are held near theta0.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from bench.core import runtime
from bench.data.splits import View

__all__ = ["mas_importance", "normalize_importance", "MASPenalty"]


def _batches(
    data: View | tuple[Tensor, Tensor], batch_size: int, device: torch.device
) -> Iterable[Tensor]:
    if isinstance(data, View):
        for x, _ in data.loader(batch_size):
            yield x.to(device)
        return
    x = data[0]
    for s in range(0, x.shape[0], batch_size):
        yield x[s : s + batch_size].to(device)


@runtime.full_precision
def mas_importance(
    model: nn.Module,
    forget: View | tuple[Tensor, Tensor],
    batch_size: int = 32,
    accumulate: bool = True,
) -> dict[str, Tensor]:
    """Unnormalized MAS importance on D_f, as in the L2UL code (spec section 1.4).

    On a deep copy of ``model`` put in **train mode** (BatchNorm normalizes with the statistics
    of each D_f batch; the running buffers of ``model`` itself are not touched), for each batch
    B_j of ``batch_size`` examples (no shuffling): objective = mean over B_j of the non-squared
    L2 norm of the logit vector, ||g(x)||_2 (Aljundi et al., ECCV 2018); backpropagate; add
    |G_j| * |B_j| to the importance, where

    * ``accumulate=True`` (default, the reference code): G_j = g_1 + ... + g_j, the gradients
      of batches 1..j summed. csm9493/L2UL @ 5fb777b (``utils.estimate_parameter_importance``,
      unchanged since b8b335b) runs on a deep copy of the model but calls ``zero_grad()`` on
      the *original* model's optimizer, so the copy's ``.grad`` is never cleared and grows
      across batches; the published runs used this form. It equals the per-batch form when D_f
      fits in one batch (k <= ``batch_size``).
    * ``accumulate=False``: G_j = g_j, MAS as its paper describes it.

    The sum is divided by the number of examples (L2UL divides by batches x batch size; either
    constant cancels in :func:`normalize_importance`).

    Args:
        model: the pretrained classifier; unchanged (parameters, gradients, buffers, mode).
        forget: D_f as a ``View`` (read with ``.loader(batch_size)``) or a tuple ``(x, y)``.
        batch_size: 32 in L2UL for CIFAR, 16 for ImageNet.
        accumulate: the reference's gradient accumulation across batches (see above).

    Returns:
        ``{name: importance}`` for every named parameter of ``model`` (zeros where a
        parameter receives no gradient), detached, on the parameter's device.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net = copy.deepcopy(model)
    net.train()
    params = dict(net.named_parameters())
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    omega = {
        n: torch.zeros_like(p, memory_format=torch.preserve_format).detach()
        for n, p in params.items()
    }
    running: dict[str, Tensor] = {}  # G_j, the gradients summed over batches (accumulate)
    device = next(iter(params.values())).device if params else torch.device("cpu")
    count = 0
    with torch.enable_grad():
        for x in _batches(forget, batch_size, device):
            b = x.shape[0]
            if b == 0:
                continue
            objective = net(x).flatten(1).norm(p=2, dim=1).mean()
            grads = torch.autograd.grad(objective, list(params.values()), allow_unused=True)
            for (name, _), g in zip(params.items(), grads):
                if g is None:
                    g = running.get(name)  # the reference's .grad keeps its earlier sum
                    if g is None:
                        continue
                elif accumulate:
                    g = running[name] = g if name not in running else running[name].add_(g)
                omega[name].add_(g.abs(), alpha=b)
            count += b
    if count == 0:
        raise ValueError("mas_importance got an empty forget set")
    return {n: o.div_(count) for n, o in omega.items()}


def normalize_importance(omega: Mapping[str, Tensor], eps: float = 1e-12) -> dict[str, Tensor]:
    """Per-tensor min-max normalization to [0, 1] (L2UL, spec section 1.4):
    (omega - min) / (max - min).

    Guard (a documented deviation): a tensor whose range max - min is below ``eps`` (constant
    importance, e.g. a parameter that received no gradient) maps to all zeros, i.e. penalty
    weight 1; the original code divides by zero there and produces NaN.
    """
    out = {}
    for name, t in omega.items():
        t = t.detach()
        if t.numel() == 0:
            out[name] = t.clone()
            continue
        lo, hi = t.min(), t.max()
        span = hi - lo
        scaled = (t - lo) / span.clamp_min(eps)
        out[name] = torch.where(span < eps, torch.zeros_like(t), scaled)
    return out


class MASPenalty:
    """The L2UL importance regularizer (Cha et al., AAAI 2024, spec section 1.4):

        lam * sum_tensors sum_i (1 - omega_hat_i) * (theta_i - theta0_i)^2 / 2

    ``theta0`` = detached copies of ``model``'s parameters at construction (the pretrained
    weights); ``omega_hat`` = normalized importance (:func:`normalize_importance`), one tensor
    per named parameter. Parameters only: BatchNorm running statistics are buffers and are not
    regularized. Calling the penalty on the model returns a differentiable 0-d tensor;
    :meth:`add_grad` adds its gradient, lam * (1 - omega_hat) * (theta - theta0), to the
    parameters' ``.grad`` directly with two fused operations (``torch._foreach_sub``,
    ``torch._foreach_addcmul_``). The L2UL loop uses the latter: the same update as
    back-propagating the penalty (up to rounding in the last bits) with a few kernels instead
    of about nine per parameter tensor, which on a GPU is launch overhead comparable to the
    network's own step.
    """

    def __init__(self, model: nn.Module, omega_hat: Mapping[str, Tensor], lam: float = 1.0):
        self.lam = float(lam)
        self.theta0: dict[str, Tensor] = {}
        self.weight: dict[str, Tensor] = {}
        missing = []
        for name, p in model.named_parameters():
            if name not in omega_hat:
                missing.append(name)
                continue
            w = omega_hat[name].detach()
            if w.shape != p.shape:
                raise ValueError(
                    f"importance for {name!r} has shape {tuple(w.shape)}, "
                    f"parameter has {tuple(p.shape)}"
                )
            self.theta0[name] = p.detach().clone()
            self.weight[name] = (1.0 - w).to(device=p.device, dtype=p.dtype)
        if missing:
            raise ValueError(
                f"no importance for parameters: {', '.join(missing[:5])}"
                + (" ..." if len(missing) > 5 else "")
            )

    def add_grad(self, model: nn.Module) -> None:
        """``p.grad += lam * (1 - omega_hat) * (p - theta0)`` for every regularized parameter
        (a parameter without a gradient gets the penalty's alone), after ``backward()`` of
        the rest of the loss and before the optimizer step."""
        names, params = [], []
        for name, p in model.named_parameters():
            if name not in self.theta0:
                raise KeyError(f"parameter {name!r} was not in the model the penalty was built on")
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            names.append(name)
            params.append(p)
        if not params:
            return
        diffs = torch._foreach_sub([p.detach() for p in params], [self.theta0[n] for n in names])
        torch._foreach_addcmul_(
            [p.grad for p in params], [self.weight[n] for n in names], diffs, value=self.lam
        )

    def __call__(self, model: nn.Module) -> Tensor:
        total = None
        for name, p in model.named_parameters():
            if name not in self.theta0:
                raise KeyError(f"parameter {name!r} was not in the model the penalty was built on")
            term = (self.weight[name] * (p - self.theta0[name]).pow(2)).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return total * (self.lam / 2.0)
