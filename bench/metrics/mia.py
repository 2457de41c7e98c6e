"""Membership-inference metrics of the unlearning literature, written for this project.

Three attack families, each as a pure function on arrays and as a registered metric:

* SVC shadow attack, "MIA-Efficacy" (Jia et al. 2023, Unlearn-Sparse @ 80ba55d; Fan et al.
  2024, SalUn = Unlearn-Saliency @ a6e89fd; their ``evaluation/SVC_MIA.py`` and its call in
  ``main_forget.py``): :func:`svc_mia_efficacy`, metric ``mia_svc``.
* Logistic-regression U-MIA on one scalar per example (NeurIPS 2023 unlearning challenge kit
  ``simple_mia``; SCRUB; DeepUnlearn; Nabla-tau's MIA_L / MIA_E): :func:`logreg_mia`, metrics
  ``mia_loss`` and ``mia_entropy``.
* Entropy shadow attack on D_r vs test, scored on D_f: :func:`entropy_mia_shadow`. Metric
  ``mia_entropy_shadow`` is SSD's committed logistic regression (Foster et al. 2024,
  if-loops/selective-synaptic-dampening @ cdfdc0e, ``src/metrics.py``); metric
  ``mia_entropy_shadow_svc`` is Bad Teacher's committed ``SVC(C=3, rbf)`` (Chundawat et al.
  2023, vikram2000b/bad-teaching-unlearning @ f1aa988, ``metrics.py``), the attack SSD
  adapted (its SVC line is commented out there).

Per-example features (:func:`correctness`, :func:`confidence`, :func:`entropy`,
:func:`m_entropy`, :func:`ce_loss`, :func:`probabilities`) take logits ``(N, C)`` and integer
labels ``(N,)`` as torch tensors or numpy arrays and return float64 numpy arrays; they are
computed in float64 from ``log_softmax`` so that saturated logits stay finite.

All values are fractions in [0, 1]. Every attack is deterministic (fixed seeds).
"""

from __future__ import annotations

import numpy as np
import torch

from bench.core.reference import Reference
from bench.metrics.core import EvalInput, register_metric

Rows = list[tuple[str, str, float]]

SVC_FEATURES = ("correctness", "confidence", "entropy", "m_entropy", "prob")


# ---------------------------------------------------------------------------------------
# per-example features


def _logits_labels(logits, labels=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    z = torch.as_tensor(np.asarray(logits) if not torch.is_tensor(logits) else logits)
    z = z.detach().to("cpu", torch.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(z.shape)}")
    if labels is None:
        return z, None
    y = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    y = y.detach().to("cpu", torch.long).reshape(-1)
    if y.numel() != z.shape[0]:
        raise ValueError(f"{z.shape[0]} logits rows but {y.numel()} labels")
    return z, y


def probabilities(logits) -> np.ndarray:
    """Softmax probability vector ``p = softmax(z)``, shape ``(N, C)``: the ``prob`` feature of
    SalUn's SVC MIA. Source: Unlearn-Sparse/SalUn ``evaluation/SVC_MIA.py``."""
    z, _ = _logits_labels(logits)
    return torch.softmax(z, dim=1).numpy()


def correctness(logits, labels) -> np.ndarray:
    """``1[argmax_j z_j == y]`` per example (1.0 correct, 0.0 wrong). Members tend to be
    classified correctly more often. Source: SalUn ``SVC_MIA.py`` (``correctness``)."""
    z, y = _logits_labels(logits, labels)
    return (z.argmax(1) == y).double().numpy()


def confidence(logits, labels) -> np.ndarray:
    """True-class probability ``p_y = softmax(z)_y`` per example, in [0, 1]: the feature that
    Unlearn-Sparse/SalUn report as MIA-Efficacy (``confidence``). Uniform logits give 1/C."""
    z, y = _logits_labels(logits, labels)
    return torch.log_softmax(z, 1).gather(1, y[:, None]).squeeze(1).exp().numpy()


def ce_loss(logits, labels) -> np.ndarray:
    """Per-example cross-entropy ``-log p_y`` (nats), >= 0: the statistic of the loss U-MIA
    (NeurIPS 2023 challenge kit, Nabla-tau MIA_L). Uniform logits give ln C."""
    z, y = _logits_labels(logits, labels)
    return (-torch.log_softmax(z, 1).gather(1, y[:, None]).squeeze(1)).numpy()


def entropy(logits) -> np.ndarray:
    """Shannon entropy of the softmax ``H(p) = -sum_j p_j ln p_j`` (nats, 0 log 0 = 0), in
    [0, ln C]: uniform logits give ln C, one-hot-like logits give about 0. Label-free. Source:
    Bad Teacher / SSD ``entropy``; SalUn ``SVC_MIA.py``; Nabla-tau MIA_E."""
    z, _ = _logits_labels(logits)
    logp = torch.log_softmax(z, 1)
    p = logp.exp()
    return (-torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(1)).numpy()


def m_entropy(logits, labels) -> np.ndarray:
    """Modified entropy (Song & Mittal 2021, "Systematic evaluation of privacy risks of machine
    learning models", Eq. 4): ``-(1 - p_y) ln p_y - sum_{i != y} p_i ln(1 - p_i)``, >= 0.

    Unlike plain entropy it uses the label: it is small only when the model is confidently
    right, and grows without bound as ``p_y -> 0``. Uniform logits over C classes give
    ``(1 - 1/C) ln C - (C - 1)/C ln(1 - 1/C)``; confidently correct logits give about 0.
    SalUn's ``m_entropy`` indexes ``[:, labels]`` (whole columns) and takes ``log p`` for
    ``log(1 - p)``; this is the paper's definition instead."""
    z, y = _logits_labels(logits, labels)
    logp = torch.log_softmax(z, 1)
    p = logp.exp()
    log1mp = torch.log1p(-p.clamp(max=1.0)).clamp(min=np.log(1e-300))
    onehot = torch.zeros_like(p).scatter_(1, y[:, None], 1.0).bool()
    term_y = (1 - p) * logp  # used at the true class
    term_o = torch.where(p > 0, p * log1mp, torch.zeros_like(p))  # used elsewhere
    return (-torch.where(onehot, term_y, term_o).sum(1)).numpy()


FEATURES = {
    "correctness": correctness,
    "confidence": confidence,
    "entropy": lambda z, y: entropy(z),
    "m_entropy": m_entropy,
    "prob": lambda z, y: probabilities(z),
    "loss": ce_loss,
}


def _column(x) -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if torch.is_tensor(x) else x, dtype=np.float64)
    return a.reshape(len(a), -1)


