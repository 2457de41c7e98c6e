"""Forgetting scores (``bench.metrics.scores``): hand-computed known answers for margins, KLOM,
the population epsilon / FQS, the NeurIPS 2023 challenge epsilon and score, JS and ZRF, plus
input validation. Everything is seeded and runs in a few seconds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from bench.metrics import scores as S

LN2 = math.log(2.0)


def _cols(*rows: str) -> np.ndarray:
    """(M, N) array from N whitespace-separated rows of M numbers (one row per example)."""
    return np.array([row.split() for row in rows], dtype=np.float64).T


# ---------------------------------------------------------------------------------------
# margins / logit-scaled confidence


def test_margins_hand_computed():
    z = np.array([[2.0, 0.0, 0.0], [1.0, 3.0, -1.0]])
    m = S.margins(z, [0, 1])
    assert m.shape == (2,)
    assert m[0] == pytest.approx(2.0 - math.log(2.0), abs=1e-12)
    assert m[1] == pytest.approx(3.0 - math.log(math.e + math.exp(-1.0)), abs=1e-12)
    # a wrong label gives a negative margin: 0 - ln(e^2 + e^0)
    assert S.margins(z[:1], [1])[0] == pytest.approx(-math.log(math.exp(2.0) + 1.0), abs=1e-12)


def test_margins_saturated_logits_are_exact():
    z = torch.tensor([[1000.0, 0.0, -1000.0], [1000.0, 0.0, -1000.0]], dtype=torch.float32)
    m = S.margins(z, torch.tensor([0, 2]))
    assert m.dtype == np.float64
    assert np.isfinite(m).all()
    assert m[0] == 1000.0  # 1000 - ln(1 + e^-1000)
    assert m[1] == -2000.0  # -1000 - logsumexp(1000, 0)


def test_margins_model_axis_and_input_types():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 5, 4)) * 4
    y = rng.integers(0, 4, size=5)
    stacked = S.margins(z, y)
    assert stacked.shape == (3, 5)
    for k in range(3):
        np.testing.assert_allclose(stacked[k], S.margins(z[k], y), rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        S.margins(torch.from_numpy(z).float(), torch.from_numpy(y)),
        S.margins(z.astype(np.float32), y),
        rtol=0,
        atol=1e-12,
    )
    # the definition, written out: z_y - ln sum_{j != y} e^{z_j}
    for k in range(3):
        for n in range(5):
            others = np.delete(z[k, n], y[n])
            direct = z[k, n, y[n]] - math.log(np.exp(others).sum())
            assert stacked[k, n] == pytest.approx(direct, abs=1e-10)


def test_logit_scaled_confidence_matches_direct_formula():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(200, 10)) * 3.0
    y = rng.integers(0, 10, size=200)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    py = p[np.arange(200), y]
    direct = np.log(py) - np.log(1.0 - py)
    got = S.logit_scaled_confidence(z, y)
    np.testing.assert_allclose(got, direct, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(got, S.margins(z, y))


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (np.zeros(3), [0], "dims"),
        (np.zeros((2, 3)), [0], "labels"),
        (np.zeros((2, 3)), [0, 3], r"\[0, 3\)"),
        (np.zeros((2, 3)), [0, -1], r"\[0, 3\)"),
        (np.zeros((2, 3)), [0.5, 1.0], "integer"),
        (np.zeros((2, 1)), [0, 0], "2 classes"),
        (np.array([[0.0, np.nan]]), [0], "NaN"),
        (np.array([[0.0, np.inf]]), [0], "inf"),
        (np.zeros((2, 3)), [[0, 1]], "1-D"),
    ],
)
def test_margins_validation(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        S.margins(logits, labels)


# ---------------------------------------------------------------------------------------
# KLOM


def test_klom_identical_samples_is_zero():
    rng = np.random.default_rng(2)
    m = rng.normal(size=(50, 30)) * 5
    out = S.klom(m, m.copy())
    assert out.shape == (30,)
    assert np.abs(out).max() < 1e-12


def test_klom_two_bins_hand_computed_and_directions():
    # bins=2 over the joint range [0, 1]: edges 0, 0.5, 1; closed last bin counts every sample
    oracle = np.array([[0.0], [1.0]])  # O = (1/2, 1/2)
    unlearned = np.array([[0.0], [0.0], [0.0], [1.0]])  # U = (3/4, 1/4)
    kl_uo = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.1308
    kl_ou = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # 0.1438
    closed = {"bins": 2, "binning": "closed"}
    got = S.klom(oracle, unlearned, **closed)
    assert got[0] == pytest.approx(kl_ou, abs=1e-12)  # default direction: KL(oracle || unlearned)
    reverse = S.klom(oracle, unlearned, direction="unlearned||oracle", **closed)
    assert reverse[0] == pytest.approx(kl_uo, abs=1e-12)
    swapped = S.klom(unlearned, oracle, direction="unlearned||oracle", **closed)
    assert swapped[0] == pytest.approx(kl_ou, abs=1e-12)
    assert abs(kl_uo - kl_ou) > 0.01


def test_klom_default_is_the_published_pipeline_on_a_peaked_oracle():
    """data-unlearning-bench's run.py computes KL(oracle || unlearned) with np.digitize bins;
    on a peaked oracle the former default KL(unlearned || oracle), closed, is ~12x larger."""
    oracle = np.zeros((4, 1))  # every oracle margin at 0: O = (1, 0)
    unlearned = np.array([[0.0], [0.2], [0.8], [1.0]])
    # digitize on edges 0, 0.5, 1 drops the 1.0 (joint maximum): U = (2/3, 1/3)
    published = math.log(1.5)  # KL(O || U) = 1 * ln(1 / (2/3))
    assert S.klom(oracle, unlearned, bins=2)[0] == pytest.approx(published, abs=1e-12)
    # former default: KL(U || O') with U = (1/2, 1/2) (1.0 counted), O' = (1, eps) / (1 + eps)
    eps = 1e-5
    former = 0.5 * math.log(0.5 * (1 + eps)) + 0.5 * math.log(0.5 * (1 + eps) / eps)
    got = S.klom(oracle, unlearned, bins=2, direction="unlearned||oracle", binning="closed")
    assert got[0] == pytest.approx(former, abs=1e-12)
    assert former - published > 4.5


@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_klom_eps_smoothing_hand_computed(eps):
    oracle = np.array([[0.0], [1.0]])  # kept by digitize: {0} -> O = (1, 0)
    unlearned = np.zeros((3, 1))  # U = (1, 0)
    assert S.klom(oracle, unlearned, bins=2, eps=eps)[0] == pytest.approx(0.0, abs=1e-12)
    oracle = np.array([[0.0], [0.6], [1.0]])  # kept: {0, 0.6} -> O = (1/2, 1/2)
    unlearned = np.array([[0.0], [0.1], [1.0]])  # kept: {0, 0.1} -> U = (1, 0)
    # U' = (1, eps) / (1 + eps)
    want = 0.5 * math.log(0.5 * (1 + eps)) + 0.5 * math.log(0.5 * (1 + eps) / eps)
    assert S.klom(oracle, unlearned, bins=2, eps=eps)[0] == pytest.approx(want, abs=1e-12)


def test_klom_digitize_drops_joint_maximum_and_closed_keeps_it():
    oracle = np.array([[0.0], [1.0]])
    unlearned = np.array([[0.0], [0.0], [0.0], [1.0]])
    # np.digitize drops both 1.0 samples: O = (1, 0), U = (1, 0) -> 0
    assert S.klom(oracle, unlearned, bins=2)[0] == pytest.approx(0.0)
    oracle = np.array([[0.0], [0.4], [1.0]])  # kept: {0, 0.4} -> O = (1, 0)
    unlearned = np.array([[0.0], [0.6], [1.0]])  # kept: {0, 0.6} -> U = (1/2, 1/2)
    assert S.klom(oracle, unlearned, bins=2)[0] == pytest.approx(math.log(2.0))
    # closed counts every sample: O = (2/3, 1/3), U = (1/3, 2/3)
    want = (2 / 3) * math.log(2.0) + (1 / 3) * math.log(0.5)
    assert S.klom(oracle, unlearned, bins=2, binning="closed")[0] == pytest.approx(want, abs=1e-12)


def test_klom_reference_corner_cases():
    eps = 1e-5
    # every oracle margin at the joint maximum (clipped at +100): no oracle sample is binned,
    # so the reference's KL is NaN; in the other direction the oracle side is empty instead
    oracle = np.full((3, 1), 150.0)
    unlearned = np.array([[99.0], [99.5], [100.0]])
    assert np.isnan(S.klom(oracle, unlearned, bins=2)[0])
    # U = (1, 0) over the kept {99, 99.5}; O all zero -> O' uniform over U's support -> 0
    assert S.klom(oracle, unlearned, bins=2, direction="unlearned||oracle")[0] == 0.0
    unlearned = np.array([[99.0], [99.9], [100.0]])  # kept: U = (1/2, 1/2): ln 2 - H(U) = 0
    got = S.klom(oracle, unlearned, bins=2, direction="unlearned||oracle", eps=eps)[0]
    assert got == pytest.approx(0.0, abs=1e-12)


def test_klom_grows_with_shift():
    rng = np.random.default_rng(3)
    oracle = rng.normal(size=(200, 40))
    means = [S.klom(oracle, rng.normal(s, 1.0, size=(200, 40))).mean() for s in (0, 1, 3, 10)]
    assert all(a < b for a, b in zip(means, means[1:])), means
    assert means[0] < 0.3  # sampling noise only (about 0.15 at K = M = 200, 20 bins)
    assert means[-1] > 9.0  # disjoint supports: close to ln(1 / eps) - H(P)
    assert means[-1] < math.log(1 / 1e-5) + 1e-9  # bounded by ln((1 + eps) / eps)


def test_klom_constant_samples_are_finite():
    same = S.klom(np.full((4, 2), 3.0), np.full((5, 2), 3.0))
    assert np.array_equal(same, [0.0, 0.0])
    eps = 1e-5
    # every unlearned sample at the joint maximum is dropped: U empty, O = (1, 0, ...)
    diff = S.klom(np.zeros((4, 1)), np.full((5, 1), 2.0), eps=eps)
    assert np.isfinite(diff).all()
    assert diff[0] == pytest.approx(0.0, abs=1e-12)
    diff = S.klom(np.zeros((4, 1)), np.full((5, 1), 2.0), eps=eps, binning="closed")
    assert diff[0] == pytest.approx(math.log((1 + eps) / eps), abs=1e-9)


def test_klom_clip_and_input_types():
    oracle = torch.full((6, 3), 500.0)
    unlearned = torch.full((4, 3), 1e6, dtype=torch.float64)
    assert np.array_equal(S.klom(oracle, unlearned, clip=100.0), np.zeros(3))  # both at 100
    assert (S.klom(oracle, unlearned, clip=1e7, binning="closed") > 11).all()


@pytest.mark.parametrize(
    ("oracle", "unlearned", "kwargs", "match"),
    [
        (np.zeros((3, 2)), np.zeros((3, 3)), {}, "disagree on N"),
        (np.zeros(3), np.zeros((3, 1)), {}, "dims"),
        (np.zeros((3, 2)), np.zeros((3, 2)), {"bins": 0}, "bins"),
        (np.zeros((3, 2)), np.zeros((3, 2)), {"eps": 0.0}, "eps"),
        (np.zeros((3, 2)), np.zeros((3, 2)), {"clip": -1.0}, "clip"),
        (np.zeros((3, 2)), np.zeros((3, 2)), {"direction": "p||q"}, "direction"),
        (np.zeros((3, 2)), np.zeros((3, 2)), {"binning": "histogram"}, "binning"),
        (np.zeros((3, 2)), np.full((3, 2), np.nan), {}, "NaN"),
        (np.zeros((0, 2)), np.zeros((3, 2)), {}, "empty"),
    ],
)
def test_klom_validation(oracle, unlearned, kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.klom(oracle, unlearned, **kwargs)


# ---------------------------------------------------------------------------------------
# population epsilon / FQS / MUC


def test_population_epsilon_identical_is_zero_and_fqs_one():
    rng = np.random.default_rng(4)
    x = rng.normal(size=500)
    for combine in ("max", "min"):
        assert S.population_epsilon(x, x.copy(), combine=combine) == 0.0
        assert S.population_epsilon(x, x.copy(), delta=1e-5, combine=combine) == 0.0
    assert S.forgetting_quality_score([0.0, 0.0]) == 1.0


def test_population_epsilon_hand_computed_sweep():
    # a = {2, 3, 4}, b = {1, 2, 3}; "x >= 3 => a": FPR = 1/3, FNR = 1/3 -> ln((2/3)/(1/3)) = ln 2;
    # "x >= 2 => a": FNR = 0, FPR = 2/3 -> only the finite term ln(1 / (2/3)) = ln 1.5
    for combine in ("max", "min"):
        got = S.population_epsilon([2, 3, 4], [1, 2, 3], combine=combine)
        assert got == pytest.approx(LN2, abs=1e-12)
    # a single zero rate uses the finite term: a = {0, 2, 2, 2}, b = {1, 1};
    # "x >= 2 => a": FNR = 1/4, FPR = 0 -> ln(1 / (1/4)) = ln 4
    assert S.population_epsilon([0, 2, 2, 2], [1, 1]) == pytest.approx(math.log(4.0), abs=1e-12)


def test_population_epsilon_combine_and_delta_hand_computed():
    # only t = 5: "x >= 5 => a" has FPR = 1/4, FNR = 1/2; the mirror rule gives eps <= 0
    a, b, t = [0, 0, 5, 5], [1, 1, 1, 5], [5.0]
    assert S.population_epsilon(a, b, thresholds=t) == pytest.approx(math.log(2.0))
    assert S.population_epsilon(a, b, thresholds=t, combine="min") == pytest.approx(math.log(1.5))
    # delta = 0.1: ln((0.9 - 0.25) / 0.5) = ln 1.3, ln((0.9 - 0.5) / 0.25) = ln 1.6
    assert S.population_epsilon(a, b, 0.1, t) == pytest.approx(math.log(1.6))
    assert S.population_epsilon(a, b, 0.1, t, combine="min") == pytest.approx(math.log(1.3))
    # the roles are symmetric: swapping a and b uses the mirror rule
    assert S.population_epsilon(b, a, thresholds=t) == pytest.approx(math.log(2.0))


def test_population_epsilon_perfect_separation_hits_cap():
    assert S.population_epsilon([5, 6, 7], [1, 2]) == S.EPSILON_CAP == 50.0
    assert S.population_epsilon([1, 2], [5, 6, 7]) == 50.0
    assert S.population_epsilon([5, 6, 7], [1, 2], cap=10.0) == 10.0
    fqs = S.forgetting_quality_score([S.EPSILON_CAP, 0.0])
    assert fqs == pytest.approx(2.0**-50, rel=1e-12)
    assert S.forgetting_quality_score(math.inf) == 0.0


def test_population_epsilon_monotone_in_separation():
    rng = np.random.default_rng(5)
    base = rng.normal(size=2000)
    noise = rng.normal(size=2000)
    for combine in ("max", "min"):
        eps = [S.population_epsilon(base, noise + s, combine=combine) for s in (0, 1, 2, 4, 8)]
        assert all(a < b for a, b in zip(eps, eps[1:])), (combine, eps)
        fqs = [S.forgetting_quality_score(e) for e in eps]
        assert all(a > b for a, b in zip(fqs, fqs[1:]))
    # independent samples of one distribution: tail-driven noise under "max", small under "min"
    assert S.population_epsilon(base, noise, combine="min") < 0.15
    assert S.population_epsilon(base, noise) < 2.5


def test_forgetting_quality_score_values_and_validation():
    assert S.forgetting_quality_score([1.0, 2.0]) == pytest.approx(0.25)
    assert S.forgetting_quality_score(1.0) == pytest.approx(0.5)
    assert S.forgetting_quality_score(torch.tensor([3.0])) == pytest.approx(0.125)
    for bad in ([], [-1.0], [np.nan]):
        with pytest.raises(ValueError):
            S.forgetting_quality_score(bad)


def _muc_loop_fqs(ent_u, ent_r, conf_u, conf_r, bins):
    """MUC's published rule, written as a plain loop (test oracle)."""
    delta, tiny = 1e-5, 1e-10
    best = []
    for u, r, lo, hi in ((ent_u, ent_r, 0.0, 2.5), (conf_u, conf_r, -2.5, 10.0)):
        u, r = np.clip(u, lo, hi), np.clip(r, lo, hi)
        attack = 0.0
        for pos, neg in ((u, r), (r, u)):
            for t in np.linspace(lo, hi, bins):
                tpr, fpr = np.mean(pos >= t), np.mean(neg >= t)
                fnr = 1.0 - tpr
                if fpr == 0 and fnr == 0:
                    fq = 0.0
                elif fpr >= 1 - delta or fnr >= 1 - delta:
                    fq = 1.0
                else:
                    sfp = np.clip(fpr, tiny, 1 - delta - tiny)
                    sfn = np.clip(fnr, tiny, 1 - delta - tiny)
                    lg1 = math.log(1 - delta - sfp) - math.log(sfn)
                    lg2 = math.log(1 - delta - sfn) - math.log(sfp)
                    fq = 2.0 ** (-max(0.0, min(lg1, lg2)))
                attack = max(attack, 1.0 - fq)
        best.append(attack)
    return 1.0 - max(best)


