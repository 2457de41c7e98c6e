"""The stop rule read by the host once per few checks (``bench.unlearning.loops.DeferredStop``): the
roll-back to the first passing check gives exactly the model, step count, epochs and traces of
a per-step check, on a constructed case and on the real methods."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import bench.unlearning.loops as unlearning
from bench.core.records import record_path
from bench.core.spec import Recipe
from bench.protocol.stages import execute
from bench.unlearning.loops import DeferredStop, run_until_forgotten
from bench.unlearning.method import Context
from tests.helpers import tiny_spec
from tests.test_l2ul import _with_hp
from tests.test_methods import _call


class CountdownCheck:
    """A stand-in for ForgetCheck: ``hits`` = max(0, goal - w) for the model's single weight
    w, as a device tensor (no host read)."""

    def __init__(self, goal: float):
        self.goal = goal
        self.targets = torch.zeros(10)
        self.x = torch.zeros(1)

    def hits(self, model):
        return (self.goal - model.weight.detach().sum()).clamp_min(0).long()


def _toy(goal: float, interval: int, max_epochs=100, steps_per_epoch=3, every_step=True):
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    model.register_buffer("count", torch.zeros((), dtype=torch.long))
    ctx = Context(torch.device("cpu"), 0, torch.Generator(), Recipe(), 2)

    def epoch(_e):
        for _ in range(steps_per_epoch):
            with torch.no_grad():
                model.weight += 1.0
                model.count += 1
            yield

    reads = []
    original = DeferredStop.resolve

    def counting(self):
        reads.append(len(self.pending))
        return original(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DeferredStop, "resolve", counting)
        run_until_forgotten(
            model, ctx, CountdownCheck(goal), max_epochs, epoch, every_step, interval=interval
        )
    return model, ctx, [n for n in reads if n]


@pytest.mark.parametrize("interval", [1, 2, 4, 7])
def test_stop_rolls_back_to_the_first_passing_step(interval):
    model, ctx, reads = _toy(goal=5, interval=interval)
    assert float(model.weight.detach()) == 5.0 and int(model.count) == 5  # buffers rolled back too
    assert ctx.steps == 5 and ctx.extra["epochs"] == 2 and not ctx.cap_hit
    assert ctx.rewound == (5 % interval != 0)
    unmet = [(p["step"], p["value"]) for p in ctx.traces if p["metric"] == "objective_unmet"]
    assert unmet == [(s, 10.0 * (5 - s)) for s in range(6)]  # one point per real check
    # one read for the initial check, then one per `interval` checks
    assert len(reads) == 1 + -(-5 // interval)
    assert reads[0] == 1 and all(n <= interval for n in reads)


def test_checks_per_epoch_are_read_once_interval_steps_have_passed():
    # checks after epochs of 2 steps (steps 2, 4, 6, ...), a read once 5 steps have passed:
    # the read at step 6 sees steps 2, 4, 6; the goal was met at step 4 (w = 4 >= 3)
    model, ctx, reads = _toy(goal=3, interval=5, steps_per_epoch=2, every_step=False)
    assert reads == [1, 3]
    assert ctx.steps == 4 and ctx.extra["epochs"] == 2 and ctx.rewound
    assert float(model.weight.detach()) == 4.0 and int(model.count) == 4
    # epochs longer than the interval: every check is read at once, nothing to roll back
    model, ctx, reads = _toy(goal=7, interval=2, steps_per_epoch=4, every_step=False)
    assert reads == [1, 1, 1] and ctx.steps == 8 and not ctx.rewound


def test_cap_with_a_partial_window_reads_the_last_checks():
    # 2 epochs x 3 steps = 6 steps; the goal is met at the very last step, inside a window of 4
    model, ctx, _ = _toy(goal=6, interval=4, max_epochs=2)
    assert ctx.steps == 6 and not ctx.cap_hit and ctx.extra["epochs"] == 2
    model, ctx, _ = _toy(goal=50, interval=4, max_epochs=2)
    assert ctx.cap_hit and ctx.steps == 6 and float(model.weight.detach()) == 6.0
    assert not ctx.rewound and ctx.extra["epochs"] == 2


def test_rewind_drops_later_trace_points():
    ctx = Context(torch.device("cpu"), 0, torch.Generator(), Recipe(), 2)
    for s in range(6):
        ctx.steps = s
        ctx.trace("accuracy", s)
    ctx.rewind(3)
    assert ctx.steps == 3 and ctx.rewound
    assert [p["step"] for p in ctx.traces] == [0, 1, 2, 3]


def test_interval_is_one_on_the_cpu_and_bounded_by_memory(monkeypatch):
    model = nn.Linear(1000, 1000)  # 4 MB of parameters
    assert unlearning.check_interval(model, torch.device("cpu")) == 1
    assert unlearning.check_interval(model, torch.device("cuda")) == unlearning.CUDA_CHECK_INTERVAL
    monkeypatch.setattr(unlearning, "SNAPSHOT_BUDGET_BYTES", 3 * 4_004_000)
    assert unlearning.check_interval(model, torch.device("cuda")) == 3
    monkeypatch.setattr(unlearning, "SNAPSHOT_BUDGET_BYTES", 10)
    assert unlearning.check_interval(model, torch.device("cuda")) == 1


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "name,hp",
    [
        ("adv_only", {"adv_batch": 16}),  # checked after every step
        ("adv_mas", {"adv_batch": 16}),
        ("neggrad", {"forget_batch": 4}),  # checked after every pass (4 steps)
        ("random_labels", {}),  # draws random labels inside the loop
    ],
)
def test_methods_give_the_same_model_with_deferred_reads(name, hp, setup, monkeypatch):
    _with_hp(monkeypatch, name, **hp)
    ref_model, _, _, ref, _ = _call(name, setup, seed=3)
    ref_state = _state(ref_model)
    rolled_back = False
    # the last interval is one step more than the run takes: its first read comes after the
    # passing check, so it always rolls back (whichever step the rule passes at, which may
    # change with numerics), at the cost of one check's worth of extra steps
    for interval in (2, 3, 5, ref.steps + 1):
        monkeypatch.setattr(unlearning, "check_interval", lambda m, d, i=interval: i)
        model, _, _, ctx, _ = _call(name, setup, seed=3)
        state = _state(model)
        assert all(torch.equal(ref_state[k], state[k]) for k in ref_state), (name, interval)
        assert (ctx.steps, ctx.cap_hit, ctx.extra) == (ref.steps, ref.cap_hit, ref.extra)
        assert ctx.traces == ref.traces
        rolled_back |= ctx.rewound
    assert ref.steps > 1 and not ref.rewound
    assert rolled_back  # some interval stopped inside a window and rolled back


def test_progress_trace_ends_at_the_rolled_back_step(env, monkeypatch):
    monkeypatch.setattr(unlearning, "check_interval", lambda m, d: 128)
    spec = tiny_spec("adv_only", k=16, seed=1)
    assert execute(spec, env) == "done"
    rows = [json.loads(x) for x in record_path(env.out, spec.run_id).read_text().splitlines()]
    steps = next(r["value"] for r in rows if r.get("metric") == "steps")
    trace = [r for r in rows if r.get("stage") == "trace"]
    assert 0 < steps < 128  # stopped inside the first window: speculative steps were taken
    assert max(r["step"] for r in trace) == steps
    final = [r for r in trace if r["step"] == steps and r["metric"] == "accuracy"]
    after = {
        r["split"]: r["value"]
        for r in rows
        if r.get("stage") == "after" and r["metric"] == "accuracy"
    }
    assert next(r["value"] for r in final if r["split"] == "forget") == pytest.approx(0.0)
    assert after["forget"] == pytest.approx(0.0)
