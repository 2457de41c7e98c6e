"""Traces over unlearning progress for every method (``bench.protocol.progress``): the loss-MIA AUC
on
constructed cases, the log-spaced schedule, a probe that changes nothing, and trace rows in the
records of a baseline that has no tracing code of its own."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bench.core.records import record_path
from bench.protocol.progress import ProgressProbe, loss_auc, probe_steps
from bench.protocol.stages import execute
from tests.helpers import tiny_spec


def test_loss_auc_known_answers():
    assert loss_auc([0.1, 0.2], [1.0, 2.0]) == 1.0  # every member has the lower loss
    assert loss_auc([1.0, 2.0], [0.1, 0.2]) == 0.0
    assert loss_auc([1.0, 1.0], [1.0, 1.0]) == 0.5  # ties count half
    # pairs (m, n): (0.1, 0.5) win, (0.1, 0.05) lose, (0.7, 0.5) lose, (0.7, 0.05) lose -> 1/4
    assert loss_auc([0.1, 0.7], [0.5, 0.05]) == pytest.approx(0.25)
    assert loss_auc([float("nan")], [1.0]) == 0.0  # a diverged member looks like a non-member


def test_probe_steps_are_log_spaced():
    assert sorted(probe_steps(100)) == [1, 2, 4, 8, 16, 32, 64]
    assert sorted(probe_steps(64)) == [1, 2, 4, 8, 16, 32, 64]
    assert len(probe_steps(10**6)) == 20  # one per doubling


class _View:
    """Stand-in with the View methods the probe calls, for data smaller than a probe."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def sample(self, n, seed):
        assert n >= len(self)
        return self

    def tensors(self):
        return self.x, self.y


def test_probe_traces_watched_optimizer_only_and_restores_modes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    other = nn.Linear(4, 3)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    views = {"forget": _View(x[:8], y[:8]), "retain": _View(x[8:], y[8:]), "test": _View(x, y)}
    points = []
    probe = ProgressProbe(model, views, lambda *p: points.append(p))
    model.train()
    model[1].eval()  # a frozen BN layer must stay frozen
    bn_stats = model[1].running_mean.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt_other = torch.optim.SGD(other.parameters(), lr=0.1)
    with probe:
        for _ in range(5):
            for o, m in ((opt, model), (opt_other, other)):
                o.zero_grad()
                nn.functional.cross_entropy(m(x), y).backward()
                o.step()
    opt.step()  # outside the context: not watched
    assert probe.steps == 5
    steps = sorted({p[0] for p in points})
    assert steps == [1, 2, 4]
    keys = {(p[1], p[2]) for p in points}
    assert keys == {
        ("forget", "accuracy"),
        ("retain", "accuracy"),
        ("test", "accuracy"),
        ("forget", "mia_auc"),
    }
    assert model.training and not model[1].training  # per-module flags restored
    assert torch.equal(model[1].running_mean, bn_stats)  # the probe ran in eval mode
    assert probe.seconds > 0


def test_traced_run_matches_untraced_model_and_traces_a_baseline(env, monkeypatch):
    """SCRUB has no tracing code: the protocol's probe still traces D_f/D_r/test accuracy and the
    MIA AUC from step 0 to the final step, and tracing does not change the unlearned model."""
    spec = tiny_spec("scrub", k=16, seed=0)
    assert execute(spec, env) == "done"
    rows = [json.loads(x) for x in record_path(env.out, spec.run_id).read_text().splitlines()]
    steps = next(r["value"] for r in rows if r.get("metric") == "steps")
    trace = [r for r in rows if r.get("stage") == "trace"]
    forget = [r for r in trace if r["metric"] == "accuracy" and r["split"] == "forget"]
    assert len(forget) >= 3 and forget[0]["step"] == 0 and forget[-1]["step"] == steps
    after = next(
        r["value"]
        for r in rows
        if r.get("stage") == "after" and r["split"] == "forget" and r["metric"] == "accuracy"
    )
    assert forget[-1]["value"] == pytest.approx(after)  # D_f is smaller than the probe subset
    mia = [r["value"] for r in trace if r["metric"] == "mia_auc"]
    assert len(mia) == len(forget) and all(0.0 <= v <= 1.0 for v in mia)

    # the same run with the probe switched off gives the same test accuracy, bit for bit
    import bench.protocol.stages as protocol

    class Off(ProgressProbe):
        def __enter__(self):
            return self

        def probe(self, model, step):
            pass

    monkeypatch.setattr(protocol, "ProgressProbe", Off)
    env2 = type(env)(out=env.out.parent / "untraced", cache=env.cache, device=env.device)
    assert execute(spec, env2) == "done"
    rows2 = [json.loads(x) for x in record_path(env2.out, spec.run_id).read_text().splitlines()]

    def finals(rs):
        return {
            (r["split"], r["metric"]): r["value"]
            for r in rs
            if r.get("stage") == "after" and r["metric"] in ("accuracy", "mia_loss")
        }

    assert finals(rows) == finals(rows2)
    assert not [r for r in rows2 if r.get("stage") == "trace" and r["metric"] == "mia_auc"]


def test_loss_auc_agrees_with_sklearn_on_ties():
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for _ in range(5):
        m, n = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 60).astype(float)
        want = roc_auc_score(np.r_[np.ones(40), np.zeros(60)], -np.r_[m, n])
        assert loss_auc(m, n) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("method", ["bad_teacher", "ssd"])
def test_wall_time_excludes_only_the_probes_during_the_method(env, method):
    """Short methods: the step-0 probe runs before the clock starts, so subtracting the probes'
    time can never make a method's wall time negative."""
    spec = tiny_spec(method, k=16, seed=0)
    assert execute(spec, env) == "done"
    rows = [json.loads(x) for x in record_path(env.out, spec.run_id).read_text().splitlines()]
    wall = next(r["value"] for r in rows if r.get("metric") == "wall_seconds")
    probes = next(r["value"] for r in rows if r.get("metric") == "trace_seconds")
    assert wall > 0 and probes > 0


def test_worker_warnings_start_a_line_of_their_own_on_a_terminal():
    """The launcher's bar is redrawn without a newline: a worker's warning used to be printed
    onto its end. On a terminal each record first clears the line; elsewhere it is unchanged."""
    import io
    import logging

    from bench.execution.lifeline import log_on_own_lines

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        for stream, prefix in ((Tty(), "\r\x1b[K"), (io.StringIO(), "")):
            log_on_own_lines(stream)
            logging.getLogger("bench.core.cache").warning("entry moved aside")
            root.removeHandler(root.handlers[-1])
            assert stream.getvalue() == prefix + "WARNING bench.core.cache: entry moved aside\n"
    finally:
        root.handlers[:] = before
