"""How this process computes (not what): mixed precision, memory layout and ``torch.compile``.

Set once per process from the run environment (``--precision``, ``--pretrain-precision``,
``--compile``; ``bench.protocol.stages.Env``) and recorded in every run's metadata, since bf16
changes
the numbers (slightly) but not the spec. Defaults: bf16 autocast and channels_last on CUDA,
plain fp32 on the CPU, no compilation.

``--precision`` is the precision of the method and the evaluation, the things compared. The
shared models (the pretrained original every method starts from, and the oracle models some
metrics compare with) are trained in ``--pretrain-precision``, fp32 unless asked otherwise: the
reference codes train them in fp32, and one original for every precision means that fp32 and
bf16 results compare methods on the same model (issue #14: under bf16 pretraining the original
itself ended 1-3 % away in weight norm, and that, not the method, moved the most fragile smoke
run by 3.3 points). bf16 shared models (``--pretrain-precision bf16``/``auto``: faster on CUDA)
are cached under keys of their own. :func:`shared` opens that precision around their training.

* ``autocast(device)``: ``torch.autocast`` with bf16 when enabled, else a no-op. The protocol
  wraps every method call in it and ``bench.models.train`` its forward passes; parameters, optimizer
  state and gradients stay fp32 (bf16 needs no loss scaling). Its weight cache is off: see
  :func:`autocast`.
* ``to_layout(model_or_batch, device)``: channels_last for 4-d image tensors and models on CUDA.
* ``full_precision``: a decorator that turns autocast off, for gradient statistics (Fisher
  diagonals, importance weights); ``fp32()``: the same as a ``with`` block, for decisions
  (stop rules, choices between candidates), which must not depend on the precision: a method
  under bf16 makes the same choices as under fp32 (``tests/test_precision_equivalence.py``).
* ``maybe_compile(model)``: ``torch.compile(model)`` when ``--compile`` is given (used by
  ``bench.models.train.train``: pretraining, retraining, oracles).
* ``to_device(t, device)``: a host-to-device copy that does not make the host wait for the GPU
  (for what hot loops draw on the CPU: shuffles, crop offsets, random labels).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class Runtime:
    precision: str = "auto"
    compile: bool = False
    pretrain_precision: str = "fp32"  # the shared models': see the module docstring


_CURRENT = Runtime()


def configure(
    precision: str = "auto", compile: bool = False, pretrain_precision: str = "fp32"
) -> None:
    for name, value in (("precision", precision), ("pretrain precision", pretrain_precision)):
        if value not in PRECISIONS:
            raise ValueError(f"{name} must be one of {PRECISIONS}, got {value!r}")
    _CURRENT.precision = precision
    _CURRENT.compile = bool(compile)
    _CURRENT.pretrain_precision = pretrain_precision


def _resolve(choice: str, device: torch.device) -> str:
    if choice != "auto":
        return choice
    return "bf16" if device.type == "cuda" else "fp32"


def precision(device: torch.device) -> str:
    """The precision in effect on ``device``: ``bf16`` or ``fp32``."""
    return _resolve(_CURRENT.precision, device)


def pretrain_precision(device: torch.device) -> str:
    """The precision the shared models (pretrained original, oracles) are trained in on
    ``device``: ``bf16`` or ``fp32``; part of their cache keys when not fp32."""
    return _resolve(_CURRENT.pretrain_precision, device)


@contextlib.contextmanager
def shared(device: torch.device):
    """A block that trains a shared model: the precision in effect (:func:`precision`,
    :func:`autocast`) is :func:`pretrain_precision` inside it, and under fp32 autocast is off
    even inside an enclosing bf16 region."""
    saved = _CURRENT.precision
    _CURRENT.precision = pretrain_precision(device)
    try:
        with fp32() if _CURRENT.precision == "fp32" else contextlib.nullcontext():
            yield
    finally:
        _CURRENT.precision = saved


def autocast(device: torch.device):
    """bf16 autocast on ``device`` when that is the precision in effect, else a no-op.

    The weight cache is off (``cache_enabled=False``). With it on, autocast keeps the bf16
    copy of every leaf parameter it casts until the *outermost* autocast region ends, and an
    in-place update (``optimizer.step()``, ``p.copy_()``) does not invalidate it; the protocol
    opens one region around the whole method call, so every forward pass after the first
    update would run on the first pass's weights (issue #14: training did nothing, the
    Mnemonic sign choice compared a candidate with itself). Without the cache each forward
    pass casts the weights again: one elementwise copy of the parameters per pass, small next
    to the pass itself, and correct however regions nest. The alternative, one region per
    forward pass inside every method, would put precision code in all of them."""
    if precision(device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


@contextlib.contextmanager
def fp32():
    """A block with autocast off on every device (plain fp32), inside any autocast region."""
    with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
        yield


def full_precision(fn):
    """Decorator: run ``fn`` with autocast off (fp32), for statistics accumulated from
    gradients (Fisher, importance), whose squares and sums bf16 would round away."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with fp32():
            return fn(*args, **kwargs)

    return wrapper


def channels_last(device: torch.device) -> bool:
    return device.type == "cuda"


def to_layout(obj, device: torch.device):
    """channels_last on CUDA for models and 4-d batches; anything else unchanged."""
    if not channels_last(device):
        return obj
    if isinstance(obj, nn.Module):
        return obj.to(memory_format=torch.channels_last)
    if isinstance(obj, torch.Tensor) and obj.dim() == 4:
        return obj.contiguous(memory_format=torch.channels_last)
    return obj


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t.to(device)``, but from a CPU tensor to CUDA without a host synchronization: a plain
    ``.to("cuda")`` from pageable memory is a blocking copy that waits for every kernel queued
    before it, so a training loop that moves a few random numbers per step (crop offsets,
    shuffles, random labels; drawn on the CPU so that results do not depend on the device)
    could never run ahead of the GPU. Here the tensor is staged in pinned memory (PyTorch's
    caching host allocator, which keeps the block until the copy has finished) and copied
    asynchronously, in stream order. Same values; anything else is a plain ``.to``."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def maybe_compile(model: nn.Module) -> nn.Module:
    return torch.compile(model) if _CURRENT.compile else model


def describe(device: torch.device) -> dict[str, object]:
    return {
        "precision": precision(device),
        "pretrain_precision": pretrain_precision(device),
        "channels_last": channels_last(device),
        "compile": _CURRENT.compile,
    }
