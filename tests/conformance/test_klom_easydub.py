"""Conformance of ``klom_easydub`` (pure function and registered metric) with KLOM as EasyDUB
publishes it: github.com/easydub/EasyDUB-code @ 5de3c4cd1b9b55308e745291e878403c47e98c47
(``easydub/eval.py``: ``klom_from_margins``, ``binned_kl_divergence``; ``train_models.py``:
``compute_margins_multi`` and the mean / P95 per split; ``eval_pretrain.py``: P95 per split;
Rinberg et al. 2026, arXiv 2602.16400).

Restated below from the reference's behaviour, in float64: the margin of a model on a point is
``z_y - logsumexp_{j != y} z_j`` (``easydub_margins``); per point, ``klom_from_margins`` passes
the **unlearned** sample as p and the **oracle** sample as q; both are clipped to [-100, 100];
``np.linspace`` gives 21 edges over the joint range (``[lo, lo + 1]`` when it is empty);
``np.digitize`` bins them and bins 1..20 are counted (samples equal to the joint maximum are
dropped); frequencies are over the counted samples (zeros when none); q is floored at eps = 1e-5
where p is positive and **not renormalised**; the KL is ``sum p ln(p / q)`` over p > 0 (0 when
no p sample is counted). A split reports ``np.percentile(klom, 95)`` and the mean over all its
points. Inputs are hand-made to hit edges, ties at the joint maximum, clipping and the empty
corners, plus hand-computed answers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.metrics import METRICS, EvalInput
from bench.metrics import scores as S
from bench.metrics.pool import MAX_POINTS

BINS, EPS, CLIP = 20, 1e-5, 100.0


def easydub_point(unlearned: np.ndarray, oracle: np.ndarray) -> float:
    """One point of EasyDUB's ``binned_kl_divergence(p_samples=unlearned, q_samples=oracle)``."""
    p_arr, q_arr = np.clip(unlearned, -CLIP, CLIP), np.clip(oracle, -CLIP, CLIP)
    start = min(p_arr.min(), q_arr.min())
    end = max(p_arr.max(), q_arr.max())
    end = start + 1.0 if start >= end else end
    edges = np.linspace(start, end, BINS + 1)
    p_counts = np.array([np.sum(np.digitize(p_arr, edges) == i) for i in range(1, BINS + 1)])
    q_counts = np.array([np.sum(np.digitize(q_arr, edges) == i) for i in range(1, BINS + 1)])
    p = p_counts / p_counts.sum() if p_counts.sum() else np.zeros(BINS)
    q = q_counts / q_counts.sum() if q_counts.sum() else np.zeros(BINS)
    q_safe = np.where(p > 0, np.maximum(q, EPS), q)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q_safe[mask])))


def easydub_klom(oracle: np.ndarray, unlearned: np.ndarray) -> np.ndarray:
    """``klom_from_margins(oracle_margins, unlearned_margins)``: (n_models, n) each."""
    assert oracle.shape == unlearned.shape
    return np.array([easydub_point(unlearned[:, n], oracle[:, n]) for n in range(oracle.shape[1])])


