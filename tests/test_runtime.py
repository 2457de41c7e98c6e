"""bench.core.runtime: precision, layout and compile switches, and the bf16 path end to end (run on
the CPU here, through CPU autocast: the code path CUDA takes by default)."""

from __future__ import annotations

import json

import pytest
import torch

from bench.core import runtime
from bench.core.records import record_path
from bench.protocol.stages import Env, execute
from tests.helpers import tiny_spec


@pytest.fixture(autouse=True)
def _reset():
    yield
    runtime.configure("auto", False)


def test_defaults_follow_the_device():
    runtime.configure()
    assert runtime.precision(torch.device("cpu")) == "fp32"
    assert runtime.precision(torch.device("cuda")) == "bf16"
    with runtime.autocast(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
    runtime.configure("bf16")
    with runtime.autocast(torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    runtime.configure("fp32")
    assert runtime.precision(torch.device("cuda")) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        runtime.configure("fp16")


def test_forward_after_an_update_inside_the_method_region_sees_the_new_weights():
    """Issue #14: the protocol opens one autocast region around the whole method call. With
    autocast's weight cache on, the bf16 copy of each parameter lived as long as that region,
    so after ``optimizer.step()`` or ``p.copy_()`` every forward pass still saw the first
    pass's weights (an ``nn.Linear``'s output did not change over 3 SGD steps)."""
    runtime.configure("bf16")
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model, x = torch.nn.Linear(6, 3), torch.randn(16, 6)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)

    def fp32_output():
        with runtime.fp32():
            return torch.nn.functional.linear(x, model.weight, model.bias).detach()

    outputs = []
    with runtime.autocast(cpu):  # the protocol's region around the method
        for _ in range(3):
            with runtime.autocast(cpu):  # bench.models.train's region per step, nested
                out = model(x)
            assert out.dtype == torch.bfloat16
            # bf16 rounding of inputs and weights only: the current weights, not old ones
            torch.testing.assert_close(out.float(), fp32_output(), atol=0.05, rtol=0.02)
            outputs.append(out.detach().float())
            opt.zero_grad()
            out.float().square().mean().backward()
            opt.step()
        with torch.no_grad():
            model.weight.copy_(-model.weight)  # an in-place copy, as Mnemonic's candidates do
        torch.testing.assert_close(model(x).float(), fp32_output(), atol=0.05, rtol=0.02)
        with runtime.fp32():  # decisions: plain fp32 inside the bf16 region
            assert model(x).dtype == torch.float32
            assert torch.equal(model(x), fp32_output())
    assert all((a - b).abs().max() > 0.1 for a, b in zip(outputs, outputs[1:]))


def test_shared_models_train_in_the_pretrain_precision_even_inside_a_bf16_region():
    """``runtime.shared``: the pretrained original and the oracles train in
    ``--pretrain-precision`` (fp32 by default) whatever ``--precision`` is."""
    cpu = torch.device("cpu")
    runtime.configure("bf16")
    assert runtime.pretrain_precision(cpu) == "fp32"
    with runtime.autocast(cpu):  # e.g. an oracle built while a bf16 run is scored
        with runtime.shared(cpu):
            assert runtime.precision(cpu) == "fp32"
            assert not torch.is_autocast_enabled("cpu")
            with runtime.autocast(cpu):  # bench.models.train's region per step: a no-op now
                assert not torch.is_autocast_enabled("cpu")
        assert runtime.precision(cpu) == "bf16" and torch.is_autocast_enabled("cpu")
    runtime.configure("fp32", pretrain_precision="bf16")
    with runtime.shared(cpu), runtime.autocast(cpu):
        assert torch.is_autocast_enabled("cpu")
    runtime.configure("fp32", pretrain_precision="auto")
    assert runtime.pretrain_precision(cpu) == "fp32"
    assert runtime.pretrain_precision(torch.device("cuda")) == "bf16"
    with pytest.raises(ValueError, match="pretrain precision"):
        runtime.configure(pretrain_precision="fp16")


def test_bf16_runs_start_from_the_fp32_original_unless_asked(tmp_path, monkeypatch):
    """Issue #14: a bf16 run and an fp32 run of one spec start from the same pretrained model
    (one cache entry, trained without autocast); ``pretrain_precision="bf16"`` trains another
    one under autocast, under a key of its own, and says so in the run's metadata."""
    import bench.protocol.stages as protocol
    from bench.core.spec import Recipe
    from bench.data import carve, load_dataset

    seen = []
    real_train = protocol.train

    def spy(*args, **kwargs):
        seen.append(
            runtime.precision(torch.device("cpu"))
        )  # what bench.models.train's autocast uses
        return real_train(*args, **kwargs)

    monkeypatch.setattr(protocol, "train", spy)
    spec = tiny_spec("finetune", k=8, seed=1, recipe=Recipe(epochs=2, batch_size=32, lr=0.05))
    cache = tmp_path / "cache"
    models, keys = {}, {}
    for name, kw in {
        "fp32": {"precision": "fp32"},
        "bf16": {"precision": "bf16"},
        "bf16+bf16": {"precision": "bf16", "pretrain_precision": "bf16"},
    }.items():
        env = Env(out=tmp_path / name, cache=cache, **kw)
        runtime.configure(env.precision, env.compile, env.pretrain_precision)
        carved = carve(load_dataset(spec.data.name, env.locations), spec.data)
        model, info, _ = protocol.pretrained_with_artifacts(spec, carved, env)
        models[name], keys[name] = model.state_dict(), info["key"]
        assert runtime.describe(env.device)["pretrain_precision"] == kw.get(
            "pretrain_precision", "fp32"
        )
    assert seen == ["fp32", "bf16"]  # trained twice: fp32 (once for both), then bf16
    assert keys["fp32"] == keys["bf16"] != keys["bf16+bf16"]
    for k, v in models["fp32"].items():
        assert torch.equal(v, models["bf16"][k])
    assert any(not torch.equal(v, models["bf16+bf16"][k]) for k, v in models["fp32"].items())


def test_channels_last_only_for_cuda_and_4d():
    x = torch.zeros(2, 3, 8, 8)
    assert runtime.to_layout(x, torch.device("cpu")) is x
    y = runtime.to_layout(x, torch.device("cuda"))  # the layout change itself runs anywhere
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, y)
    v = torch.zeros(3, 8)
    assert runtime.to_layout(v, torch.device("cuda")) is v
    m = torch.nn.Conv2d(3, 4, 3)
    runtime.to_layout(m, torch.device("cuda"))
    assert m.weight.is_contiguous(memory_format=torch.channels_last)


