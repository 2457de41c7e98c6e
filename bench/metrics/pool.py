"""Distribution-level forgetting metrics, registered: ZRF, and the oracle-pool tier (KLOM as
data-unlearning-bench and as EasyDUB compute it, NeurIPS 2023 challenge score, MUC's
population-epsilon forgetting quality score, U-LiRA).

The pure functions live in :mod:`bench.metrics.scores`; this module feeds them logits:

* the run's unlearned model and, for KLOM and the challenge score, its replicas (the same
  method on the same forget set from the same pretrained model, other unlearning seeds;
  ``ev.replica_logits``);
* the oracle pool, K models retrained without D_f (``ev.oracle_logits``,
  :mod:`bench.protocol.oracle`), sized by the suite's ``pool_size`` (M = K = pool_size).

Pool metrics return no rows when the run has no pool (``pool_size`` 0) or at the "before"
stage; large splits are subsampled (seeded) to :data:`MAX_POINTS` points, except by
``klom_easydub``, which scores every point as EasyDUB does.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.core.reference import Reference
from bench.metrics.core import EvalInput, register_metric
from bench.metrics.mia import entropy
from bench.metrics.scores import (
    challenge_epsilons,
    challenge_forget_score,
    challenge_score,
    klom,
    klom_easydub,
    logit_scaled_confidence,
    margins,
    muc_privacy_score,
    ulira_accuracy,
    zrf,
)

Rows = list[tuple[str, str, float]]

#: KLOM / accuracy ratios on D_r and test use at most this many (seeded) points per split
MAX_POINTS = 2000


def _pool_ready(ev: EvalInput) -> bool:
    return ev.oracle is not None and ev.replicas is not None and ev.has("forget")


def _rows_sample(ev: EvalInput, split: str, n: int = MAX_POINTS) -> torch.Tensor | None:
    """Seeded positions (within the view) of at most ``n`` rows of ``split``; ``None``: all."""
    size = len(ev.views[split])
    if size <= n:
        return None
    g = torch.Generator().manual_seed(0)
    return torch.randperm(size, generator=g)[:n].sort().values


def _take(t: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    return t if rows is None else t.index_select(-2, rows)


def _labels(ev: EvalInput, split: str, rows: torch.Tensor | None) -> np.ndarray:
    y = ev.views[split].targets.cpu()
    return (y if rows is None else y.index_select(0, rows)).numpy()


@register_metric("zrf", ideal="match retrain", cost="cheap")
def zrf_metric(ev: EvalInput) -> Rows:
    """ZRF (Chundawat et al. 2023, Bad Teacher): 1 - mean JS(p_unlearned, p_random) on D_f,
    JS in nats, against a randomly initialised model of the same architecture (seeded by the
    run's unlearning seed); in [1 - ln 2, 1]. Match retrain (a retrained model is not random on
    D_f either). After unlearning only."""
    if ev.fresh is None or not ev.has("forget"):
        return []
    from bench.models.train import predict

    incompetent = ev._once("fresh", ev.fresh)
    p = torch.softmax(ev.logits("forget").double(), 1).cpu().numpy()
    q = torch.softmax(predict(incompetent, ev.views["forget"]).double(), 1).cpu().numpy()
    return [("forget", "zrf", zrf(p, q))]


#: data-unlearning-bench at the commit behind Attribute-to-Delete's KLOM numbers
A2D_COMMIT = "eb261f9c652aa1daae62c7f23f4e56286edf745c"
#: EasyDUB-code at the commit behind EasyDUB's published P95 KLOM (README, arXiv 2602.16400)
EASYDUB_COMMIT = "5de3c4cd1b9b55308e745291e878403c47e98c47"


@register_metric(
    "klom",
    ideal="0",
    cost="expensive",
    references=(
        Reference(
            repo="RoyRin/data-unlearning-bench",
            commit=A2D_COMMIT,
            file="unlearning_bench/run.py: load_klom; unlearning_bench/eval.py: "
            "kl_from_margins, compute_binned_KL_div, get_margin",
            role="Attribute-to-Delete's KLOM: klom, klom_p95, klom_undefined rows",
            conformance="tests/conformance/test_klom_data_unlearning_bench.py",
        ),
    ),
    deviations=(
        "M may differ from K (the reference asserts M == K; pools here have M == K)",
        "margins and bin edges in float64 (the reference's float32 margins give float32 "
        "linspace edges under NumPy 2)",
        "D_r and test are subsampled to 2,000 seeded points (the reference scores every point)",
        "the reference stores per-point values; klom (mean) and klom_p95 are this harness's "
        "summaries and leave out the reference's NaN points (counted in klom_undefined)",
        "klom_reverse rows (KL(unlearned || oracle), last bin closed) are this harness's "
        "former definition, not the reference's",
    ),
)
def klom_metric(ev: EvalInput) -> Rows:
    """KLOM (Georgiev et al. 2024, "Attribute-to-Delete") as published
    (RoyRin/data-unlearning-bench @ eb261f9, ``run.py``): per point, the binned KL (20
    ``np.digitize`` bins over the joint range, margins clipped to +-100, eps 1e-5) of the
    margins of K oracle models against those of M unlearned models, KL(oracle || unlearned)
    in nats (:func:`bench.metrics.scores.klom`). Rows on D_f, D_r and test (D_r and test
    subsampled to 2,000 points): ``klom`` (mean over points), ``klom_p95`` (95th percentile,
    the paper's headline); ``klom_undefined`` (fraction of points without a value, left out
    of both: the reference's NaN, where every oracle margin sits at the joint maximum, e.g.
    clipped at +100 while an unlearned margin is lower); and ``klom_reverse`` /
    ``klom_reverse_p95``, the harness's former definition (KL(unlearned || oracle), last bin
    closed, every point defined), kept for comparison with older records. 0 =
    indistinguishable from retraining. Needs ``pool_size`` >= 2. EasyDUB, through which the
    same authors now publish KLOM, computes KL(unlearned || oracle) without renormalising:
    metric ``klom_easydub``, in the same default metric sets as this one."""
    if not _pool_ready(ev):
        return []
    rows: Rows = []
    for split in ("forget", "retain", "test"):
        if not ev.has(split):
            continue
        pick = _rows_sample(ev, split)
        y = _labels(ev, split, pick)
        mu = margins(_take(ev.replica_logits(split), pick).double().numpy(), y)
        mo = margins(_take(ev.oracle_logits(split), pick).double().numpy(), y)
        per_point = klom(mo, mu)
        defined = per_point[~np.isnan(per_point)]
        mean, p95 = (
            (float(defined.mean()), float(np.percentile(defined, 95)))
            if defined.size
            else (math.nan, math.nan)
        )
        reverse = klom(mo, mu, direction="unlearned||oracle", binning="closed")
        rows += [
            (split, "klom", mean),
            (split, "klom_p95", p95),
            (split, "klom_undefined", float(np.isnan(per_point).mean())),
            (split, "klom_reverse", float(reverse.mean())),
            (split, "klom_reverse_p95", float(np.percentile(reverse, 95))),
        ]
    return rows


@register_metric(
    "klom_easydub",
    ideal="0",
    cost="expensive",
    references=(
        Reference(
            repo="easydub/EasyDUB-code",
            commit=EASYDUB_COMMIT,
            file="easydub/eval.py: klom_from_margins, binned_kl_divergence; eval_pretrain.py, "
            "train_models.py: compute_margins_multi, P95 (and mean) per split",
            role="EasyDUB's published P95 KLOM per split, arXiv 2602.16400",
            conformance="tests/conformance/test_klom_easydub.py",
        ),
    ),
    deviations=(
        "margins in float64 from the evaluated logits (the reference's are float32, from "
        "bf16-autocast logits on GPUs with bf16, and give float32 bin edges under NumPy 2)",
        "M may differ from K (the reference asserts M == K; pools here have M == K)",
        "splits are this run's D_f, D_r and test (EasyDUB: its fixed CIFAR-10 forget sets, "
        "retain, and val = the CIFAR-10 test set, with 100 ResNet-9 models a side)",
        "klom_easydub_empty (share of points the reference scores 0 because every unlearned "
        "margin sits at the joint maximum) is a diagnostic of this harness",
    ),
)
def klom_easydub_metric(ev: EvalInput) -> Rows:
    """KLOM as EasyDUB publishes it (Rinberg et al. 2026, arXiv 2602.16400; easydub/EasyDUB-code
    @ 5de3c4c, ``easydub/eval.py`` ``klom_from_margins``, P95 per split as ``eval_pretrain.py``
    and ``train_models.py`` report it): per point, the binned KL(unlearned || oracle) of the
    margins ``z_y - logsumexp_{j != y} z_j`` of M unlearned replicas against K oracle models
    (20 ``np.digitize`` bins over the joint range, margins clipped to +-100, eps 1e-5 on the
    oracle side where the unlearned side is positive, no renormalisation; nats;
    :func:`bench.metrics.scores.klom_easydub`), over every point of D_f, D_r and test (the
    reference's forget, retain and val, val being CIFAR-10's test set). Rows per split:
    ``klom_easydub_p95`` (95th percentile, linear interpolation: EasyDUB's headline),
    ``klom_easydub`` (mean) and ``klom_easydub_empty`` (fraction of points where every
    unlearned margin sits at the joint maximum, which the reference scores 0; counted in both,
    as there). 0 = indistinguishable from retraining. Needs ``pool_size`` >= 2.

    The ``klom`` metric is data-unlearning-bench's pipeline (KL(oracle || unlearned),
    renormalised, behind Attribute-to-Delete's numbers); on peaked margins the two differ by
    several nats. Deviations: margins in float64 from the evaluated logits (the reference's
    are float32, from bf16-autocast logits on GPUs with bf16); M may differ from K (the
    reference asserts M == K; pools here have M == K)."""
    if not _pool_ready(ev):
        return []
    rows: Rows = []
    for split in ("forget", "retain", "test"):
        if not ev.has(split):
            continue
        y = _labels(ev, split, None)
        mu = margins(ev.replica_logits(split).double().numpy(), y)
        mo = margins(ev.oracle_logits(split).double().numpy(), y)
        per_point, empty = klom_easydub(mo, mu, return_empty=True)
        rows += [
            (split, "klom_easydub", float(per_point.mean())),
            (split, "klom_easydub_p95", float(np.percentile(per_point, 95))),
            (split, "klom_easydub_empty", float(empty.mean())),
        ]
    return rows


def _accuracy(logits: torch.Tensor, y: np.ndarray) -> float:
    """Mean top-1 accuracy in % over the model axis of ``[M, n, C]`` logits."""
    return float((logits.argmax(-1) == torch.as_tensor(y)).double().mean() * 100)


@register_metric("challenge_score", ideal="1", cost="expensive")
def challenge_metric(ev: EvalInput) -> Rows:
    """NeurIPS 2023 machine unlearning challenge score (Triantafillou et al. 2024): per D_f
    example, epsilon from the logit-scaled confidences of M unlearned vs K retrained models
    (single- and double-threshold attacks, delta 1e-5, cap 50); bucket points
    2^-floor(eps/0.5) below ceil(ln(M-1)); mean over D_f (``challenge_forget_score``), times
    RA_u/RA_r x TA_u/TA_r (``challenge_score``, accuracies averaged over the models; D_r and
    test subsampled to 2,000 points). Also ``challenge_eps`` (mean epsilon). 1 = unlearned.
    Needs ``pool_size`` >= 3 (the kit uses 512)."""
    if not _pool_ready(ev):
        return []
    y_f = _labels(ev, "forget", None)
    cu = logit_scaled_confidence(ev.replica_logits("forget").double().numpy(), y_f)
    cr = logit_scaled_confidence(ev.oracle_logits("forget").double().numpy(), y_f)
    m = cu.shape[0]
    if m < 3:
        return []
    eps = challenge_epsilons(cu, cr)
    acc = {}
    for split in ("retain", "test"):
        pick = _rows_sample(ev, split)
        y = _labels(ev, split, pick)
        acc[split] = (
            _accuracy(_take(ev.replica_logits(split), pick), y),
            _accuracy(_take(ev.oracle_logits(split), pick), y),
        )
    return [
        ("forget", "challenge_eps", float(eps.mean())),
        ("forget", "challenge_forget_score", challenge_forget_score(eps, m)),
        ("forget", "challenge_score", challenge_score(eps, m, *acc["retain"], *acc["test"])),
    ]


@register_metric("fqs", ideal="1", cost="expensive")
def fqs_metric(ev: EvalInput) -> Rows:
    """Forgetting quality score of Machine-Unlearning-Comparator (its "privacy score"): the
    population epsilon of threshold attacks separating the unlearned model from retrained
    oracle 0 over the D_f population, on the entropy of softmax(z/2) and on the log-odds
    confidence of the predicted class (51 thresholds, delta 1e-5); FQS = 1 - max attack
    strength (1 - 2^-eps). 1 = unlearned. Needs an oracle pool (``pool_size`` >= 1)."""
    if ev.oracle is None or not ev.has("forget"):
        return []
    zu = ev.logits("forget").double().cpu().numpy()
    zr = ev.oracle_logits("forget")[0].double().numpy()
    score = muc_privacy_score(
        entropy(zu / 2.0),  # temperature 2
        entropy(zr / 2.0),
        logit_scaled_confidence(zu, zu.argmax(-1)),
        logit_scaled_confidence(zr, zr.argmax(-1)),
    )
    return [("forget", "fqs", score)]


@register_metric("ulira", ideal="0.5", cost="expensive")
def ulira_metric(ev: EvalInput) -> Rows:
    """U-LiRA (Hayes et al. 2024) in pool form: balanced accuracy of per-example Gaussian
    likelihood-ratio tests on the logit-scaled confidence of D_f, unlearned replicas ("in")
    vs oracle models ("out"), every model scored leave-one-out
    (:func:`bench.metrics.scores.ulira_accuracy`). 0.5 = unlearned. Opt-in: needs
    ``pool_size`` >= 3 (the paper uses many more shadows)."""
    if not _pool_ready(ev):
        return []
    y_f = _labels(ev, "forget", None)
    cu = logit_scaled_confidence(ev.replica_logits("forget").double().numpy(), y_f)
    cr = logit_scaled_confidence(ev.oracle_logits("forget").double().numpy(), y_f)
    if min(cu.shape[0], cr.shape[0]) < 3:
        return []
    return [("forget", "ulira", ulira_accuracy(cu, cr))]
