"""Conformance of ``klom`` (pure function and registered metric) with the pipeline whose KLOM
numbers are published: github.com/RoyRin/data-unlearning-bench @
eb261f9c652aa1daae62c7f23f4e56286edf745c (``unlearning_bench/run.py`` ``load_klom``;
``unlearning_bench/eval.py`` ``kl_from_margins``, ``compute_binned_KL_div``).

Restated below (``published_klom``) from the reference's behaviour: ``run.py`` calls
``kl_from_margins(oracle_margins, margins)`` into parameters named (unlearned, oracle), so the
KL per point is KL(oracle || unlearned); per point both samples are clipped to [-100, 100],
``np.linspace`` gives 21 edges over the joint range (``[lo, lo + 1]`` when it is empty),
``np.digitize`` bins them (indices 1..20 counted, so samples equal to the joint maximum are
dropped), frequencies are taken over the counted samples (zeros when none), the second
histogram is floored at eps = 1e-5 where the first is positive, and ``scipy.stats.entropy``
(which renormalises both) gives the KL in nats. Inputs are float64 margins, hand-made to hit
edges, ties at the joint maximum, clipping and the NaN corner.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from bench.metrics import METRICS, EvalInput
from bench.metrics import scores as S

BINS, EPS, CLIP = 20, 1e-5, 100.0


def _digitize_freq(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin frequencies over the samples ``np.digitize`` puts in bins 1..BINS (zeros if none)."""
    counts = np.array([(np.digitize(x, edges) == i).sum() for i in range(1, BINS + 1)])
    return counts / counts.sum() if counts.sum() else np.zeros(BINS)


def published_klom(oracle: np.ndarray, unlearned: np.ndarray) -> np.ndarray:
    """Per-point KLOM of the published pipeline for (K, N) oracle and (M, N) unlearned margins."""
    out = []
    for n in range(oracle.shape[1]):
        p = np.clip(oracle[:, n], -CLIP, CLIP)  # the oracle sample is p in the published call
        q = np.clip(unlearned[:, n], -CLIP, CLIP)
        lo, hi = min(p.min(), q.min()), max(p.max(), q.max())
        hi = lo + 1 if lo >= hi else hi
        edges = np.linspace(lo, hi, BINS + 1)
        fp, fq = _digitize_freq(p, edges), _digitize_freq(q, edges)
        out.append(stats.entropy(fp, np.where(fp > 0, np.maximum(fq, EPS), fq)))
    return np.array(out)


def _columns() -> tuple[np.ndarray, np.ndarray]:
    """(6, N) oracle and unlearned margins: hand-made columns, then a seeded random block."""
    cols = [
        ([0, 0, 0, 0, 0, 0], [0, 0.2, 0.8, 1, 0.5, 0.3]),  # peaked oracle
        ([0, 1, 2, 3, 19, 20], [0.5, 5, 10, 10, 20, 20]),  # samples on the integer edges
        ([150] * 6, [99, 98, 100, 120, 50, 0]),  # every oracle margin clipped to the max: NaN
        ([3.0] * 6, [3.0] * 6),  # constant: range [3, 4]
        ([400] * 6, [101, 300, 250, 1e6, 102, 500]),  # all clipped to 100
        ([-200, -150, -100, -99, 0, 5], [-300] * 6),  # clipped at the minimum
        ([0, 0.1, -0.3, 0.2, 0.05, -0.1], [10, 10.5, 9.7, 10.2, 11, 9.9]),  # disjoint
        ([1, 1, 1, 2, 2, 2], [2, 2, 2, 2, 2, 2]),  # every unlearned margin at the maximum
    ]
    oracle = np.array([c[0] for c in cols], dtype=np.float64).T
    unlearned = np.array([c[1] for c in cols], dtype=np.float64).T
    rng = np.random.default_rng(0)
    rand_o = rng.normal(2.0, 3.0, size=(6, 40))
    rand_u = rng.normal(2.5, 4.0, size=(6, 40)) * rng.choice([0.2, 1.0, 5.0], size=40)
    return np.hstack([oracle, rand_o]), np.hstack([unlearned, rand_u])


def test_klom_function_equals_the_published_pipeline():
    oracle, unlearned = _columns()
    want = published_klom(oracle, unlearned)
    assert np.isnan(want[2]) and np.isfinite(np.delete(want, 2)).all()
    got = S.klom(oracle, unlearned)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)  # NaN where the reference's


class _View:
    """The two things ``klom`` reads from a view: its length and its targets."""

    def __init__(self, n: int):
        self.targets = torch.zeros(n, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)


class _PoolInput(EvalInput):
    """EvalInput whose unlearned replicas and oracle pool are given as logits."""

    def replica_logits(self, split: str) -> torch.Tensor:
        return self._memo["unlearned"]

    def oracle_logits(self, split: str) -> torch.Tensor:
        return self._memo["oracle"]


def _two_class_logits(m: np.ndarray) -> torch.Tensor:
    """(S, N) margins -> (S, N, 2) logits [m, 0] whose class-0 margin is exactly m."""
    z = torch.zeros(*m.shape, 2, dtype=torch.float64)
    z[..., 0] = torch.from_numpy(m)
    return z


def test_registered_klom_equals_the_published_pipeline():
    oracle, unlearned = _columns()
    want = published_klom(oracle, unlearned)
    n = oracle.shape[1]
    ev = _PoolInput(
        model=None,
        views={"forget": _View(n)},
        num_classes=2,
        oracle=lambda: None,
        replicas=lambda: [],
    )
    ev._memo.update(unlearned=_two_class_logits(unlearned), oracle=_two_class_logits(oracle))
    got = METRICS.get("klom")(ev)
    assert {split for split, _, _ in got} == {"forget"}
    rows = {m: v for _, m, v in got}
    defined = want[~np.isnan(want)]
    np.testing.assert_allclose(rows["klom"], defined.mean(), rtol=1e-12)
    np.testing.assert_allclose(rows["klom_p95"], np.percentile(defined, 95), rtol=1e-12)
    assert rows["klom_undefined"] == 1 / n