def easydub_margins(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """``compute_margins_multi``'s margin of (M, n, C) logits: correct logit minus the
    logsumexp of the others (the correct one masked with -inf)."""
    idx = torch.arange(logits.shape[1])
    correct = logits[:, idx, y]
    masked = logits.clone()
    masked[:, idx, y] = -torch.inf
    return (correct - masked.logsumexp(dim=-1)).numpy()


def _columns() -> tuple[np.ndarray, np.ndarray]:
    """(6, N) oracle and unlearned margins: hand-made columns, then a seeded random block."""
    cols = [  # (oracle, unlearned)
        ([0, 0, 0, 0, 0, 0], [0, 0.2, 0.8, 1, 0.5, 0.3]),  # peaked oracle
        ([0, 1, 2, 3, 19, 20], [0.5, 5, 10, 10, 20, 20]),  # samples on the integer edges
        ([150] * 6, [99, 98, 100, 120, 50, 0]),  # every oracle margin at the max: q all zero
        ([3.0] * 6, [3.0] * 6),  # constant: range [3, 4]
        ([400] * 6, [101, 300, 250, 1e6, 102, 500]),  # all clipped to 100
        ([-200, -150, -100, -99, 0, 5], [-300] * 6),  # clipped at the minimum
        ([0, 0.1, -0.3, 0.2, 0.05, -0.1], [10, 10.5, 9.7, 10.2, 11, 9.9]),  # disjoint
        ([1, 1, 1, 2, 2, 2], [2, 2, 2, 2, 2, 2]),  # every unlearned margin at the max: p empty
        ([0, 4, 8, 12, 16, 20], [0] * 6),  # peaked unlearned, spread oracle
    ]
    oracle = np.array([c[0] for c in cols], dtype=np.float64).T
    unlearned = np.array([c[1] for c in cols], dtype=np.float64).T
    rng = np.random.default_rng(0)
    rand_o = rng.normal(2.0, 3.0, size=(6, 40))
    rand_u = rng.normal(2.5, 4.0, size=(6, 40)) * rng.choice([0.2, 1.0, 5.0], size=40)
    return np.hstack([oracle, rand_o]), np.hstack([unlearned, rand_u])


def test_klom_easydub_function_equals_easydub_eval():
    oracle, unlearned = _columns()
    want = easydub_klom(oracle, unlearned)
    assert np.isfinite(want).all()
    got, empty = S.klom_easydub(oracle, unlearned, return_empty=True)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert empty.tolist() == [i == 7 for i in range(oracle.shape[1])]
    assert got[7] == 0.0  # p empty: 0, where data-unlearning-bench's pipeline gives a number
    # neither registered klom row is this quantity: 6.0 (klom) and 7.5 (klom_reverse) nats
    # apart at a point of these columns
    a2d = S.klom(oracle, unlearned)
    reverse = S.klom(oracle, unlearned, direction="unlearned||oracle", binning="closed")
    assert np.nanmax(np.abs(a2d - got)) > 5.9 and np.nanmax(np.abs(reverse - got)) > 7.4
    # q all zero (every oracle margin clipped to the joint maximum): P = (1/4, 1/4, 1/2) on
    # bins 1, 11, 20 of [0, 100] against eps
    assert got[2] == pytest.approx(math.log(1 / EPS) - 1.5 * math.log(2), abs=1e-12)


def test_hand_computed_answers_and_the_other_klom_rows():
    """Known answers on 1-wide bins over [0, 20], against ``klom`` (data-unlearning-bench's
    KL(oracle || unlearned), renormalised) and ``klom_reverse`` (KL(unlearned || oracle), last
    bin closed, renormalised): the published numbers of the two benchmarks are not the same
    quantity."""
    # unlearned [0, 0, 5, 5]; oracle [0, 0, 0, 20], whose 20 is dropped: P = (.5, .5) on bins
    # 1 and 6, Q = (1, 0) -> Q' = (1, eps), not renormalised
    oracle = np.array([[0.0], [0.0], [0.0], [20.0]])
    unlearned = np.array([[0.0], [0.0], [5.0], [5.0]])
    want = 0.5 * math.log(0.5) + 0.5 * math.log(0.5 / EPS)
    assert S.klom_easydub(oracle, unlearned)[0] == pytest.approx(want, abs=1e-12)
    assert easydub_klom(oracle, unlearned)[0] == pytest.approx(want, abs=1e-12)
    # renormalising Q' (as klom does) would add ln(1 + eps): EasyDUB does not
    renormalised = want + math.log1p(EPS)
    assert abs(S.klom_easydub(oracle, unlearned)[0] - renormalised) > 9e-6
    assert S.klom(oracle, unlearned)[0] == pytest.approx(math.log(2.0), abs=1e-12)
    reverse = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / EPS) + math.log1p(EPS)
    got = S.klom(oracle, unlearned, direction="unlearned||oracle", binning="closed")[0]
    assert got == pytest.approx(reverse, abs=1e-12)

    # peaked unlearned, spread oracle (0, 4, ..., 20; 20 dropped): EasyDUB ln 5, klom
    # ln(1/5) + 4/5 ln(1/eps) + ln(1 + 4 eps): 6.0 nats apart
    oracle = np.array([[0.0], [4.0], [8.0], [12.0], [16.0], [20.0]])
    unlearned = np.zeros((6, 1))
    easy = S.klom_easydub(oracle, unlearned)[0]
    assert easy == pytest.approx(math.log(5.0), abs=1e-12)
    a2d = math.log(0.2) + 0.8 * math.log(1 / EPS) + math.log1p(4 * EPS)
    assert S.klom(oracle, unlearned)[0] == pytest.approx(a2d, abs=1e-12)
    assert S.klom(oracle, unlearned)[0] - easy > 5.99

    # every unlearned margin at the joint maximum: EasyDUB 0 (nothing counted on its p side),
    # klom_reverse ln((1 + eps) / eps) (its closed last bin counts them)
    oracle = np.array([[0.0], [0.0], [0.0], [0.0], [0.0], [10.0]])
    unlearned = np.full((6, 1), 20.0)
    assert S.klom_easydub(oracle, unlearned)[0] == 0.0
    got = S.klom(oracle, unlearned, direction="unlearned||oracle", binning="closed")[0]
    assert got == pytest.approx(math.log((1 + EPS) / EPS), abs=1e-12)

    # identical samples: 0 everywhere
    m = np.random.default_rng(1).normal(size=(5, 30))
    assert np.abs(S.klom_easydub(m, m.copy())).max() < 1e-12