def _methods():
    from bench.unlearning.method import METHODS

    return METHODS.list()


@pytest.fixture(scope="module")
def bf16_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bf16-cache")


#: methods whose end-to-end bf16 run takes over 8 s on 2 cores (CPU bf16 is emulated, about
#: 10x slower than fp32): run with ``-m slow``; their bf16 decisions are checked against fp32
#: by tests/test_precision_equivalence.py
SLOW_BF16 = {"adv_mas", "adv_only", "nabla_tau", "neggrad", "mnemonic", "retrain", "scrub"}


@pytest.mark.parametrize(
    "method",
    [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_BF16 else m for m in _methods()],
)
def test_bf16_runs_end_to_end(tmp_path, bf16_cache, method):
    """Every method runs under bf16 autocast (what CUDA gets by default) and gives a sane model."""
    from bench.core.spec import ForgetSpec
    from bench.unlearning.method import METHODS

    env = Env(out=tmp_path / "o", cache=bf16_cache, precision="bf16")
    kinds = METHODS.entry(method).meta.get("forget_kinds") or ("instance",)
    forget = ForgetSpec("class", classes=(0,)) if "instance" not in kinds else None
    kw = {"forget": forget} if forget else {}
    if method == "nabla_tau":
        from bench.core.spec import DataSpec

        kw["data"] = DataSpec("synthetic", val_fraction=0.2)
    spec = tiny_spec(method, k=16, seed=1, **kw)
    assert execute(spec, env) == "done"
    rows = [json.loads(x) for x in record_path(env.out, spec.run_id).read_text().splitlines()]
    assert rows[0]["runtime"]["precision"] == "bf16"
    assert rows[0]["runtime"]["pretrain_precision"] == "fp32"  # the default: recorded
    after = {(r["split"], r["metric"]): r["value"] for r in rows if r.get("stage") == "after"}
    assert 0.0 <= after[("test", "accuracy")] <= 100.0
    before = next(
        r["value"]
        for r in rows
        if r.get("stage") == "before" and r["split"] == "test" and r["metric"] == "accuracy"
    )
    assert before > 60.0
    if method == "neggrad":
        cap = next(r["value"] for r in rows if r.get("metric") == "cap_hit")
        assert after[("forget", "accuracy")] == 0.0 or cap == 1.0