# ---------------------------------------------------------------------------------------
# attacks


def svc_mia_efficacy(
    shadow_in_logits,
    shadow_in_y,
    shadow_out_logits,
    shadow_out_y,
    target_logits,
    target_y,
    feature: str = "confidence",
    seed: int = 0,
    max_rows: int | None = None,
) -> float:
    """SVC shadow MIA "MIA-Efficacy" (Unlearn-Sparse, Jia et al. 2023; SalUn, Fan et al. 2024),
    as a fraction in [0, 1].

    The reference protocol (OPTML-Group/Unlearn-Sparse @ 80ba55d and Unlearn-Saliency @
    a6e89fd: ``main_forget.py`` builds the sets, ``evaluation/SVC_MIA.py`` ``SVC_MIA`` /
    ``SVC_fit_predict`` fits): members (label 1) are the *first* ``|shadow_out|`` rows of
    ``shadow_in`` (the retain set, in its order), non-members (label 0) are *all* of
    ``shadow_out`` (the test set); ``SVC(C=3, gamma="auto", kernel="rbf")`` is fit on the
    per-example ``feature`` (``correctness``, ``confidence``, ``entropy``, ``m_entropy`` or
    ``prob``, see :data:`FEATURES`) and the score is the fraction of the target set (D_f)
    predicted 0 (non-member), ``1 - mean(predict)``. When the retain set is smaller than the
    test set, all of it is used (the reference's ``Subset`` would fail there).

    ``max_rows`` (default ``None``: the reference) caps the non-member side at that many test
    rows, drawn with ``numpy.random.default_rng(seed)``, and the member side to the first as
    many retain rows, for very large sets (an SVC fit costs about n^2). Ideal: match the
    retrained model (not 1: a retrained model still "remembers" D_f about as well as it
    generalises to test data). Features are float64 here (float32 softmax in the reference)."""
    if feature not in SVC_FEATURES:
        raise ValueError(f"unknown SVC MIA feature {feature!r}: use one of {SVC_FEATURES}")
    if max_rows is not None and (int(max_rows) != max_rows or max_rows < 1):
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}")
    from sklearn.svm import SVC

    fn = FEATURES[feature]
    f_in = _column(fn(shadow_in_logits, shadow_in_y))
    f_out = _column(fn(shadow_out_logits, shadow_out_y))
    f_t = _column(fn(target_logits, target_y))
    if not len(f_in) or not len(f_out):
        raise ValueError("svc_mia_efficacy needs non-empty member and non-member shadow sets")
    if not len(f_t):
        raise ValueError("svc_mia_efficacy needs a non-empty target set")
    if max_rows is not None and len(f_out) > max_rows:
        rng = np.random.default_rng(seed)
        f_out = f_out[np.sort(rng.choice(len(f_out), int(max_rows), replace=False))]
    f_in = f_in[: len(f_out)]
    x = np.concatenate([f_in, f_out])
    y = np.concatenate([np.ones(len(f_in)), np.zeros(len(f_out))])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    return float(1.0 - clf.predict(f_t).mean())