class _View:
    """The two things the metric reads from a view: its length and its targets."""

    def __init__(self, y: torch.Tensor):
        self.targets = y

    def __len__(self) -> int:
        return len(self.targets)


class _PoolInput(EvalInput):
    """EvalInput whose unlearned replicas and oracle pool are given as logits per split."""

    def replica_logits(self, split: str) -> torch.Tensor:
        return self._memo["unlearned"][split]

    def oracle_logits(self, split: str) -> torch.Tensor:
        return self._memo["oracle"][split]


def _two_class_logits(m: np.ndarray) -> torch.Tensor:
    """(S, N) margins -> (S, N, 2) logits [m, 0] whose class-0 margin is exactly m."""
    z = torch.zeros(*m.shape, 2, dtype=torch.float64)
    z[..., 0] = torch.from_numpy(m)
    return z


def test_registered_klom_easydub_equals_easydub_per_split():
    """Rows per split from logits: hand-made margins on D_f, 10-class logits on D_r (more than
    MAX_POINTS points: EasyDUB scores them all) and on test."""
    oracle_f, unlearned_f = _columns()
    n_f = oracle_f.shape[1]
    g = torch.Generator().manual_seed(0)
    n_r, n_t, models, classes = MAX_POINTS + 37, 50, 6, 10
    logits, targets = {}, {"forget": torch.zeros(n_f, dtype=torch.long)}
    logits["forget"] = (_two_class_logits(oracle_f), _two_class_logits(unlearned_f))
    for split, n in (("retain", n_r), ("test", n_t)):
        targets[split] = torch.randint(0, classes, (n,), generator=g)
        z_o = torch.randn(models, n, classes, generator=g, dtype=torch.float64) * 3
        z_u = torch.randn(models, n, classes, generator=g, dtype=torch.float64) * 4 + 0.5
        z_o[:3, :5] *= 100  # saturated logits: margins clipped at +-100
        logits[split] = (z_o, z_u)
    ev = _PoolInput(
        model=None,
        views={s: _View(y) for s, y in targets.items()},
        num_classes=classes,
        oracle=lambda: None,
        replicas=lambda: [],
    )
    ev._memo["oracle"] = {s: z[0] for s, z in logits.items()}
    ev._memo["unlearned"] = {s: z[1] for s, z in logits.items()}
    got = METRICS.get("klom_easydub")(ev)
    assert [(s, m) for s, m, _ in got] == [
        (s, m)
        for s in ("forget", "retain", "test")
        for m in ("klom_easydub", "klom_easydub_p95", "klom_easydub_empty")
    ]
    rows = {(s, m): v for s, m, v in got}
    for split, (z_o, z_u) in logits.items():
        y = targets[split]
        want = easydub_klom(easydub_margins(z_o, y), easydub_margins(z_u, y))
        assert len(want) == len(y)
        np.testing.assert_allclose(rows[(split, "klom_easydub")], want.mean(), rtol=1e-12)
        p95 = np.percentile(want, 95)
        np.testing.assert_allclose(rows[(split, "klom_easydub_p95")], p95, rtol=1e-12)
    assert rows[("forget", "klom_easydub_empty")] == 1 / n_f


def test_klom_easydub_is_registered_with_its_reference():
    from bench.core.reference import deviations_of, references_of

    meta = METRICS.entry("klom_easydub").meta
    (ref,) = references_of(meta)
    assert ref.repo == "easydub/EasyDUB-code" and ref.commit.startswith("5de3c4c")
    assert ref.conformance == "tests/conformance/test_klom_easydub.py"
    assert deviations_of(meta) and meta["ideal"] == "0" and meta["cost"] == "expensive"
    (a2d,) = references_of(METRICS.entry("klom").meta)
    assert a2d.repo == "RoyRin/data-unlearning-bench" and a2d.commit.startswith("eb261f9")
