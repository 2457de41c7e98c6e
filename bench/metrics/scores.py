"""Forgetting scores that compare an unlearned model (or population of unlearned models) with
retrained ones, written for this project as pure array functions.

Definitions follow these papers and their reference implementations (read for the exact
definitions, not copied):

* Margins and KLOM: Georgiev et al. 2024, "Attribute-to-Delete: Machine Unlearning via Datamodel
  Matching"; reference ``RoyRin/data-unlearning-bench`` @ eb261f9 (``eval.py``: ``get_margin``,
  ``compute_binned_KL_div``, ``kl_from_margins``; ``run.py``: ``load_klom``, the call whose
  argument order fixes the published direction). :func:`margins`, :func:`klom`.
* KLOM as EasyDUB computes it: Rinberg et al. 2026, "Easy Data Unlearning Bench" (arXiv
  2602.16400); reference ``easydub/EasyDUB-code`` @ 5de3c4c (``easydub/eval.py``:
  ``binned_kl_divergence``, ``klom_from_margins``). :func:`klom_easydub`.
* Logit-scaled confidence and the per-example epsilon score of the NeurIPS 2023 Machine
  Unlearning challenge: Triantafillou et al. 2024, "Are we making progress in unlearning?
  Findings from the first NeurIPS unlearning competition" and the challenge's metric note;
  reference ``google-deepmind/unlearning_evaluation`` (``metric.py``:
  ``compute_logit_scaled_confidence``, ``_get_single_threshold_rates``,
  ``_get_double_threshold_rates``, ``_get_epsilons``, ``compute_forget_score_from_confs``;
  ``main.py`` for the utility adjustment). The confidence transform comes from LiRA (Carlini et
  al. 2022). :func:`logit_scaled_confidence`, :func:`challenge_epsilons`,
  :func:`challenge_forget_score`, :func:`challenge_score`.
* Population epsilon and the forgetting quality score (FQS, the "privacy score"): Machine
  Unlearning Comparator (MUC; Lee et al., "Unlearning Comparator: A Visual Analytics System for
  Comparative Evaluation of Machine Unlearning Methods", IEEE TVCG 2026); reference
  ``gnueaj/Machine-Unlearning-Comparator`` (read as ``ryusudol/Unlearning-Comparator``) backend
  ``app/utils/attack.py`` / ``attack_full_dataset.py`` (``calculate_scores``,
  ``process_attack_metrics``, ``calculate_attack_scores_original_logic``). The (epsilon,
  delta) bound from a test's error rates is Kairouz, Oh & Viswanath 2015, as in the challenge.
  :func:`population_epsilon`, :func:`forgetting_quality_score`, :func:`muc_privacy_score`.
* ZRF (Zero Retrain Forgetting): Chundawat et al. AAAI 2023, "Can Bad Teaching Induce
  Forgetting? Unlearning in Deep Networks using an Incompetent Teacher"; reference
  ``vikram2000b/bad-teaching-unlearning`` (``metrics.py``: ``JSDiv``, ``UnLearningScore``).
  :func:`js_divergence`, :func:`zrf`.

Conventions: every function accepts numpy arrays or torch tensors (any device, any float or
integer dtype), computes in float64 and returns Python floats or float64 numpy arrays. Invalid
input (wrong shapes, NaN, labels out of range, probabilities that do not sum to one) raises
:class:`ValueError`. Logs are natural (nats) unless stated. Each docstring states the value that
means "unlearned" and every deviation from its reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import rel_entr

EPSILON_CAP = 50.0  # epsilon cap of the NeurIPS 2023 challenge metric, reused for MUC's epsilon
CHALLENGE_DELTA = 1e-5  # delta of the NeurIPS 2023 challenge metric
_THRESHOLDS_PER_UNIT = 100  # challenge kit: threshold grid density (thresholds per unit)
_DOUBLE_BUFFER = 2.0  # challenge kit: half-width of the double-threshold search window
_PEAKY_RATIO = 0.01  # challenge kit: range ratio below which epsilon is set to the cap
_PROB_ATOL = 1e-4  # tolerance on probability rows summing to one


# ---------------------------------------------------------------------------------------
# input helpers


def _f64(x, name: str) -> np.ndarray:
    """float64 numpy copy of a tensor / array-like; rejects NaN."""
    if torch.is_tensor(x):
        arr = x.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be numeric, got {type(x).__name__}") from err
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr


def _finite_f64(x, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    arr = _f64(x, name)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dims, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains inf")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def _labels(labels, n: int, c: int) -> np.ndarray:
    if torch.is_tensor(labels):
        lab = labels.detach().cpu().numpy()
    else:
        lab = np.asarray(labels)
    lab = lab.reshape(-1) if lab.ndim == 0 else lab
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {lab.shape}")
    if lab.shape[0] != n:
        raise ValueError(f"{n} logit rows but {lab.shape[0]} labels")
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.issubdtype(lab.dtype, np.number) and lab.dtype != bool:
            raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
        as_f = lab.astype(np.float64)
        if not np.all(np.isfinite(as_f)) or np.any(as_f != np.round(as_f)):
            raise ValueError("labels must be integer class indices")
    lab = lab.astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() >= c):
        raise ValueError(f"labels must lie in [0, {c}), got range [{lab.min()}, {lab.max()}]")
    return lab


def _probs(x, name: str) -> np.ndarray:
    p = _f64(x, name)
    if p.ndim < 1 or p.shape[-1] < 1 or p.size == 0:
        raise ValueError(f"{name} must be (..., C) probabilities, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    if not np.allclose(p.sum(-1), 1.0, rtol=0.0, atol=_PROB_ATOL):
        raise ValueError(f"{name} rows must sum to 1 (within {_PROB_ATOL})")
    return p


# ---------------------------------------------------------------------------------------
# margins and logit-scaled confidence


def margins(logits, labels) -> np.ndarray:
    """Correct-class margin ``z_y - logsumexp_{j != y} z_j`` per example (nats).

    ``logits`` is ``(N, C)`` for one model or ``(M, N, C)`` for M models on the same N
    examples; ``labels`` is ``(N,)`` integer classes (shared by all models). Returns shape
    ``(N,)`` or ``(M, N)``. This is the margin of Georgiev et al. 2024 (data-unlearning-bench
    ``get_margin``): the true-class logit minus the log-sum-exp of the other logits, computed
    in float64 by masking the true class with ``-inf`` before ``logsumexp``, so saturated
    logits (e.g. ``[1000, 0, -1000]``) give finite exact values. Requires C >= 2 and finite
    logits. No "unlearned" value by itself: KLOM compares its distribution with retrained
    models'.
    """
    z = _finite_f64(logits, "logits", (2, 3))
    if z.shape[-1] < 2:
        raise ValueError(f"need at least 2 classes, got logits shape {z.shape}")
    y = _labels(labels, z.shape[-2], z.shape[-1])
    zt = torch.from_numpy(z)
    yt = torch.from_numpy(y)
    onehot = torch.nn.functional.one_hot(yt, z.shape[-1]).bool().expand_as(zt)
    correct = zt.masked_select(onehot).reshape(zt.shape[:-1])
    others = zt.masked_fill(onehot, float("-inf")).logsumexp(dim=-1)
    return (correct - others).numpy()


def logit_scaled_confidence(logits, labels) -> np.ndarray:
    """LiRA / NeurIPS 2023 challenge logit-scaled confidence ``log p_y - log(1 - p_y)``.

    With ``p = softmax(z)``, ``log p_y - log(sum_{j != y} p_j) = z_y - logsumexp_{j != y} z_j``
    (the softmax normaliser cancels), so this *is* :func:`margins` and is computed through it;
    same shapes, stable for saturated logits. The challenge kit
    (``compute_logit_scaled_confidence``) evaluates ``ln(p_y + 1e-45) - ln(sum_{j != y} p_j +
    1e-45)`` from float64 probabilities, which saturates near +-103.6 for extreme logits; this
    implementation does not (the only deviation). To get MUC's "confidence" statistic (the
    predicted class rather than the true class, at temperature T) pass
    ``logits / T`` and ``labels = logits.argmax(-1)``.
    """
    return margins(logits, labels)


# ---------------------------------------------------------------------------------------
# KLOM


#: KL directions of :func:`klom`: the published one first (the default)
KLOM_DIRECTIONS = ("oracle||unlearned", "unlearned||oracle")
#: binnings of :func:`klom`: the reference's ``np.digitize`` first (the default)
KLOM_BINNINGS = ("digitize", "closed")


def klom(
    oracle_margins,
    unlearned_margins,
    bins: int = 20,
    clip: float = 100.0,
    eps: float = 1e-5,
    *,
    direction: str = "oracle||unlearned",
    binning: str = "digitize",
) -> np.ndarray:
    """KLOM (KL divergence Of Margins) per example, shape ``(N,)``; 0 means unlearned.

    ``oracle_margins`` is ``(K, N)``: margins of K retrained-without-the-forget-set (oracle)
    models on N examples; ``unlearned_margins`` is ``(M, N)``: the same examples under M
    unlearned models (M and K may differ). For each example n, both samples are clipped to
    ``[-clip, clip]``; ``bins`` equal-width bins span the joint range ``[min, max]`` of the two
    clipped samples (if that range is empty, ``[min, min + 1]``); O and U are the bin
    frequencies of the oracle and the unlearned sample. With ``(P, Q) = (O, U)`` (default,
    ``direction="oracle||unlearned"``) or ``(U, O)`` (``"unlearned||oracle"``), Q is smoothed
    as ``Q' = where(P > 0, max(Q, eps), Q)``, renormalised to sum 1, and

        KLOM_n = KL(P || Q') = sum_b P_b ln(P_b / Q'_b)   (nats).

    The defaults are the pipeline whose numbers are published (data-unlearning-bench @
    eb261f9, ``run.py`` ``load_klom`` and ``eval.py``): ``run.py`` calls
    ``kl_from_margins(oracle_margins, margins)``, whose parameters are named
    ``(all_unlearned_margins, all_oracle_margins)``, so ``compute_binned_KL_div(p, q)`` gets
    the oracle sample as p: published KLOM is KL(oracle || unlearned). Its bins come from
    ``np.digitize`` on the ``linspace`` edges, half-open ``[e_b, e_{b+1})``, so the samples
    equal to the joint maximum fall outside every bin and are dropped (frequencies are taken
    over the samples kept); ``binning="digitize"`` does the same. Smoothing and the
    renormalisation of Q' are its ``scipy.stats.entropy`` call. Corner cases as in the
    reference: NaN when every P-side sample sits at the joint maximum (e.g. all oracle margins
    clipped at +clip while an unlearned one is lower); when every Q-side sample does, Q' is
    uniform over the support of P. With ``eps > 0`` every other value is finite, at most about
    ``ln(1/eps)`` (11.5 nats at 1e-5).

    ``direction="unlearned||oracle", binning="closed"`` is this harness's former definition
    (the direction the reference's parameter names suggest, and a closed last bin as in
    ``np.histogram``, so every sample counts); on peaked margin distributions the two
    directions differ by several nats. Deviations: M and K may differ (the reference asserts
    M == K), and margins and edges are float64 (the reference's float32 margins give float32
    ``linspace`` edges under NumPy 2, which can move a sample lying within float32 rounding of
    an edge).
    """
    if direction not in KLOM_DIRECTIONS:
        raise ValueError(f"direction must be one of {KLOM_DIRECTIONS}, got {direction!r}")
    if binning not in KLOM_BINNINGS:
        raise ValueError(f"binning must be one of {KLOM_BINNINGS}, got {binning!r}")
    q_s, p_s, bins, eps = _klom_inputs(oracle_margins, unlearned_margins, bins, clip, eps)
    lo, hi, edges = _joint_edges(q_s, p_s, bins)
    drop_max = binning == "digitize"  # np.digitize drops samples at the joint maximum
    oracle, oracle_any = _binned_frequencies(q_s, lo, hi, edges, bins, drop_max)
    unlearned, unlearned_any = _binned_frequencies(p_s, lo, hi, edges, bins, drop_max)
    if direction == "oracle||unlearned":
        p, p_any, q = oracle, oracle_any, unlearned
    else:
        p, p_any, q = unlearned, unlearned_any, oracle
    # a Q side with no counted sample is all zeros, as in the reference
    q = np.where(p > 0, np.maximum(q, eps), q)
    q = q / np.where(p_any, q.sum(1), 1.0)[:, None]
    out = rel_entr(p, q).sum(1)
    return np.where(p_any, out, np.nan)  # only reachable with binning="digitize"


def klom_easydub(
    oracle_margins,
    unlearned_margins,
    bins: int = 20,
    clip: float = 100.0,
    eps: float = 1e-5,
    *,
    return_empty: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """KLOM per example as EasyDUB computes it, shape ``(N,)``; 0 means unlearned.

    EasyDUB (Rinberg et al. 2026, "Easy Data Unlearning Bench", arXiv 2602.16400; reference
    ``easydub/EasyDUB-code`` @ 5de3c4c, ``easydub/eval.py``: ``klom_from_margins``,
    ``binned_kl_divergence``) is the benchmark through which KLOM's authors now publish KLOM
    numbers. Per example n, with ``oracle_margins`` ``(K, N)`` and ``unlearned_margins``
    ``(M, N)``: both samples are clipped to ``[-clip, clip]``; ``bins + 1`` ``linspace`` edges
    span their joint range ``[min, max]`` (``[min, min + 1]`` if it is empty); ``np.digitize``
    bins them and only bins 1..``bins`` are counted (half-open ``[e_b, e_{b+1})``, so samples
    equal to the joint maximum are dropped); P and Q are the frequencies of the **unlearned**
    and the **oracle** sample over their counted samples (all zeros when none is counted);
    Q is floored where P is positive, ``Q' = where(P > 0, max(Q, eps), Q)``, **without
    renormalising**, and

        KLOM_n = KL(P || Q') = sum_{b: P_b > 0} P_b ln(P_b / Q'_b)   (nats).

    It differs from :func:`klom` in three ways: the direction (KL(unlearned || oracle), where
    data-unlearning-bench's ``run.py`` gives KL(oracle || unlearned)), the unrenormalised Q'
    (``klom`` renormalises, as ``scipy.stats.entropy`` does), and the empty-P corner: when every
    unlearned margin sits at the joint maximum (e.g. M identical replicas more confident than
    every oracle), no P mass is counted and the value is 0, not NaN. Every value is finite and
    at most ``ln(1/eps)`` (11.5 nats at 1e-5). ``return_empty=True`` also returns that corner's
    boolean mask ``(N,)``.

    Deviations: M and K may differ (the reference asserts M == K; the harness's pools have
    M == K); margins, clipping and edges are float64 (the reference's margins are float32,
    from bf16-autocast logits where the GPU supports bf16, and NumPy 2 then builds float32
    edges, which can move a sample lying within float32 rounding of an edge).
    """
    q_s, p_s, bins, eps = _klom_inputs(oracle_margins, unlearned_margins, bins, clip, eps)
    lo, hi, edges = _joint_edges(q_s, p_s, bins)
    p, p_any = _binned_frequencies(p_s, lo, hi, edges, bins, drop_max=True)  # unlearned
    q, _ = _binned_frequencies(q_s, lo, hi, edges, bins, drop_max=True)  # oracle
    q = np.where(p > 0, np.maximum(q, eps), q)  # no renormalisation
    out = rel_entr(p, q).sum(1)  # P_b ln(P_b / Q'_b) where P_b > 0; 0 for an empty P
    return (out, ~p_any) if return_empty else out


def _klom_inputs(oracle_margins, unlearned_margins, bins, clip, eps):
    """Checked, clipped float64 ``(K, N)`` oracle and ``(M, N)`` unlearned margins, bins, eps."""
    q_s = _finite_f64(oracle_margins, "oracle_margins", 2)
    p_s = _finite_f64(unlearned_margins, "unlearned_margins", 2)
    if q_s.shape[1] != p_s.shape[1]:
        raise ValueError(
            f"oracle_margins {q_s.shape} and unlearned_margins {p_s.shape} disagree on N"
        )
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins}")
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    eps = float(eps)
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    return np.clip(q_s, -clip, clip), np.clip(p_s, -clip, clip), int(bins), eps


def _joint_edges(a: np.ndarray, b: np.ndarray, bins: int):
    """Per column: the joint range ``lo``, ``hi`` of two ``(S, N)`` samples (``hi = lo + 1``
    when empty) and its ``(N, bins + 1)`` ``linspace`` edges (the last edge is ``hi`` exactly)."""
    lo = np.minimum(a.min(0), b.min(0))
    hi = np.maximum(a.max(0), b.max(0))
    hi = np.where(lo >= hi, lo + 1.0, hi)
    return lo, hi, np.linspace(lo, hi, bins + 1, axis=1)


def _binned_frequencies(sample, lo, hi, edges, bins: int, drop_max: bool):
    """``(S, N)`` sample -> ``(N, bins)`` bin frequencies over the counted samples (zeros when
    none is) and ``(N,)`` "any sample counted". Bins are half-open ``[e_b, e_{b+1})`` against
    the ``linspace`` edges, as ``np.digitize``; ``drop_max`` leaves out the samples equal to
    the joint maximum, as ``np.digitize`` does (else the last bin is closed, as
    ``np.histogram``)."""
    n_pts = sample.shape[1]
    idx = np.floor((sample - lo) / (hi - lo) * bins).astype(np.int64)
    idx = np.clip(idx, 0, bins - 1)
    # exact placement against the linspace edges (floor can be off by one at an edge)
    e_t = edges.T  # (bins + 1, N)
    up = np.take_along_axis(e_t, idx + 1, axis=0)
    idx = np.where((sample >= up) & (idx < bins - 1), idx + 1, idx)
    down = np.take_along_axis(e_t, idx, axis=0)
    idx = np.where((sample < down) & (idx > 0), idx - 1, idx)
    flat = idx + np.arange(n_pts)[None, :] * bins
    if drop_max:
        flat = flat[sample < hi]
    counts = np.bincount(flat.ravel(), minlength=n_pts * bins).reshape(n_pts, bins)
    total = counts.sum(1, keepdims=True)
    return counts / np.maximum(total, 1), total[:, 0] > 0


# ---------------------------------------------------------------------------------------
# (epsilon, delta) from error rates


def _rates_to_eps(
    tpr: np.ndarray, fnr: np.ndarray, fpr: np.ndarray, tnr: np.ndarray, delta: float, combine: str
) -> np.ndarray:
    """Per-threshold epsilon with the zero-rate guards shared by MUC and this module.

    ``FPR = FNR = 0`` (perfect separation) -> inf; a term whose denominator rate is 0 is
    dropped (it carries no finite evidence), so with exactly one zero rate the other term is
    used; a term whose numerator ``1 - delta - rate`` is <= 0 is dropped; terms are combined
    by ``max`` (or ``min``); no surviving term -> 0; result clipped at 0. Numerators use
    ``TNR = 1 - FPR`` and ``TPR = 1 - FNR`` from counts, so equal samples give exactly 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        num1, num2 = tnr - delta, tpr - delta
        t1 = np.where((num1 > 0) & (fnr > 0), np.log(num1) - np.log(fnr), np.nan)
        t2 = np.where((num2 > 0) & (fpr > 0), np.log(num2) - np.log(fpr), np.nan)
    if combine == "max":
        e = np.fmax(t1, t2)
    else:
        e = np.fmin(t1, t2)
    e = np.where(np.isnan(e), 0.0, np.maximum(e, 0.0))
    return np.where((fpr == 0) & (fnr == 0), np.inf, e)


def _count_ge(sorted_x: np.ndarray, t: np.ndarray) -> np.ndarray:
    return sorted_x.size - np.searchsorted(sorted_x, t, side="left")


def population_epsilon(
    stat_a,
    stat_b,
    delta: float = 0.0,
    thresholds=None,
    *,
    cap: float = EPSILON_CAP,
    combine: str = "max",
) -> float:
    """Empirical (epsilon, delta) lower bound from threshold attacks separating two samples of a
    scalar statistic; 0 means indistinguishable (unlearned), ``cap`` means perfectly separable.

    ``stat_a`` and ``stat_b`` are 1-D samples (sizes may differ), e.g. per-example entropies of
    the unlearned and of the retrained model over the forget-class training images. For every
    threshold t (default: every unique value of the pooled samples) two rules are scored:
    "stat >= t => a" (positives a, negatives b) and its mirror "stat >= t => b". With
    FPR = P_neg(stat >= t), FNR = P_pos(stat < t),

        eps(t) = combine( ln((1 - delta - FPR) / FNR), ln((1 - delta - FNR) / FPR) ),

    ``combine = max`` by default (Kairouz et al. 2015: an (eps, delta)-indistinguishable pair
    satisfies both ``FPR + e^eps FNR >= 1 - delta`` and ``FNR + e^eps FPR >= 1 - delta``, so
    the larger term is the valid lower bound; this is also the challenge kit's rule). Guards:
    FPR = FNR = 0 gives ``cap``; a term with a zero denominator rate is dropped (with exactly
    one zero rate the finite term is used, where the challenge kit discards the rule); a term
    with ``1 - delta - rate <= 0`` is dropped; eps(t) >= 0. Result ``min(cap, max_t eps(t))``,
    ``cap = 50`` by default (the challenge's ``EPSILON_CAP``).

    MUC (``calculate_scores``) differs in ways all reproducible here, and
    :func:`muc_privacy_score` applies them: it combines the two terms with ``min`` (pass
    ``combine="min"``; its clipping of zero rates to 1e-10 then selects the finite term, as the
    guard above does); it thresholds on a fixed grid (51 points, 201 in its epoch-wise variant)
    over a fixed range, after rounding values to 2 decimals and clipping them to that range
    (the clipping matters only at the lowest threshold); it uses ``delta = 1e-5``; it rounds
    the reported attack to 3 decimals.

    Caveat: with ``combine="max"`` and every unique value as a threshold the far tails
    dominate (e.g. 5 vs 1 samples above t gives ln 5), so two independent samples of one
    distribution (n = 2000 each) give eps about 1.6; ``combine="min"`` gives about 0.05.
    """
    a = _finite_f64(stat_a, "stat_a", 1)
    b = _finite_f64(stat_b, "stat_b", 1)
    delta = float(delta)
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    if not cap > 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    if combine not in ("max", "min"):
        raise ValueError(f"combine must be 'max' or 'min', got {combine!r}")
    if thresholds is None:
        t = np.unique(np.concatenate([a, b]))
    else:
        t = _finite_f64(thresholds, "thresholds", (0, 1)).reshape(-1)
    a_s, b_s = np.sort(a), np.sort(b)
    a_ge, b_ge = _count_ge(a_s, t), _count_ge(b_s, t)
    a_hi, a_lo = a_ge / a.size, (a.size - a_ge) / a.size
    b_hi, b_lo = b_ge / b.size, (b.size - b_ge) / b.size
    # rule "stat >= t => a": TPR = P_a(>= t), FPR = P_b(>= t); the mirror swaps a and b
    tpr, fnr = np.concatenate([a_hi, b_hi]), np.concatenate([a_lo, b_lo])
    fpr, tnr = np.concatenate([b_hi, a_hi]), np.concatenate([b_lo, a_lo])
    eps = _rates_to_eps(tpr, fnr, fpr, tnr, delta, combine)
    return float(min(cap, eps.max()))


def forgetting_quality_score(eps_values) -> float:
    """MUC forgetting quality score (privacy score) ``FQS = 1 - max_k (1 - 2^(-eps_k))``.

    ``eps_values`` is one epsilon or several (e.g. from :func:`population_epsilon` on the
    entropy and on the confidence statistic); each attack's strength is ``1 - 2^(-eps)`` and
    the score is one minus the strongest, i.e. ``min_k 2^(-eps_k)``, in [0, 1]. 1 means
    unlearned (every attack at eps = 0); at the default cap eps = 50 it is ``2^-50`` (about
    8.9e-16), and ``eps = inf`` gives exactly 0. Current MUC (``process_attack_metrics``,
    ``calculate_attack_scores_original_logic``) takes the max over its four attacks (two
    statistics x two directions), as here; an earlier ``attack.py`` averaged the best entropy
    and the best confidence attack instead.
    """
    e = _f64(eps_values, "eps_values").reshape(-1)
    if e.size == 0:
        raise ValueError("eps_values is empty")
    if (e < 0).any():
        raise ValueError("eps_values must be >= 0")
    attack = 1.0 - np.exp2(-e)
    return float(1.0 - attack.max())


MUC_ENTROPY_RANGE = (0.0, 2.5)  # MUC ENTROPY_CONFIG["range"] (entropy at temperature 2)
MUC_CONFIDENCE_RANGE = (-2.5, 10.0)  # MUC CONFIDENCE_CONFIG["range"] (log-odds at temperature 1)
MUC_DELTA = 1e-5


def muc_privacy_score(
    entropy_unlearned, entropy_retrained, conf_unlearned, conf_retrained, *, bins: int = 51
) -> float:
    """MUC's privacy score (FQS) end to end, in [0, 1]; 1 means unlearned.

    Inputs are 1-D per-example statistics of the unlearned and the retrained model on the
    forget-class training images: entropy (nats) of ``softmax(z / 2)`` and log-odds confidence
    ``ln p_max - ln(1 - p_max)`` of ``softmax(z)`` (MUC uses the *predicted* class here:
    ``logit_scaled_confidence(z, z.argmax(-1))``). As MUC's ``process_attack_metrics``: each
    value is rounded to 2 decimals and clipped to its range (entropy [0, 2.5], confidence
    [-2.5, 10]); ``bins`` equally spaced thresholds span the range (51 in ``attack.py``, 201 in
    MUC's epoch-wise variant); per statistic, :func:`population_epsilon` with
    ``combine="min"``, ``delta=1e-5`` over both directions; then
    :func:`forgetting_quality_score` over the two epsilons (= 1 - the strongest of the four
    attacks). Differences: perfect separation gives ``2^-50`` instead of exactly 0, and the
    result is not rounded to 3 decimals.
    """
    eps = []
    pairs = (
        (entropy_unlearned, entropy_retrained, MUC_ENTROPY_RANGE, "entropy"),
        (conf_unlearned, conf_retrained, MUC_CONFIDENCE_RANGE, "conf"),
    )
    if int(bins) != bins or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins}")
    for u, r, (lo, hi), name in pairs:
        u = np.clip(np.round(_finite_f64(u, f"{name}_unlearned", 1), 2), lo, hi)
        r = np.clip(np.round(_finite_f64(r, f"{name}_retrained", 1), 2), lo, hi)
        t = np.linspace(lo, hi, int(bins))
        eps.append(population_epsilon(u, r, MUC_DELTA, t, combine="min"))
    return forgetting_quality_score(eps)