def logreg_mia(member_values, nonmember_values, n_splits: int = 10, seed: int = 1) -> float:
    """Logistic-regression U-MIA accuracy on one scalar per example, a fraction in [0, 1]
    (NeurIPS 2023 unlearning challenge kit ``simple_mia``; Nabla-tau MIA_L / MIA_E; SCRUB, DU).

    The larger of the two sets is subsampled (``numpy.random.default_rng(seed)``) to the size
    of the smaller; ``LogisticRegression()`` on the single feature (member 1, non-member 0) is
    scored by mean accuracy over ``StratifiedShuffleSplit(n_splits, test_size=0.1,
    random_state=0)`` (test_size rises to 2/n for fewer than 20 examples so that each test fold
    holds both classes). Used with per-example CE loss (MIA_L) or softmax entropy (MIA_E),
    members = D_f, non-members = D_test. Ideal: 0.5 (the attack cannot tell D_f from unseen
    data); about the retrained model's value."""
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit

    m = _column(member_values)[:, 0] if len(member_values) else np.zeros(0)
    n = _column(nonmember_values)[:, 0] if len(nonmember_values) else np.zeros(0)
    k = min(len(m), len(n))
    if k < 2:
        raise ValueError(f"logreg_mia needs >= 2 members and non-members (got {len(m)}, {len(n)})")
    rng = np.random.default_rng(seed)
    if len(m) > k:
        m = m[np.sort(rng.choice(len(m), k, replace=False))]
    if len(n) > k:
        n = n[np.sort(rng.choice(len(n), k, replace=False))]
    x = np.concatenate([m, n])[:, None]
    y = np.concatenate([np.ones(k), np.zeros(k)])
    cv = StratifiedShuffleSplit(n_splits=n_splits, test_size=max(0.1, 2 / len(y)), random_state=0)
    # cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy"), without its
    # per-call validation overhead (a third of the time on suites of small models)
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        scores = [
            LogisticRegression().fit(x[tr], y[tr]).score(x[te], y[te]) for tr, te in cv.split(x, y)
        ]
    return float(np.mean(scores))


ENTROPY_SHADOW_CLASSIFIERS = ("logreg", "svc")


def entropy_mia_shadow(
    retain_entropy,
    test_entropy,
    forget_entropy,
    classifier: str = "logreg",
    max_rows: int | None = None,
    seed: int = 0,
) -> float:
    """Entropy shadow MIA: the mean predicted membership of D_f, a fraction in [0, 1].

    A classifier is fit on the softmax entropies of the whole retain set (label 1) against
    the whole test set (label 0) and predicts each forget example; the score is the fraction
    predicted member (the papers report it x100). Ideal: match the retrained model.

    * ``classifier="logreg"`` (SSD, Foster et al. 2024; if-loops/selective-synaptic-dampening
      @ cdfdc0e, ``src/metrics.py`` ``get_membership_attack_prob``):
      ``LogisticRegression(class_weight="balanced", solver="lbfgs",
      multi_class="multinomial")``. A two-class multinomial fit penalises both class rows,
      ``||w_0||^2 + ||w_1||^2 = ||w_1 - w_0||^2 / 2`` at its symmetric optimum, so it predicts
      exactly as a binary fit with ``C = 2``, which is what runs here (scikit-learn 1.9 has
      no ``multi_class``; the one deviation is the solver's tolerance).
    * ``classifier="svc"`` (Bad Teacher, Chundawat et al. 2023;
      vikram2000b/bad-teaching-unlearning @ f1aa988, ``metrics.py``
      ``get_membership_attack_prob``): ``SVC(C=3, gamma="auto", kernel="rbf")``, no class
      weights, on the same sets.

    ``max_rows`` (default ``None``: both references) caps the retain and the test side each at
    that many rows, drawn with ``numpy.random.default_rng(seed)``, to bound an SVC's cost
    (about n^2) on large retain sets. Entropies are float64 here (float32 in the references).
    """
    if classifier not in ENTROPY_SHADOW_CLASSIFIERS:
        raise ValueError(
            f"classifier must be one of {ENTROPY_SHADOW_CLASSIFIERS}, got {classifier!r}"
        )
    if max_rows is not None and (int(max_rows) != max_rows or max_rows < 1):
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}")
    r, t, f = (_column(v) for v in (retain_entropy, test_entropy, forget_entropy))
    if not len(r) or not len(t) or not len(f):
        raise ValueError("entropy_mia_shadow needs non-empty retain, test and forget sets")
    if max_rows is not None:
        rng = np.random.default_rng(seed)
        r, t = (
            a[np.sort(rng.choice(len(a), int(max_rows), replace=False))] if len(a) > max_rows else a
            for a in (r, t)
        )
    x = np.concatenate([r, t])
    y = np.concatenate([np.ones(len(r)), np.zeros(len(t))])
    if classifier == "svc":
        from sklearn.svm import SVC

        clf = SVC(C=3, gamma="auto", kernel="rbf")
    else:
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=2.0, class_weight="balanced", solver="lbfgs")
    clf.fit(x, y)
    return float(clf.predict(f).mean())


