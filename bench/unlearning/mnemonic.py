"""Mnemonic codes (Yamashita, Yamada & Shibata, ACML 2024, arXiv 2306.05670): pure functions
for the special pretraining and for the one-shot forgetting step of method ``mnemonic``.

Pretraining (paper Alg. 1; reference ``utils.get_MNCodes`` and ``data.py``):

* one code per class, the shape of an input, drawn once from ``U[0, 1)`` with a CPU generator
  seeded by the pretraining seed (``train_seed + CODE_SEED_OFFSET``). The reference draws
  ``torch.rand`` (the paper says N(0, 1); the project follows the code). Where the codes live
  (project decision; our models take pixels in [0, 1] and normalise inside):
  ``space="pixel"`` (default): the code *is* a pixel-space image, U[0, 1) per pixel (what the
  reference does for MNIST, whose inputs are not normalised); ``space="input"``: U[0, 1) in
  the model's normalised input space, as the reference does for CIFAR/CUB/STN, i.e. the pixel
  image ``mean + std * u`` per channel. Either way ``codes`` below are stored in pixel space,
  exactly what is fed to the model;
* every time a training sample is loaded it is replaced by its own class's code with
  probability ``t_mix`` (label unchanged), after augmentation (the reference replaces the
  transformed tensor, so codes are never augmented). The draws use their own seeded CPU
  generator (``train_seed + MIX_SEED_OFFSET``; the reference's numpy draws are unseeded).

The variant is named by :func:`special_name` (e.g. ``mnemonic:t_mix=0.3,space=pixel,v=1``);
that name is part of the pretraining cache key, and the codes are stored in the checkpoint
(``artifacts['mnemonic_codes']``) and handed to the method as ``ctx.pretrain_artifacts``.

Forgetting (paper Eq. 2-7, Alg. 2; reference ``utils.get_fishers`` and ``main.forget``):
Fisher diagonals from the codes only (eval mode, one code at a time, cross-entropy with the
code's class; ``f_C = (1e-16 + sum_c g_c**2) / |C|``), amplitude ``eta = exp(log f_F - log
f_R)`` with NaN -> 0 and +-inf -> the largest finite value of the tensor (both applied to the
log ratio, as in the code), per-tensor ``alpha = min(lambda1, lambda2 / max eta)``, candidates
``w +- alpha * eta`` for every named parameter, keep the one with the larger ``(1 - forget acc)
+ remain acc`` on the codes (ties -> ``w -``). Computed in float64, cast to the parameters'
dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from bench.core import runtime
from bench.core.errors import BenchError

PREFIX = "mnemonic"
#: bump when code generation or mixing changes: part of the special name, so of the cache key
CODE_VERSION = 1
CODE_SEED_OFFSET = 314_159
MIX_SEED_OFFSET = 271_828
SPACES = ("pixel", "input")
#: key of the codes (pixel space, shape [num_classes, *input_shape]) in the artifacts
CODES = "mnemonic_codes"
SPECIAL = "mnemonic_special"


# ---------------------------------------------------------------------------------------
# pretraining


def special_name(t_mix: float, space: str = "pixel") -> str:
    """The pretraining variant name (part of the pretraining cache key)."""
    if not 0.0 <= float(t_mix) <= 1.0:
        raise BenchError(f"mnemonic t_mix must be in [0, 1] (got {t_mix})")
    if space not in SPACES:
        raise BenchError(f"mnemonic code space must be one of {SPACES} (got {space!r})")
    return f"{PREFIX}:t_mix={float(t_mix)!r},space={space},v={CODE_VERSION}"


def is_mnemonic(special: str | None) -> bool:
    return bool(special) and special.split(":", 1)[0] == PREFIX


def parse_special(special: str) -> dict:
    """``{'t_mix': float, 'space': str, 'v': int}`` from a :func:`special_name` string."""
    if not is_mnemonic(special):
        raise BenchError(f"not a mnemonic pretraining variant: {special!r}")
    fields = dict(kv.split("=", 1) for kv in special.split(":", 1)[1].split(",") if kv)
    try:
        out = {
            "t_mix": float(fields["t_mix"]),
            "space": fields.get("space", "pixel"),
            "v": int(fields.get("v", CODE_VERSION)),
        }
    except (KeyError, ValueError):
        raise BenchError(f"malformed mnemonic pretraining variant {special!r}") from None
    special_name(out["t_mix"], out["space"])  # validates
    if out["v"] != CODE_VERSION:
        raise BenchError(f"{special!r}: this code makes mnemonic codes of version {CODE_VERSION}")
    return out


def make_codes(
    num_classes: int,
    input_shape: Sequence[int],
    seed: int,
    space: str = "pixel",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """One U[0, 1) code per class (``[num_classes, *input_shape]``, float32, CPU), returned in
    pixel space (``space='input'``: ``mean + std * u`` per channel, see the module doc)."""
    g = torch.Generator().manual_seed(int(seed) + CODE_SEED_OFFSET)
    u = torch.rand((num_classes, *input_shape), generator=g)
    if space == "pixel":
        return u
    if space != "input":
        raise BenchError(f"mnemonic code space must be one of {SPACES} (got {space!r})")
    shape = (1, -1) + (1,) * (len(input_shape) - 1)
    m = torch.tensor(mean, dtype=torch.float32).view(shape)
    s = torch.tensor(std, dtype=torch.float32).view(shape)
    return m + s * u


class CodeMixer:
    """``batch_hook`` for :func:`bench.models.train.train`: each sample is replaced by its class's
    code with probability ``t_mix`` (labels unchanged); counts what it saw and replaced."""

    def __init__(self, codes: torch.Tensor, t_mix: float, seed: int):
        self.codes = codes
        self.t_mix = float(t_mix)
        self.generator = torch.Generator().manual_seed(int(seed) + MIX_SEED_OFFSET)
        self.seen = 0
        self.replaced = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mask = torch.rand(y.shape[0], generator=self.generator) < self.t_mix
        self.seen += int(y.shape[0])
        self.replaced += int(mask.sum())
        if self.codes.device != x.device:
            self.codes = self.codes.to(x.device)
        mask = runtime.to_device(mask, x.device).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(mask, self.codes[y].to(x.dtype), x)


def pretraining(special: str, bundle, seed: int) -> tuple[CodeMixer, dict]:
    """The batch hook and the checkpoint artifacts of the mnemonic pretraining ``special``."""
    opts = parse_special(special)
    codes = make_codes(
        bundle.num_classes, bundle.input_shape, seed, opts["space"], bundle.mean, bundle.std
    )
    return CodeMixer(codes, opts["t_mix"], seed), {CODES: codes, SPECIAL: special}


# ---------------------------------------------------------------------------------------
# forgetting


def _params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


@runtime.full_precision
def code_fishers(
    model: nn.Module, codes: torch.Tensor, forget_classes: Sequence[int]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Diagonal Fishers of the forget and the remaining classes from the codes alone (eval
    mode, one code per backward, squared gradients; ``(1e-16 + sum g**2) / |C|``)."""
    forget = {int(c) for c in forget_classes}
    params = _params(model)
    f_f = {n: torch.full_like(p, 1e-16) for n, p in params}
    f_r = {n: torch.full_like(p, 1e-16) for n, p in params}
    model.eval()
    for c in range(codes.shape[0]):
        x = codes[c : c + 1].to(next(model.parameters()).device)
        y = torch.tensor([c], device=x.device)
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
        acc = f_f if c in forget else f_r
        for (n, _), g in zip(params, grads):
            if g is not None:
                acc[n] += g.detach() ** 2
    n_f, n_r = len(forget), codes.shape[0] - len(forget)
    if n_f < 1 or n_r < 1:
        raise BenchError("mnemonic forgetting needs at least one forget and one remaining class")
    return {n: v / n_f for n, v in f_f.items()}, {n: v / n_r for n, v in f_r.items()}


