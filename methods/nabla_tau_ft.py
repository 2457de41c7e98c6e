"""The ∇τ notebooks' fine-tuning baseline: the ∇τ routine without its memory term (alpha0 = 0)
for twice the forget-epochs, i.e. about 6 epochs of AdamW on D_r."""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.reference import Reference
from bench.unlearning.method import hparam, register_method
from methods.nabla_tau import REFERENCE, batch_count, unlearning_loop


@dataclass(frozen=True)
class NablaTauFTHP:
    """The notebooks' settings (github.com/dnl-trpp/Nabla-Tau @ 1012093,
    ``Unlearning_main_Cifar10.ipynb`` cell 8): AdamW lr 1e-3 with PyTorch's default weight decay
    0.01, LinearLR 1.0 -> 0.1 stepped once per forget-epoch, batch 256, no augmentation,
    BatchNorm in eval mode during the updates (``bn_mode='train'``: the split/alpha sweep
    notebook's train mode).

    * ``forget_epochs = 0`` (default) = the notebooks' rule int(R / F * ``compute_epochs``) with
      R, F the numbers of D_r and D_f batches and ``compute_epochs`` = 6 (twice ∇τ's
      int(R / (2F) * 6) up to rounding: about 6 passes over D_r); ``> 0`` fixes it.
    * ``val_every`` is unused (no memory term, so no L_v); it is here so that the shared loop
      reads the same fields as ∇τ's.
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    lr_end_factor: float = hparam(0.1, ge=0, le=1)
    batch_size: int = 256
    forget_epochs: int = hparam(0, ge=0)  # 0: the rule
    compute_epochs: float = hparam(6.0, gt=0)
    val_every: int = hparam(5, ge=1)
    bn_mode: str = hparam("eval", choices=("eval", "train"))
    augment: str = hparam("none", choices=("none", "crop", "crop_flip"))


def finetune_epoch_count(n_retain_batches: int, n_forget_batches: int, compute: float = 6.0) -> int:
    """The notebooks' fine-tuning rule int(R / F * 6). At least 1 (project guard)."""
    return max(1, int(n_retain_batches / n_forget_batches * compute))


@register_method(
    "nabla_tau_ft",
    hparams=NablaTauFTHP,
    needs=("forget", "retain"),
    citation="Trippa et al., Nabla-tau, arXiv 2403.14339 (2024): fine-tuning baseline",
    reference=REFERENCE,
    references=(
        Reference(
            "dnl-trpp/Nabla-Tau",
            "1012093bbaf445e683d4dc40794ef0a611fb91bf",
            "Unlearning_main_Cifar10.ipynb: cell 8 (unlearning with start_alpha=0)",
            conformance="tests/conformance/test_nabla_tau_notebooks.py",
        ),
    ),
    deviations=(
        (
            "in BN eval mode the forget batch is not forwarded (the notebooks multiply its loss by"
            " 0: no effect on the model)"
        ),
        (
            "no L_v (unused at alpha 0); batch order, the R < F guard and closed-form LR factors "
            "as in nabla_tau"
        ),
    ),
    retain_only=True,  # forgets only through training on D_r
    quick_hp={"batch_size": 32},
)
def nabla_tau_ft(model, data, hp: NablaTauFTHP, ctx):
    """Fine-tuning as the ∇τ notebooks run it: ``nabla_tau``'s loop with alpha0 = 0 for
    int(R / F * 6) forget-epochs, so every step is one AdamW step on the mean CE of the next
    D_r batch, F steps per forget-epoch, the D_r iterator restarted every floor(R / F)
    forget-epochs, LR decayed linearly 1.0 -> 0.1 over the forget-epochs. D_f only paces the
    loop (its batches are counted, and forwarded only in BN train mode, where that moves the
    running statistics as in the notebooks). Data: D_f, D_r.

    Reference: github.com/dnl-trpp/Nabla-Tau @ 1012093 (``Unlearning_main_Cifar10.ipynb`` cell
    8: ``unlearning(..., start_alpha=0, forget_epochs=int(len(retain_loader) /
    len(forget_loader) * 6))``); tests/conformance/test_nabla_tau_notebooks.py restates it and
    checks equal parameters. Same parameters as ``nabla_tau`` with ``alpha0=0`` and that many
    forget-epochs.

    Deviations: in BN eval mode the forget batch is not forwarded (the notebooks compute its
    loss and multiply it by 0: no effect on the model, a third less compute); no L_v (the
    notebooks compute it on the test half every 5 forget-epochs, unused at alpha 0); the
    batch order, the R < F guard and the closed-form LR factors as in ``nabla_tau``; the
    notebooks' per-epoch MIA/accuracy traces are not computed. Reports ``forget_epochs``,
    ``forget_loss_start`` and ``forget_loss_end``."""
    epochs = hp.forget_epochs or finetune_epoch_count(
        batch_count(len(data.retain), hp.batch_size),
        batch_count(len(data.forget), hp.batch_size),
        hp.compute_epochs,
    )
    return unlearning_loop(model, data.forget, data.retain, None, hp, ctx, 0.0, epochs)