# ---------------------------------------------------------------------------------------
# registered metrics

#: optional cap on the test (non-member) rows of ``mia_svc`` and on each side of
#: ``mia_entropy_shadow_svc``; ``None`` (default) is the references' protocol. An SVC fit
#: costs about n^2: some 13 s for 20,000 one-feature rows on one CPU core.
SVC_MAX_ROWS: int | None = None


def _have(ev: EvalInput, *splits: str) -> bool:
    return all(s in ev.views and len(ev.views[s]) for s in splits)


def _xy(ev: EvalInput, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return ev.logits(split), ev.targets(split)


@register_metric(
    "mia_svc",
    ideal="match retrain",
    cost="cheap",
    references=(
        Reference(
            repo="OPTML-Group/Unlearn-Sparse",
            commit="80ba55d36d0871465c2d3e3896db26a98070e065",
            file="main_forget.py (forget efficacy MIA); evaluation/SVC_MIA.py: SVC_MIA, "
            "SVC_fit_predict",
            role="MIA-Efficacy of Unlearn-Sparse",
            conformance="tests/conformance/test_svc_mia_unlearn_sparse.py",
        ),
        Reference(
            repo="OPTML-Group/Unlearn-Saliency",
            commit="a6e89fd17ff737c24c6aa16c9574469a234ffd91",
            file="Classification/main_forget.py; Classification/evaluation/SVC_MIA.py",
            role="MIA-Efficacy of SalUn, the same code",
            conformance="tests/conformance/test_svc_mia_unlearn_sparse.py",
        ),
    ),
    deviations=(
        "features in float64 (float32 softmax in the references)",
        "mia_svc_m_entropy is Song & Mittal's modified entropy; the references' m_entropy "
        "indexes whole columns ([:, labels]) and takes log p for log(1 - p), a bug not copied",
        "a retain set smaller than the test set is used whole (the references' Subset fails)",
        "SVC_MAX_ROWS optionally caps the test side (default None: the references' protocol)",
    ),
)
def mia_svc(ev: EvalInput) -> Rows:
    """SVC MIA-Efficacy on D_f (Unlearn-Sparse / SalUn), fraction of D_f predicted non-member
    by an ``SVC(C=3, gamma="auto", rbf)`` fit on the first |D_test| rows of D_r (member) vs all
    of D_test (non-member), features of the evaluated model, as in the references; see
    :func:`svc_mia_efficacy`.

    Rows: ``mia_svc`` (the ``confidence`` feature, what the papers report) and
    ``mia_svc_correctness``, ``mia_svc_entropy``, ``mia_svc_m_entropy``, ``mia_svc_prob``.
    :data:`SVC_MAX_ROWS` (``None``) optionally caps the test side. Ideal: match the retrained
    model. Skipped when D_f, D_r or D_test is empty."""
    if not _have(ev, "forget", "retain", "test"):
        return []
    r, t, f = _xy(ev, "retain"), _xy(ev, "test"), _xy(ev, "forget")
    rows = []
    for feat in SVC_FEATURES:
        name = "mia_svc" if feat == "confidence" else f"mia_svc_{feat}"
        value = svc_mia_efficacy(*r, *t, *f, feature=feat, seed=0, max_rows=SVC_MAX_ROWS)
        rows.append(("forget", name, value))
    rows.sort(key=lambda row: row[1] != "mia_svc")
    return rows


@register_metric("mia_loss", ideal="0.5", cost="cheap")
def mia_loss(ev: EvalInput) -> Rows:
    """MIA_L (Nabla-tau; NeurIPS 2023 challenge kit): logistic-regression attack accuracy on
    per-example cross-entropy loss, D_f (member) vs D_test (non-member), balanced by seeded
    subsampling, mean over 10 stratified shuffle splits; see :func:`logreg_mia`. Ideal: 0.5.
    Skipped when D_f or D_test has fewer than 2 examples."""
    if not _have(ev, "forget", "test") or min(len(ev.views["forget"]), len(ev.views["test"])) < 2:
        return []
    value = logreg_mia(ce_loss(*_xy(ev, "forget")), ce_loss(*_xy(ev, "test")))
    return [("forget", "mia_loss", value)]


@register_metric("mia_entropy", ideal="0.5", cost="cheap")
def mia_entropy(ev: EvalInput) -> Rows:
    """MIA_E (Nabla-tau): logistic-regression attack accuracy on softmax entropy, D_f (member)
    vs D_test (non-member), balanced, mean over 10 stratified shuffle splits; see
    :func:`logreg_mia`. Ideal: 0.5. Skipped when D_f or D_test has fewer than 2 examples."""
    if not _have(ev, "forget", "test") or min(len(ev.views["forget"]), len(ev.views["test"])) < 2:
        return []
    value = logreg_mia(entropy(ev.logits("forget")), entropy(ev.logits("test")))
    return [("forget", "mia_entropy", value)]


@register_metric(
    "mia_entropy_shadow",
    ideal="match retrain",
    cost="cheap",
    references=(
        Reference(
            repo="if-loops/selective-synaptic-dampening",
            commit="cdfdc0e35c1908e032a6e150d882b0fa17833f85",
            file="src/metrics.py: entropy, get_membership_attack_data, get_membership_attack_prob",
            role="SSD's entropy MIA",
            conformance="tests/conformance/test_entropy_logreg_mia_ssd.py",
        ),
    ),
    deviations=(
        "a binary LogisticRegression(C=2, balanced) in place of the reference's two-class "
        "multinomial fit with C=1 (scikit-learn 1.9 has no multi_class): the same predictions "
        "at the optimum, up to the solver's tolerance",
        "entropies in float64 (float32 in the reference)",
    ),
)
def mia_entropy_shadow(ev: EvalInput) -> Rows:
    """SSD's entropy MIA (Foster et al. 2024, selective-synaptic-dampening @ cdfdc0e): fraction
    of D_f predicted member by a balanced logistic regression fit on softmax entropies of all
    of D_r (member) vs D_test (non-member); see :func:`entropy_mia_shadow`. Bad Teacher's own
    code fits an SVC instead: metric ``mia_entropy_shadow_svc``. Ideal: match the retrained
    model. Skipped when D_f, D_r or D_test is empty."""
    if not _have(ev, "forget", "retain", "test"):
        return []
    value = entropy_mia_shadow(
        entropy(ev.logits("retain")), entropy(ev.logits("test")), entropy(ev.logits("forget"))
    )
    return [("forget", "mia_entropy_shadow", value)]


@register_metric(
    "mia_entropy_shadow_svc",
    ideal="match retrain",
    cost="expensive",
    references=(
        Reference(
            repo="vikram2000b/bad-teaching-unlearning",
            commit="f1aa988f71cccf1be6d50e0c6f7b2b905e4c9126",
            file="metrics.py: entropy, get_membership_attack_data, get_membership_attack_prob",
            role="Bad Teacher's entropy MIA",
            conformance="tests/conformance/test_entropy_svc_mia_bad_teaching.py",
        ),
    ),
    deviations=(
        "entropies in float64 (float32 in the reference)",
        "SVC_MAX_ROWS optionally caps each side (default None: the reference's protocol)",
    ),
)
def mia_entropy_shadow_svc(ev: EvalInput) -> Rows:
    """Bad Teacher's entropy MIA (Chundawat et al. 2023, bad-teaching-unlearning @ f1aa988):
    fraction of D_f predicted member by ``SVC(C=3, gamma="auto", rbf)`` fit on softmax
    entropies of all of D_r (member) vs all of D_test (non-member); see
    :func:`entropy_mia_shadow`. Opt-in (``expensive``): the SVC over the whole retain set
    costs about n^2 (minutes on CIFAR's 50,000 rows); :data:`SVC_MAX_ROWS` optionally caps
    each side. Ideal: match the retrained model. Skipped when D_f, D_r or D_test is empty."""
    if not _have(ev, "forget", "retain", "test"):
        return []
    value = entropy_mia_shadow(
        entropy(ev.logits("retain")),
        entropy(ev.logits("test")),
        entropy(ev.logits("forget")),
        classifier="svc",
        max_rows=SVC_MAX_ROWS,
    )
    return [("forget", "mia_entropy_shadow_svc", value)]