def amplitude(f_forget: torch.Tensor, f_remain: torch.Tensor) -> torch.Tensor:
    """``eta = exp(log f_F - log f_R)`` (float64); on the log ratio NaN -> 0 and +-inf -> its
    largest finite value (0 when none is finite), as the reference code does."""
    r = torch.log(f_forget.double()) - torch.log(f_remain.double())
    r = torch.where(torch.isnan(r), torch.zeros_like(r), r)
    inf = torch.isinf(r)
    if inf.any():
        finite = r[~inf]
        top = finite.max() if finite.numel() else torch.zeros((), dtype=r.dtype)
        r = torch.where(inf, top.to(r.device), r)
    return torch.exp(r)


def alpha(eta: torch.Tensor, lambda1: float, lambda2: float) -> float:
    """Per-tensor coefficient ``min(lambda1, lambda2 / max eta)``."""
    top = float(eta.max())
    return min(float(lambda1), float(lambda2) / top if top > 0 else math.inf)


def perturbation(
    f_forget: dict[str, torch.Tensor],
    f_remain: dict[str, torch.Tensor],
    lambda1: float,
    lambda2: float,
) -> dict[str, torch.Tensor]:
    """``alpha_l * eta_l`` for every parameter tensor ``l`` (float64)."""
    out = {}
    for n in f_forget:
        eta = amplitude(f_forget[n], f_remain[n])
        out[n] = alpha(eta, lambda1, lambda2) * eta
    return out