# ---------------------------------------------------------------------------------------
# NeurIPS 2023 unlearning challenge


def _interval_count(sorted_x: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Number of samples with ``left <= x <= right`` (0 for empty intervals)."""
    n = np.searchsorted(sorted_x, right, side="right") - np.searchsorted(sorted_x, left, "left")
    return np.maximum(n, 0)


def _challenge_eps_one(u: np.ndarray, r: np.ndarray, delta: float, cap: float) -> float:
    if np.median(r) > np.median(u):  # positive = the sample with the larger median
        pos, neg = r, u
    else:
        pos, neg = u, r
    pos_diff, neg_diff = np.ptp(pos), np.ptp(neg)
    largest, smallest = max(pos_diff, neg_diff), min(pos_diff, neg_diff)
    if largest == 0:  # both constant (the kit fails here): equal -> 0, different -> cap
        return 0.0 if pos[0] == neg[0] else cap
    if smallest / largest < _PEAKY_RATIO:
        return cap
    pos_s, neg_s = np.sort(pos), np.sort(neg)

    # single threshold: predict "positive" iff conf >= t
    lo, hi = min(pos_s[0], neg_s[0]), max(pos_s[-1], neg_s[-1])
    n_single = int(np.ceil((hi - lo) * _THRESHOLDS_PER_UNIT))
    t = np.linspace(lo, hi, n_single)
    pos_in, neg_in = _count_ge(pos_s, t), _count_ge(neg_s, t)

    # double threshold: predict "peaky" iff left <= conf <= right; the peaky sample is the one
    # with the smaller range (the negative one on ties)
    peak, other = (neg_s, pos_s) if pos_diff >= neg_diff else (pos_s, neg_s)
    width = smallest
    r_min = (peak[0] + width) - _DOUBLE_BUFFER
    r_max = peak[-1] + _DOUBLE_BUFFER
    right = np.linspace(r_min, r_max, int(np.ceil((r_max - r_min) * _THRESHOLDS_PER_UNIT)))
    n_left = int(np.ceil(2 * _DOUBLE_BUFFER * _THRESHOLDS_PER_UNIT))
    left = np.linspace(right - width - _DOUBLE_BUFFER, right - width + _DOUBLE_BUFFER, n_left)
    left = left.T.reshape(-1)  # row-major over (right, left) pairs
    right = np.repeat(right, n_left)
    peak_in, other_in = _interval_count(peak, left, right), _interval_count(other, left, right)

    # rates from counts; the double rule's "positive" is the peaky sample
    n_p = np.concatenate([np.full(peak_in.size, peak.size), np.full(pos_in.size, pos.size)])
    n_n = np.concatenate([np.full(peak_in.size, other.size), np.full(pos_in.size, neg.size)])
    hits_p, hits_n = np.concatenate([peak_in, pos_in]), np.concatenate([other_in, neg_in])
    fpr, tnr = hits_n / n_n, (n_n - hits_n) / n_n
    tpr, fnr = hits_p / n_p, (n_p - hits_p) / n_p
    perfect = (fpr == 0) & (fnr == 0)
    usable = (fpr > 0) & (fnr > 0)
    if perfect.any():
        return cap
    if not usable.any():  # the kit asserts here; no usable evidence -> 0
        return 0.0
    fpr, fnr, tpr, tnr = fpr[usable], fnr[usable], tpr[usable], tnr[usable]
    with np.errstate(divide="ignore", invalid="ignore"):
        num1, num2 = tnr - delta, tpr - delta  # = 1 - delta - FPR, 1 - delta - FNR
        t1 = np.where(num1 > 0, np.log(num1) - np.log(fnr), np.nan)
        t2 = np.where(num2 > 0, np.log(num2) - np.log(fpr), np.nan)
    e = np.fmax(t1, t2)
    e = e[~np.isnan(e)]
    if e.size == 0:
        return 0.0
    return float(np.clip(e.max(), 0.0, cap))


def challenge_epsilons(
    unlearned_conf, retrained_conf, delta: float = CHALLENGE_DELTA, cap: float = EPSILON_CAP
) -> np.ndarray:
    """Per-example epsilon of the NeurIPS 2023 challenge metric, shape ``(N,)``; small means
    unlearned (0 = indistinguishable from retraining), ``cap`` = distinguishable.

    ``unlearned_conf`` is ``(M, N)`` and ``retrained_conf`` ``(K, N)``: logit-scaled confidences
    (:func:`logit_scaled_confidence`) of M unlearned and K retrained models on N forget
    examples. Per example, as in the kit's ``_get_epsilons``:

    * the "positive" sample is the one with the larger median (unlearned on ties);
    * if the smaller of the two sample ranges is below 1% of the larger, eps = ``cap``
      (a peaky unlearned distribution is treated as distinguishable);
    * single-threshold rules "conf >= t => positive" for t on ``ceil(100 * range)``
      equally spaced points spanning the pooled range;
    * double-threshold rules "l <= conf <= r => peaky sample" (peaky = the sample with the
      smaller range w, the negative one on ties): r on ``ceil(100 * (r_max - r_min))``
      points from ``min(peaky) + w - 2`` to ``max(peaky) + 2``, and for each r, 400
      left thresholds from ``r - w - 2`` to ``r - w + 2``;
    * per rule, eps = max(ln((1 - delta - FPR)/FNR), ln((1 - delta - FNR)/FPR)) clipped at
      0; FPR = FNR = 0 gives infinity; rules with exactly one zero rate are discarded
      (the kit: "insufficient samples"), as are terms with ``1 - delta - rate <= 0``;
    * eps = max over rules, clipped to ``[0, cap]`` (defaults: delta = 1e-5, cap = 50).

    Deviations (edge cases and arithmetic only): rates are exact float64 counts (the kit
    averages float32 indicators on a GPU) and grids use ``np.linspace`` (the kit mixes numpy
    and torch); the kit crashes when both samples are constant or no rule survives, here the
    former gives 0 if the constants are equal and ``cap`` otherwise, the latter gives 0. M and
    K may differ (both >= 2; the kit needs M == K). About 1.6e5 rules per example (roughly
    10 ms each at M = K = 512). Checked against a CPU run of the kit's ``metric.py`` on
    Gaussian inputs: epsilons agree to 3e-7 and forget scores exactly.
    """
    u = _finite_f64(unlearned_conf, "unlearned_conf", 2)
    r = _finite_f64(retrained_conf, "retrained_conf", 2)
    if u.shape[1] != r.shape[1]:
        raise ValueError(f"unlearned_conf {u.shape} and retrained_conf {r.shape} disagree on N")
    if u.shape[0] < 2 or r.shape[0] < 2:
        raise ValueError(f"need >= 2 models per side, got {u.shape[0]} and {r.shape[0]}")
    delta = float(delta)
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    if not cap > 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    return np.array(
        [_challenge_eps_one(u[:, i], r[:, i], delta, float(cap)) for i in range(u.shape[1])],
        dtype=np.float64,
    )


def challenge_forget_score(eps, n_models: int) -> float:
    """Forgetting quality of the NeurIPS 2023 challenge: mean over examples of bucket points.

    ``eps`` is the ``(N,)`` output of :func:`challenge_epsilons`; ``n_models`` the number of
    unlearned models M (the kit uses the unlearned side's count). With
    ``eps_max = ceil(ln(n_models - 1))`` (7 at 512 models), an example earns
    ``2^(-floor(eps / 0.5))`` if ``eps < eps_max`` and 0 otherwise. 1 means unlearned (every
    eps < 0.5); 0 means every example is at or beyond ``eps_max``.
    """
    e = _f64(eps, "eps").reshape(-1)
    if e.size == 0:
        raise ValueError("eps is empty")
    if (e < 0).any():
        raise ValueError("eps must be >= 0")
    if int(n_models) != n_models or n_models < 2:
        raise ValueError(f"n_models must be an integer >= 2, got {n_models}")
    eps_max = math.ceil(math.log(int(n_models) - 1))
    with np.errstate(invalid="ignore"):
        points = np.where(e < eps_max, np.exp2(-np.floor(np.minimum(e, eps_max) / 0.5)), 0.0)
    return float(points.mean())


def challenge_score(eps, n_models: int, ra_u, ra_r, ta_u, ta_r) -> float:
    """Final NeurIPS 2023 challenge score
    ``challenge_forget_score(eps, n_models) * (RA_u / RA_r) * (TA_u / TA_r)``.

    RA and TA are retain and test accuracies averaged over the unlearned (``_u``) and retrained
    (``_r``) models (any common unit: fractions or percent). Not capped, so an unlearned model
    more accurate than retraining scores above its forget score (as in the kit's ``main.py``).
    """
    accs = {"ra_u": ra_u, "ra_r": ra_r, "ta_u": ta_u, "ta_r": ta_r}
    vals = {}
    for k, v in accs.items():
        arr = _f64(v, k)
        if arr.size != 1 or not np.isfinite(arr).all() or arr.item() < 0:
            raise ValueError(f"{k} must be one finite value >= 0, got {v!r}")
        vals[k] = float(arr.item())
    if vals["ra_r"] == 0 or vals["ta_r"] == 0:
        raise ValueError("ra_r and ta_r must be > 0")
    forget = challenge_forget_score(eps, n_models)
    return forget * (vals["ra_u"] / vals["ra_r"]) * (vals["ta_u"] / vals["ta_r"])


# ---------------------------------------------------------------------------------------
# Jensen-Shannon divergence and ZRF


def js_divergence(p, q) -> np.ndarray:
    """Jensen-Shannon divergence per row, in nats: ``JS(p, q) = KL(p || m)/2 + KL(q || m)/2``
    with ``m = (p + q)/2`` and ``0 ln 0 = 0``.

    ``p`` and ``q`` are probability vectors of the same shape ``(..., C)`` (rows must be
    non-negative and sum to 1 within 1e-4; they are not renormalised). Returns shape
    ``(...)``. Range ``[0, ln 2]``: 0 for identical rows, ``ln 2`` (0.693) for rows with
    disjoint support.
    """
    pp = _probs(p, "p")
    qq = _probs(q, "q")
    if pp.shape != qq.shape:
        raise ValueError(f"p {pp.shape} and q {qq.shape} must have the same shape")
    m = 0.5 * (pp + qq)
    js = 0.5 * rel_entr(pp, m).sum(-1) + 0.5 * rel_entr(qq, m).sum(-1)
    return np.clip(js, 0.0, math.log(2.0))


def zrf(probs_unlearned, probs_incompetent, *, variant: str = "js") -> float:
    """ZRF (Zero Retrain Forgetting, Chundawat et al. 2023): ``1 - mean_i JS(p_i, q_i)``.

    ``probs_unlearned`` (N, C): softmax outputs of the unlearned model on the forget set;
    ``probs_incompetent`` (N, C): those of the incompetent teacher (a randomly initialised
    model). JS in nats (the reference code uses ``torch.log``), so ZRF lies in
    ``[1 - ln 2, 1] = [0.307, 1]``; 1 means unlearned (forget-set outputs identical to the
    random model's), ``1 - ln 2`` means disjoint one-hot outputs.

    ``variant="js"`` (default) is the paper's definition above. The reference ``JSDiv`` computes
    something else: ``0.5 * F.kl_div(log p, m) + 0.5 * F.kl_div(log q, m)`` with the default
    ``reduction="mean"``, i.e. ``mean over all N*C entries of 0.5 [m ln(m/p) + m ln(m/q)]`` --
    KL(m || p) and KL(m || q) instead of KL(p || m) and KL(q || m), divided by C as well as N.
    ``variant="bad_teacher_code"`` reproduces that quantity (for comparing with published
    tables); it is infinite (ZRF = -inf) when a probability is 0 where m is not.
    """
    p = _probs(probs_unlearned, "probs_unlearned")
    q = _probs(probs_incompetent, "probs_incompetent")
    if p.ndim != 2 or p.shape != q.shape:
        raise ValueError(f"need two (N, C) arrays of one shape, got {p.shape} and {q.shape}")
    if variant == "js":
        return float(1.0 - js_divergence(p, q).mean())
    if variant == "bad_teacher_code":
        m = 0.5 * (p + q)
        div = 0.5 * rel_entr(m, p).mean() + 0.5 * rel_entr(m, q).mean()
        return float(1.0 - div)
    raise ValueError(f"variant must be 'js' or 'bad_teacher_code', got {variant!r}")


# ---------------------------------------------------------------------------------------
# U-LiRA on a pool


def ulira_accuracy(unlearned_conf, retrained_conf, *, min_var: float = 1e-6) -> float:
    """Balanced accuracy of a pool form of U-LiRA (Hayes et al. 2024, "Inexact Unlearning Needs
    More Careful Evaluations to Avoid a False Sense of Privacy"); 0.5 means unlearned.

    ``unlearned_conf`` ``(M, N)`` and ``retrained_conf`` ``(K, N)``: logit-scaled confidences
    (:func:`logit_scaled_confidence`) of M unlearned and K retrained models on N forget
    examples, M, K >= 3. For each model of either side and each example, leave that model out,
    fit one Gaussian per example to the remaining unlearned confidences ("in": trained, then
    unlearned) and one to the remaining retrained ones ("out": never trained on it), and
    predict "unlearned" when the model's confidence is more likely under "in" (Gaussian
    likelihood ratio > 1). Returns the mean of the true-positive rate over unlearned models and
    the true-negative rate over retrained ones. Variances are floored at ``min_var``.

    Deviation from the paper: its shadows are trained on random halves of the data and then
    unlearned, and the attack targets held-out unlearned models; here the shadows are this
    project's pool (replicas unlearned from one pretrained model with other seeds, and oracle
    models retrained without D_f), scored leave-one-out, so no extra training is needed.
    """
    u = _finite_f64(unlearned_conf, "unlearned_conf", 2)
    r = _finite_f64(retrained_conf, "retrained_conf", 2)
    if u.shape[1] != r.shape[1]:
        raise ValueError(f"unlearned_conf has {u.shape[1]} examples, retrained_conf {r.shape[1]}")
    if u.shape[0] < 3 or r.shape[0] < 3:
        raise ValueError("U-LiRA needs at least 3 unlearned and 3 retrained models")

    def loo_stats(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = a.shape[0]
        s, s2 = a.sum(0), (a * a).sum(0)
        mean = (s - a) / (n - 1)
        var = (s2 - a * a) / (n - 1) - mean**2
        return mean, np.maximum(var * (n - 1) / (n - 2), min_var)

    def log_density(x, mean, var):
        return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)

    def says_unlearned(x, mu_in, var_in, mu_out, var_out):
        return log_density(x, mu_in, var_in) > log_density(x, mu_out, var_out)

    mu_u, var_u = loo_stats(u)  # leave-one-out over the unlearned side
    mu_r, var_r = loo_stats(r)
    full_u = (u.mean(0), np.maximum(u.var(0, ddof=1), min_var))
    full_r = (r.mean(0), np.maximum(r.var(0, ddof=1), min_var))
    tpr = says_unlearned(u, mu_u, var_u, *full_r).mean()
    tnr = 1.0 - says_unlearned(r, *full_u, mu_r, var_r).mean()
    return float(0.5 * (tpr + tnr))
