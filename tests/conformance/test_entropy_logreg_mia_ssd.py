"""Conformance of ``mia_entropy_shadow`` with SSD's membership attack:
github.com/if-loops/selective-synaptic-dampening @ cdfdc0e35c1908e032a6e150d882b0fa17833f85
(``src/metrics.py``: ``entropy``, ``get_membership_attack_data``,
``get_membership_attack_prob``).

The reference fits ``LogisticRegression(class_weight="balanced", solver="lbfgs",
multi_class="multinomial")`` on the softmax entropies of every retain row (label 1) and every
test row (label 0) and returns the mean prediction on the forget rows. ``multi_class`` no
longer exists in scikit-learn, so the multinomial fit is restated below
(``reference_attack``) by minimising its objective with scipy: two class rows (w_k, b_k),
sample weights n / (2 n_class), ``sum_i s_i CE_i + ||W||^2 / (2 C)`` with C = 1 and the
intercepts unpenalised; scikit-learn (< 1.5) then kept row 1 for a binary problem and
predicted member where ``w_1 x + b_1 > 0``. The entropies are hand-made so that a binary
fit with C = 1 (what the harness ran before) calls one more forget row a member.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax

from bench.metrics import METRICS, EvalInput, mia

RETAIN = [0.0, 0.01, 0.02, 0.04, 0.25, 0.26, 0.28, 0.28, 0.41, 0.44, 0.45, 0.58]
TEST = [0.35, 0.58, 0.62, 3.94, 3.96, 5.21]
FORGET = [0.1, 0.5, 0.88, 2.0]  # 0.88 lies between the C = 2 (0.82) and C = 1 (0.94) thresholds


def reference_attack(retain, test, forget, c: float = 1.0) -> float:
    x = np.concatenate([retain, test])
    y = np.concatenate([np.ones(len(retain)), np.zeros(len(test))]).astype(int)
    weight = np.where(y == 1, len(y) / (2 * len(retain)), len(y) / (2 * len(test)))
    onehot = np.eye(2)[y]

    def objective(theta):
        w, b = theta[:2], theta[2:]
        logp = log_softmax(x[:, None] * w + b, axis=1)
        resid = weight[:, None] * (np.exp(logp) - onehot)
        loss = -(weight * (logp * onehot).sum(1)).sum() + (w @ w) / (2 * c)
        return loss, np.concatenate([(resid * x[:, None]).sum(0) + w / c, resid.sum(0)])

    res = minimize(objective, np.zeros(4), jac=True, method="L-BFGS-B", options={"gtol": 1e-12})
    w1, b1 = res.x[1], res.x[3]
    return float((w1 * np.asarray(forget) + b1 > 0).mean())


def test_entropy_logreg_mia_equals_ssds_multinomial_fit():
    want = reference_attack(RETAIN, TEST, FORGET)
    assert want == 0.5  # 0.1 and 0.5 are members, 0.88 and 2.0 are not
    assert mia.entropy_mia_shadow(RETAIN, TEST, FORGET) == want


class _View:
    def __init__(self, n: int):
        self.targets = torch.zeros(n, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)


def test_registered_entropy_mia_equals_ssds_attack_on_logits():
    rng = np.random.default_rng(1)
    z = {
        "retain": rng.normal(size=(200, 10)) * 3.0,
        "test": rng.normal(size=(80, 10)),
        "forget": rng.normal(size=(40, 10)) * 2.0,
    }
    ent = {}
    for k, v in z.items():
        logp = log_softmax(v, axis=1)
        ent[k] = -(np.exp(logp) * logp).sum(1)
    want = reference_attack(ent["retain"], ent["test"], ent["forget"])
    ev = EvalInput(
        model=None,
        views={k: _View(len(v)) for k, v in z.items()},
        num_classes=10,
        _logits={k: torch.from_numpy(v) for k, v in z.items()},
    )
    assert METRICS.get("mia_entropy_shadow")(ev) == [("forget", "mia_entropy_shadow", want)]
