"""Conformance of ``mia_entropy_shadow_svc`` with Bad Teacher's membership attack:
github.com/vikram2000b/bad-teaching-unlearning @ f1aa988f71cccf1be6d50e0c6f7b2b905e4c9126
(``metrics.py``: ``entropy``, ``get_membership_attack_data``, ``get_membership_attack_prob``).

Restated below (``reference_attack``) from the reference's behaviour: the softmax entropy
(-sum p ln p over p > 0) of every retain row (label 1) and every test row (label 0), no
balancing and no subsampling, fits ``SVC(C=3, gamma="auto", kernel="rbf")``; the value is the
mean prediction on the forget rows' entropies, the fraction of D_f called member. (The
logistic regression in that file is commented out; SSD's copy uses it instead, see
``test_entropy_logreg_mia_ssd.py``.)
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.svm import SVC

from bench.metrics import METRICS, EvalInput, mia


def _entropy(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(1)


def reference_attack(retain_z, test_z, forget_z) -> float:
    x = np.concatenate([_entropy(retain_z), _entropy(test_z)])[:, None]
    y = np.concatenate([np.ones(len(retain_z)), np.zeros(len(test_z))])
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
    return clf.predict(_entropy(forget_z)[:, None]).mean()


class _View:
    def __init__(self, n: int):
        self.targets = torch.zeros(n, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)


def test_registered_entropy_svc_mia_equals_bad_teachers_attack():
    rng = np.random.default_rng(0)
    # 10 classes; retain confident (scale 3), test less so (1), forget in between; 3:1 sets
    z = {
        "retain": rng.normal(size=(300, 10)) * 3.0,
        "test": rng.normal(size=(100, 10)),
        "forget": rng.normal(size=(50, 10)) * 2.0,
    }
    want = reference_attack(z["retain"], z["test"], z["forget"])
    assert 0.0 < want < 1.0
    ev = EvalInput(
        model=None,
        views={k: _View(len(v)) for k, v in z.items()},
        num_classes=10,
        _logits={k: torch.from_numpy(v) for k, v in z.items()},
    )
    assert METRICS.get("mia_entropy_shadow_svc")(ev) == [("forget", "mia_entropy_shadow_svc", want)]
    # the pure function on the same entropies
    ent = [_entropy(z[k]) for k in ("retain", "test", "forget")]
    assert mia.entropy_mia_shadow(*ent, classifier="svc") == want