@pytest.mark.parametrize("shift", [0.0, 0.15, 0.6, 5.0])
@pytest.mark.parametrize("bins", [51, 201])
def test_muc_privacy_score_matches_muc_rule(shift, bins):
    rng = np.random.default_rng(6)
    ent_u = np.round(rng.uniform(0.2, 2.2, size=300), 2)
    ent_r = np.round(np.clip(rng.uniform(0.2, 2.2, size=250) - shift / 4, 0, None), 2)
    conf_u = np.round(rng.normal(2.0, 2.0, size=300), 2)
    conf_r = np.round(rng.normal(2.0 + shift, 2.0, size=250), 2)
    got = S.muc_privacy_score(ent_u, ent_r, conf_u, conf_r, bins=bins)
    want = _muc_loop_fqs(ent_u, ent_r, conf_u, conf_r, bins)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0.0 <= got <= 1.0


def test_muc_privacy_score_known_ends():
    x = np.linspace(0.1, 2.0, 100)
    assert S.muc_privacy_score(x, x, x * 4, x * 4) == 1.0
    separated = S.muc_privacy_score(x, x, np.full(100, -1.0), np.full(100, 8.0))
    assert separated == pytest.approx(2.0**-50)
    # values are clipped to the range first: -3 and -2.49 both fall at or below the lowest
    # threshold -2.5 (the next is -2.25), so MUC cannot tell them apart
    below = S.muc_privacy_score(x, x, np.full(100, -3.0), np.full(100, -2.49))
    assert below == 1.0 == _muc_loop_fqs(x, x, np.full(100, -3.0), np.full(100, -2.49), 51)
    assert S.muc_privacy_score(x, x, np.full(100, -2.49), np.full(100, -3.0)) == 1.0


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([1.0], []), {}, "empty"),
        (([[1.0]], [1.0]), {}, "dims"),
        (([1.0], [np.nan]), {}, "NaN"),
        (([1.0], [2.0]), {"delta": 1.0}, "delta"),
        (([1.0], [2.0]), {"combine": "mean"}, "combine"),
        (([1.0], [2.0]), {"cap": 0.0}, "cap"),
    ],
)
def test_population_epsilon_validation(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.population_epsilon(*args, **kwargs)


# ---------------------------------------------------------------------------------------
# NeurIPS 2023 challenge


def test_challenge_epsilon_hand_computed_single_threshold():
    # retrained {1,2,3,4} has the larger median (positive); best rule "conf >= t" with
    # t in (1, 2]: TPR = 3/4, FPR = 2/4 -> ln((1 - delta - 1/2) / (1/4)) = ln(2 - 4 delta)
    u = np.array([[0.0, 1.0, 2.0, 3.0]]).T
    r = np.array([[1.0, 2.0, 3.0, 4.0]]).T
    assert S.challenge_epsilons(u, r, delta=0.0)[0] == pytest.approx(LN2, abs=1e-12)
    assert S.challenge_epsilons(u, r)[0] == pytest.approx(math.log(2 - 4e-5), abs=1e-12)


def test_challenge_epsilon_double_threshold_rule():
    # equal medians; no single threshold does better than ln 2, but the interval [-2, 1.5]
    # holds every unlearned value and no retrained one: perfect separation -> cap
    u = np.array([[-1.0, 0.0, 0.0, 1.0]]).T
    r = np.array([[-10.0, -9.0, 9.0, 10.0]]).T
    assert S.challenge_epsilons(u, r, delta=0.0)[0] == 50.0
    assert S.challenge_epsilons(u, r, delta=0.0, cap=20.0)[0] == 20.0


def test_challenge_epsilons_match_reference_values():
    # values from the reference metric.py (google-deepmind/unlearning_evaluation) run on CPU
    # with these inputs; it computes rates in float32, hence the 1e-6 tolerance
    rng = np.random.default_rng(1)
    u, r = rng.normal(size=(16, 6)), rng.normal(size=(16, 6))
    ref = [1.0985589, 2.0794215, 2.1972067, 0.9808093, 1.3862543, 1.7917328]
    eps = S.challenge_epsilons(u, r)
    np.testing.assert_allclose(eps, ref, rtol=0, atol=1e-6)
    assert S.challenge_forget_score(eps, 16) == pytest.approx(0.20833333333333334)
    rng = np.random.default_rng(7)
    u, r = rng.normal(0.8, 0.6, size=(12, 5)), rng.normal(size=(12, 5))
    ref = [1.7917395, 1.945893, 2.0794265, 2.1972113, 2.1972113]
    eps = S.challenge_epsilons(u, r)
    np.testing.assert_allclose(eps, ref, rtol=0, atol=1e-6)
    assert S.challenge_forget_score(eps, 12) == pytest.approx(0.0875)
    # equal medians: the unlearned sample is the positive one (swapping gives other values)
    u = _cols(
        "0.526 -0.703 0.79 -0.288 -0.242 2.042 1.005 -1.612 "
        "-0.965 -0.419 0.17 0.188 1.447 -1.074 -0.073",
        "1.017 0.999 0.781 0.734 2.351 -0.272 -0.694 0.037 "
        "0.237 -1.611 -0.562 0.872 1.28 -1.723 -0.934",
        "-1.314 0.684 -0.009 -1.4 0.913 1.431 0.325 -0.784 "
        "0.326 -0.28 0.346 -1.081 -2.177 -0.546 -0.019",
    )
    r = _cols(
        "-0.073 0.647 -0.081 1.261 5.65 0.062 1.502 -0.388 "
        "-0.596 -0.613 -0.54 -0.381 0.55 -0.07 -0.259",
        "-0.062 0.137 0.055 0.237 0.355 0.553 2.279 -0.566 "
        "-0.318 0.532 -0.47 0.17 1.087 0.447 5.277",
        "0.835 -0.598 4.077 -0.596 -0.326 -0.635 0.341 -0.364 "
        "0.239 1.003 -0.176 1.291 -0.624 0.282 -0.019",
    )
    assert np.array_equal(np.median(u, 0), np.median(r, 0))
    ref = [0.6931096, 1.2527415, 1.0985621]
    np.testing.assert_allclose(S.challenge_epsilons(u, r), ref, rtol=0, atol=1e-6)


def test_challenge_same_distribution_vs_disjoint():
    rng = np.random.default_rng(8)
    u, r = rng.normal(size=(512, 8)), rng.normal(size=(512, 8))
    same = S.challenge_epsilons(u, r)
    # max over ~1.6e5 rules of 512-vs-512 samples: tail rules give eps about 1-2.4 even for one
    # distribution (the reference behaves identically), far below eps_max = 7 and the cap
    assert same.max() < 3.0
    score_same = S.challenge_forget_score(same, 512)
    assert 0.1 < score_same <= 0.5
    shifted = S.challenge_epsilons(rng.normal(1.5, 1.0, size=(512, 8)), r)
    assert shifted.mean() > same.mean() + 1.0
    assert S.challenge_forget_score(shifted, 512) < score_same
    disjoint = S.challenge_epsilons(rng.normal(20.0, 1.0, size=(512, 8)), r)
    assert np.array_equal(disjoint, np.full(8, 50.0))
    assert S.challenge_forget_score(disjoint, 512) == 0.0


def test_challenge_epsilon_peaky_and_constant_cases():
    rng = np.random.default_rng(9)
    r = rng.normal(size=(64, 1))
    peaky = 1e-4 * rng.normal(size=(64, 1))  # range ratio < 1%
    assert S.challenge_epsilons(peaky, r)[0] == 50.0
    assert S.challenge_epsilons(r, peaky)[0] == 50.0
    # not separable by any rule (the retrained sample contains the unlearned one), yet the
    # range ratio 0.009 < 1% sets the cap
    u = np.linspace(0.0, 0.009, 8)[:, None]
    r = np.concatenate([np.linspace(0.0, 0.009, 8), [1.0]])[:, None]
    assert S.challenge_epsilons(u, r)[0] == 50.0
    const = np.full((5, 2), 1.5)
    assert np.array_equal(S.challenge_epsilons(const, const.copy()), [0.0, 0.0])
    assert np.array_equal(S.challenge_epsilons(const, const + 1.0), [50.0, 50.0])


def test_challenge_forget_score_buckets():
    eps = np.array([0.0, 0.49, 0.5, 1.2, 6.9, 7.0, 50.0])
    points = [1.0, 1.0, 0.5, 0.25, 2.0**-13, 0.0, 0.0]
    assert math.ceil(math.log(511)) == 7
    assert S.challenge_forget_score(eps, 512) == pytest.approx(np.mean(points), abs=1e-15)
    # eps_max = ceil(ln 9) = 3 at 10 models
    assert S.challenge_forget_score([2.9], 10) == pytest.approx(2.0**-5)
    assert S.challenge_forget_score([3.0], 10) == 0.0
    assert S.challenge_forget_score(np.zeros(4), 512) == 1.0
    assert S.challenge_forget_score([math.inf], 512) == 0.0


def test_challenge_score_utility_adjustment():
    eps = [0.0, 0.6]  # forget score 0.75
    assert S.challenge_score(eps, 512, 0.9, 1.0, 0.8, 0.8) == pytest.approx(0.75 * 0.9)
    assert S.challenge_score(eps, 512, 90, 100, 85, 80) == pytest.approx(0.75 * 0.9 * 85 / 80)
    with pytest.raises(ValueError, match="ra_r"):
        S.challenge_score(eps, 512, 0.9, 0.0, 0.8, 0.8)
    with pytest.raises(ValueError, match="ta_u"):
        S.challenge_score(eps, 512, 0.9, 1.0, -0.1, 0.8)


@pytest.mark.parametrize(
    ("u", "r", "kwargs", "match"),
    [
        (np.zeros((4, 2)), np.zeros((4, 3)), {}, "disagree on N"),
        (np.zeros((1, 2)), np.zeros((4, 2)), {}, ">= 2 models"),
        (np.zeros(4), np.zeros((4, 1)), {}, "dims"),
        (np.zeros((4, 2)), np.zeros((4, 2)), {"delta": -1e-5}, "delta"),
        (np.zeros((4, 2)), np.full((4, 2), np.inf), {}, "inf"),
    ],
)
def test_challenge_epsilons_validation(u, r, kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.challenge_epsilons(u, r, **kwargs)


def test_challenge_forget_score_validation():
    with pytest.raises(ValueError, match="n_models"):
        S.challenge_forget_score([0.1], 1)
    with pytest.raises(ValueError, match=">= 0"):
        S.challenge_forget_score([-0.1], 512)
    with pytest.raises(ValueError, match="empty"):
        S.challenge_forget_score([], 512)


# ---------------------------------------------------------------------------------------
# JS divergence and ZRF


def test_js_divergence_known_values():
    assert S.js_divergence([0.2, 0.8], [0.2, 0.8]) == 0.0
    assert S.js_divergence([1.0, 0.0], [0.0, 1.0]) == pytest.approx(LN2, abs=1e-15)
    # p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4): JS = 3/4 ln(4/3)
    assert S.js_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(0.75 * math.log(4 / 3))


def test_js_divergence_rows_match_scipy_and_are_symmetric():
    rng = np.random.default_rng(10)
    p = rng.dirichlet(np.ones(7), size=(3, 20))
    q = rng.dirichlet(np.ones(7) * 0.3, size=(3, 20))
    got = S.js_divergence(torch.from_numpy(p), q)
    assert got.shape == (3, 20)
    want = jensenshannon(p, q, axis=-1) ** 2  # natural log by default
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got, S.js_divergence(q, p), rtol=0, atol=1e-15)
    assert (got >= 0).all() and (got <= LN2).all()


@pytest.mark.parametrize(
    ("p", "q", "match"),
    [
        ([0.5, 0.4], [0.5, 0.5], "sum to 1"),
        ([1.5, -0.5], [0.5, 0.5], "non-negative"),
        ([0.5, 0.5], [[0.5, 0.5]], "same shape"),
        ([0.5, np.nan], [0.5, 0.5], "NaN"),
    ],
)
def test_js_divergence_validation(p, q, match):
    with pytest.raises(ValueError, match=match):
        S.js_divergence(p, q)


def test_zrf_known_values():
    rng = np.random.default_rng(11)
    p = rng.dirichlet(np.ones(10), size=50)
    assert S.zrf(p, p.copy()) == 1.0
    eye = np.eye(4)
    assert S.zrf(eye, eye[[1, 2, 3, 0]]) == pytest.approx(1.0 - LN2, abs=1e-15)
    # mean over rows: one identical row (JS 0) and one disjoint row (JS ln 2)
    assert S.zrf(eye[:2], eye[[0, 2]]) == pytest.approx(1.0 - LN2 / 2)


@pytest.mark.filterwarnings("ignore:reduction")
def test_zrf_bad_teacher_code_variant():
    rng = np.random.default_rng(12)
    p = rng.dirichlet(np.ones(6), size=30)
    q = rng.dirichlet(np.ones(6), size=30)
    pt, qt = torch.from_numpy(p), torch.from_numpy(q)
    m = (pt + qt) / 2
    # the reference JSDiv, evaluated with torch: F.kl_div(input=log p, target=m), mean reduction
    js_code = 0.5 * torch.nn.functional.kl_div(torch.log(pt), m) + 0.5 * (
        torch.nn.functional.kl_div(torch.log(qt), m)
    )
    got = S.zrf(p, q, variant="bad_teacher_code")
    assert got == pytest.approx(1.0 - js_code.item(), abs=1e-12)
    assert abs(got - S.zrf(p, q)) > 1e-4
    # hand value, one row: p = (1/2, 1/2), q = (1, 0) -> m = (3/4, 1/4); q has a zero where
    # m does not, so KL(m || q) is infinite
    assert S.zrf([[0.5, 0.5]], [[1.0, 0.0]], variant="bad_teacher_code") == -math.inf


def test_zrf_validation():
    with pytest.raises(ValueError, match="variant"):
        S.zrf(np.eye(2), np.eye(2), variant="kl")
    with pytest.raises(ValueError, match="one shape"):
        S.zrf(np.eye(2), np.eye(3))
    with pytest.raises(ValueError, match="one shape"):
        S.zrf([0.5, 0.5], [0.5, 0.5])


def test_ulira_same_distribution_near_half_and_separated_is_one():
    from bench.metrics.scores import ulira_accuracy

    rng = np.random.default_rng(0)
    same = ulira_accuracy(rng.normal(0, 1, (64, 400)), rng.normal(0, 1, (64, 400)))
    assert abs(same - 0.5) < 0.05
    apart = ulira_accuracy(rng.normal(5, 1, (16, 50)), rng.normal(-5, 1, (16, 50)))
    assert apart == 1.0
    shifted = ulira_accuracy(rng.normal(1, 1, (32, 200)), rng.normal(0, 1, (32, 200)))
    assert 0.6 < shifted < 0.8  # Phi(0.5) = 0.69 for a unit shift with equal variances


def test_ulira_leave_one_out_hand_case_and_validation():
    from bench.metrics.scores import ulira_accuracy

    # one example: unlearned side {0, 1, 2}, retrained side {10, 11, 12}; every model, left
    # out, is closer to its own side's Gaussian
    assert ulira_accuracy([[0.0], [1.0], [2.0]], [[10.0], [11.0], [12.0]]) == 1.0
    with pytest.raises(ValueError, match="at least 3"):
        ulira_accuracy(np.zeros((2, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="examples"):
        ulira_accuracy(np.zeros((3, 4)), np.zeros((3, 5)))


def test_challenge_score_of_a_model_against_its_own_copies_is_maximal():
    from bench.metrics.scores import challenge_epsilons, challenge_forget_score, challenge_score

    rng = np.random.default_rng(3)
    one_model = rng.normal(0, 3, 40)  # one model's confidences on 40 forget examples
    copies = np.tile(one_model, (16, 1))  # 16 identical copies on each side
    eps = challenge_epsilons(copies, copies.copy())
    assert np.all(eps == 0.0)
    assert challenge_forget_score(eps, 16) == 1.0
    assert challenge_score(eps, 16, 90.0, 90.0, 80.0, 80.0) == 1.0
