"""Mnemonic code: one-shot class removal from codes learned during pretraining."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from bench.core.errors import BenchError
from bench.core.reference import Reference
from bench.unlearning import mnemonic as mn
from bench.unlearning.method import register_method


@dataclass(frozen=True)
class MnemonicHP:
    """Paper defaults for CIFAR-10 (spec section 2.3, Table 5): ``lambda1`` 1e-5, ``lambda2``
    1e4, ``t_mix`` 0.3; MNIST: 1e-3, 10, 0.1 (CUB 1e-4, 1.0, 0.1; STN 1e-4, 100, 0.1).

    ``t_mix`` and ``code_space`` are *pretraining* hyperparameters: they name the special
    pretraining (``bench.unlearning.mnemonic.special_name``), which is part of the pretraining
    cache key,
    so a t_mix sweep is a sweep of this hyperparameter. ``code_space``: ``pixel`` (project
    default; U[0, 1) pixels, as the reference does for MNIST) or ``input`` (U[0, 1) in the
    model's normalised input space, as the reference does for CIFAR-10/CUB/STN)."""

    lambda1: float = 1e-5
    lambda2: float = 1e4
    t_mix: float = 0.3
    code_space: str = "pixel"


def _special(hp: MnemonicHP) -> str:
    return mn.special_name(hp.t_mix, hp.code_space)


@register_method(
    "mnemonic",
    hparams=MnemonicHP,
    needs=("forget",),
    special_pretraining=_special,
    citation="Yamashita, Yamada & Shibata, One-Shot Machine Unlearning with Mnemonic Code, "
    "ACML 2024 (arXiv 2306.05670)",
    reference="https://github.com/tomyamkum/OneShotMU-with-MNCode",
    references=(
        Reference(
            "tomyamkum/OneShotMU-with-MNCode",
            "b62107892948db7bde72927fa2eed40b6c43e21c",
            "utils.py: get_fishers, test_with_MNCodes; main.py: forget",
            conformance="tests/conformance/test_mnemonic_oneshotmu.py",
        ),
    ),
    deviations=(
        (
            "codes in pixel space by default (the reference's MNIST codes); code_space='input' "
            "gives its CIFAR codes, used by the mnemonic-cifar10* suites"
        ),
        (
            "code and mixing draws from their own seeded generators (reference: global torch RNG "
            "and unseeded numpy)"
        ),
        (
            "Fisher ratio, alpha and candidates in float64, cast back (reference float32): "
            "parameters agree to 1e-6 relative"
        ),
        "candidates scored on all codes in one eval-mode batch, always in fp32 (same predictions)",
        "one class at a time (the reference's --forget_idx takes a list)",
        (
            "parameters without gradient are left out; a tensor with all-infinite log ratios gets "
            "eta = 1 (the reference would fail)"
        ),
    ),
    forget_kinds=("class",),
    # toy (synthetic 8x8, 4 classes, smallcnn, 12 epochs): lambda1 1e-3, lambda2 3 takes class
    # 0 to ~0 % test accuracy and keeps the others near their level (grid 1e-4..1 x 0.3..100)
    quick_hp={"lambda1": 1e-3, "lambda2": 3.0, "t_mix": 0.3},
)
def mnemonic(model, data, hp: MnemonicHP, ctx):
    """One-shot forgetting of one class from the mnemonic codes alone (no training data).

    Reference: github.com/tomyamkum/OneShotMU-with-MNCode @ b62107892948db7bde72927fa2eed40b6c43e21c
    (``utils.get_MNCodes``, ``data.py`` for the pretraining; ``utils.get_fishers``,
    ``utils.test_with_MNCodes`` and ``main.forget`` for the step; ``models/resnet.py`` for the
    CIFAR model, our ``resnet18_kuangliu``). The step is restated from that code and compared
    with ours in ``tests/conformance/test_mnemonic_oneshotmu.py``.

    Pretraining (``bench.unlearning.mnemonic``; the protocol does it because of
    ``special_pretraining``):
    one U[0, 1) code per class; each training sample is replaced by its class's code with
    probability ``t_mix`` each time it is loaded; the codes are stored with the checkpoint and
    arrive here as ``ctx.pretrain_artifacts['mnemonic_codes']``.

    Forgetting: diagonal Fishers f_F (forget-class code) and f_R (the other classes' codes),
    eval mode, batch of one, squared gradients, +1e-16; eta = f_F / f_R (NaN -> 0, +-inf ->
    the largest finite value, on the log ratio as in the reference); per parameter tensor
    alpha = min(lambda1, lambda2 / max eta); candidates w + alpha*eta and w - alpha*eta; keep
    the one with the larger (1 - forget acc) + remain acc on the codes (ties -> minus). The
    weights change once: no optimizer (``steps`` = 1, the single update). Reports
    ``one_shot_seconds`` (Fisher + both candidates + choice), ``sign``, and the chosen
    candidate's code accuracies.

    Data: ``needs=('forget',)``, but only the *labels* of D_f are read (``data.forget.targets``,
    never the images), to know which class to forget. Single-class removal only (as in the
    paper): raises ``BenchError`` unless D_f holds exactly one class (``--forget class=C``).

    Deviations from the reference code (the paper's N(0, 1) codes are not one: the code draws
    U[0, 1) and so do we):

    * codes live in pixel space by default (U[0, 1) pixels, what the reference does for
      MNIST); ``code_space='input'`` gives the reference's CIFAR/CUB/STN codes (U[0, 1) in the
      normalised input space), which the mnemonic-cifar10* suites use;
    * the code and mixing draws use their own seeded generators (the reference draws the codes
      from the global torch RNG after ``set_seed`` and mixes with unseeded numpy draws);
    * the Fisher ratio, alpha and the candidates are computed in float64 and cast back to the
      parameters' dtype (reference: float32), so parameters agree to rounding (1e-6 relative);
    * the candidates are scored on all codes in one eval-mode batch (reference: one code at a
      time; the same predictions in eval mode), and always in fp32: under ``--precision bf16``
      the Fisher and the choice still run in fp32, so the sign and the update do not depend on
      the precision (the reference runs fp32 throughout);
    * forgetting more than one class at once raises (the reference's ``--forget_idx`` takes a
      list; the paper treats single-class removal only);
    * parameters without gradient (unused, or ``requires_grad=False``) are left out, and a
      tensor whose log ratios are all infinite gets eta = 1 (the reference would fail on the
      ``None`` gradient or the empty maximum);
    * the protocol's oracle/retrain models are trained without codes.
    """
    codes = ctx.pretrain_artifacts.get(mn.CODES)
    if codes is None:
        raise BenchError(
            "method 'mnemonic' needs a model pretrained with mnemonic codes: run it through the "
            "protocol, which pretrains with codes because of its special_pretraining"
        )
    expected = _special(hp)
    if ctx.pretrain_artifacts.get(mn.SPECIAL) != expected:
        raise BenchError(
            f"mnemonic: the model was pretrained as {ctx.pretrain_artifacts.get(mn.SPECIAL)!r}, "
            f"but the hyperparameters ask for {expected!r}"
        )
    if codes.shape[0] != ctx.num_classes:
        raise BenchError(f"mnemonic: {codes.shape[0]} codes for {ctx.num_classes} classes")
    classes = torch.unique(data.forget.targets).tolist()
    if len(classes) != 1:
        raise BenchError(
            f"mnemonic forgets exactly one class (single-class removal, as in the paper); the "
            f"forget set holds classes {classes}: use a class forget set such as class=0"
        )
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    t0 = time.perf_counter()
    info = mn.one_shot_forget(model, codes.to(ctx.device), classes, hp.lambda1, hp.lambda2)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    ctx.report("one_shot_seconds", time.perf_counter() - t0)
    ctx.step(1)
    for name in ("sign", "code_forget_acc", "code_remain_acc"):
        ctx.report(name, info[name])
    return model