@torch.no_grad()
@runtime.full_precision
def code_accuracies(
    model: nn.Module, codes: torch.Tensor, forget_classes: Sequence[int]
) -> tuple[float, float]:
    """Accuracy (fraction) of the codes of the forget classes and of the remaining classes,
    in fp32 whatever the run's precision: the sign choice is a decision (bf16 logits could
    flip a code's arg-max and with it the chosen candidate)."""
    model.eval()
    x = codes.to(next(model.parameters()).device)
    hit = (model(x).argmax(1).cpu() == torch.arange(codes.shape[0])).float()
    forget = torch.zeros(codes.shape[0], dtype=torch.bool)
    forget[list(forget_classes)] = True
    return float(hit[forget].mean()), float(hit[~forget].mean())


def one_shot_forget(
    model: nn.Module,
    codes: torch.Tensor,
    forget_classes: Sequence[int],
    lambda1: float,
    lambda2: float,
) -> dict[str, float]:
    """Perturb ``model`` in place, once: ``w + d`` or ``w - d`` with ``d`` from
    :func:`perturbation`, whichever scores higher ``(1 - forget acc) + remain acc`` on the
    codes (ties -> minus). Returns the chosen sign and both candidates' code accuracies."""
    f_f, f_r = code_fishers(model, codes, forget_classes)
    delta = perturbation(f_f, f_r, lambda1, lambda2)
    params = dict(_params(model))
    w0 = {n: p.detach().clone() for n, p in params.items()}
    scores, accs = {}, {}
    with torch.no_grad():
        for sign in (1, -1):
            for n, p in params.items():
                p.copy_((w0[n].double() + sign * delta[n]).to(p.dtype))
            accs[sign] = code_accuracies(model, codes, forget_classes)
            scores[sign] = (1 - accs[sign][0]) + accs[sign][1]
        best = 1 if scores[1] > scores[-1] else -1
        if best == 1:
            for n, p in params.items():
                p.copy_((w0[n].double() + delta[n]).to(p.dtype))
    return {
        "sign": float(best),
        "code_forget_acc": accs[best][0],
        "code_remain_acc": accs[best][1],
        "code_score_plus": scores[1],
        "code_score_minus": scores[-1],
    }
