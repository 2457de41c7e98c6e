"""Benchmarks (pytest-benchmark), outside the default test run:

    python -m pytest benchmarks/                      # everything, incl. the smoke suite
    python -m pytest benchmarks/ -k "not smoke"       # without the 2-minute smoke run

1. Pretraining epoch throughput: ours (uint8 data kept on the device, crop + flip in batches on
   the device; ``bench.models.train.train``) against a reference written like the papers' code (a
   torchvision-style dataset of uint8 arrays turned into PIL images, ``RandomCrop(32, 4)`` +
   ``RandomHorizontalFlip`` + ``ToTensor`` + ``Normalize`` per image, a ``DataLoader`` with
   workers), same model, optimizer, batch size and images, in the same process. Printed as a
   ratio. CIFAR-10 (the JPEG copy, from ``BENCH_DATA`` or ``../shared/data``) when present,
   else random CIFAR-shaped images; on the CPU a 2048-image subset and the small CNN, on a GPU
   all 50k images and ResNet-18. Ours runs as the harness does (bf16 autocast and
   channels_last on CUDA); the reference as the papers' code does (fp32). Also printed: the
   FLOPs our epoch achieves (``FlopCounterMode``: matmul and convolution, forward + backward)
   and, on a known GPU, their fraction of its datasheet bf16 dense peak.
2. Unlearning: wall time and time per optimizer step of every method on the smoke suite's
   digits setting (k = 32, seed 0), as the protocol records them.
3. Evaluation throughput: ``predict`` over the benchmark images; one ``evaluate`` of the
   cheap metrics.
4. The L2UL ADV step with its stop check read by the host after every step vs once per 8
   steps (deferred, with roll-back); the MAS penalty's gradient back-propagated vs fused.
5. The smoke suite, end to end, as a new user runs it.
6. On a GPU only: ``l2ul-cifar10``'s six L2UL-family methods end to end (120 runs, pretraining
   included) with the GPU's mean utilization (``nvidia-smi``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from benchmarks.conftest import RESULTS
from benchmarks.perf import GpuUtilization, bf16_peak_tflops, train_step_flops

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _cifar_root() -> Path | None:
    for base in (os.environ.get("BENCH_DATA"), ROOT.parent / "shared" / "data"):
        if base and (Path(base) / "cifar10-jpeg" / "cifar10_jpeg.tar.gz").is_file():
            return Path(base)
    return None


@pytest.fixture(scope="module")
def images(device, tmp_path_factory):
    """(x uint8 [N, 3, 32, 32], y int64 [N], source) for the pipeline benchmarks."""
    n = None if device.type == "cuda" else 2048
    root = _cifar_root()
    if root is not None:
        from bench.data import Locations, load_dataset

        cache = Path(os.environ.get("BENCH_CACHE") or tmp_path_factory.mktemp("cache"))
        b = load_dataset("cifar10", Locations(root, cache, False))
        x, y = b.train.x, b.train.targets
        src = "CIFAR-10 (JPEG copy)"
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (50_000,), generator=g)
        src = "random CIFAR-shaped images"
    if n is not None:
        x, y = x[:n], y[:n]
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
    return x.contiguous(), y.long().contiguous(), src


def _arch(device) -> str:
    return "resnet18_cifar" if device.type == "cuda" else "smallcnn"


def _model(device, mean=MEAN, std=STD):
    from bench.models.archs import build_model

    torch.manual_seed(0)
    return build_model(_arch(device), 10, (3, 32, 32), mean, std).to(device)


RECIPE = dict(epochs=1, batch_size=128, lr=0.05, augment="crop_flip")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def test_pretrain_epoch_ours(benchmark, images, device):
    from bench.core.spec import Recipe
    from bench.data.splits import TensorSplit, View
    from bench.models.train import train

    x, y, src = images
    view = View(TensorSplit(x, y), torch.arange(len(y)), device, "train")
    model = _model(device)
    recipe = Recipe(**RECIPE)
    train(model, view, recipe, seed=0)  # warm-up (device copy, kernels)

    def epoch():
        train(model, view, recipe, seed=1)
        _sync(device)

    benchmark.pedantic(epoch, rounds=3, iterations=1)
    ips = len(y) / benchmark.stats.stats.median
    RESULTS["pretrain epoch: ours"] = (ips, f"img/s ({_arch(device)}, {len(y)} {src})")
    assert ips > 0
    # hardware-relative: FLOPs of a training step (forward + backward) x images per second
    xb, yb = next(iter(view.loader(RECIPE["batch_size"])))
    per_image = train_step_flops(model, xb, yb) / xb.shape[0]
    tflops = per_image * ips / 1e12
    RESULTS["pretrain epoch: ours, achieved"] = (tflops, "TFLOP/s (matmul + conv, fwd + bwd)")
    peak = bf16_peak_tflops(torch.cuda.get_device_name(0)) if device.type == "cuda" else None
    if peak:
        RESULTS["pretrain epoch: ours, fraction of bf16 peak"] = (
            100 * tflops / peak,
            f"% of {peak:.0f} TFLOP/s (datasheet, dense)",
        )


class _PILDataset(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR10's __getitem__: HWC uint8 array -> PIL image -> transform."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.data = x.permute(0, 2, 3, 1).numpy()  # HWC, as torchvision keeps it
        self.targets = y.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def test_pretrain_epoch_reference(benchmark, images, device):
    import torchvision.transforms as T

    x, y, src = images
    transform = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )
    workers = min(4, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(
        _PILDataset(x, y, transform),
        batch_size=RECIPE["batch_size"],
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    # the same network; normalization already done by the transform
    model = _model(device, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    opt = torch.optim.SGD(model.parameters(), lr=RECIPE["lr"], momentum=0.9, weight_decay=5e-4)

    def epoch():
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)

    epoch()  # warm-up
    benchmark.pedantic(epoch, rounds=3, iterations=1)
    ips = len(y) / benchmark.stats.stats.median
    RESULTS["pretrain epoch: reference (DataLoader + PIL)"] = (
        ips,
        f"img/s ({workers} workers)",
    )
    assert ips > 0


def test_evaluation_throughput(benchmark, images, device):
    from bench.data.splits import TensorSplit, View
    from bench.models.train import predict

    x, y, _ = images
    view = View(TensorSplit(x, y), torch.arange(len(y)), device, "eval")
    model = _model(device).eval()
    predict(model, view)

    def run():
        predict(model, view)
        _sync(device)

    benchmark.pedantic(run, rounds=5, iterations=1)
    RESULTS["evaluation: predict"] = (len(y) / benchmark.stats.stats.median, "img/s")


# ---------------------------------------------------------------------------------------------
# unlearning and evaluation on the smoke suite's setting


@pytest.mark.parametrize("interval", [1, 8])
def test_l2ul_stop_check_interval(benchmark, images, device, interval):
    """The ADV loop of L2UL (a forget batch of 32 + an adversarial batch of 256 per step, the
    stop rule checked on all of D_f after every step) with the rule read by the host after
    every step (interval 1) or once per 8 steps with snapshots and roll-back (interval 8,
    the CUDA default; ``bench.unlearning.loops.DeferredStop``). The rule is never met here (targets
    the model does not predict), so both run the same number of steps."""
    from bench.core import runtime
    from bench.core.spec import Recipe
    from bench.data.splits import TensorSplit, View
    from bench.unlearning.loops import ForgetCheck, run_until_forgotten
    from bench.unlearning.method import Context

    x, y, _ = images
    forget = View(TensorSplit(x[:32], y[:32]), torch.arange(32), device, "forget")
    xa = x[32:288].to(device).float().div(255)
    ya = y[32:288].to(device)
    model = _model(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    xf, yf = forget.tensors()
    never = ForgetCheck(forget, targets=torch.full_like(yf, -1), relabel=True)
    epochs = 25 if device.type == "cuda" else 1

    def run():
        ctx = Context(device, 0, torch.Generator(), Recipe(), 10)

        def epoch(_e):
            model.train()
            for _ in range(8):
                with runtime.autocast(device):
                    logits = model(torch.cat([xf, xa]))
                    loss = (
                        -F.cross_entropy(logits[:32], yf, reduction="sum")
                        + F.cross_entropy(logits[32:], ya, reduction="sum")
                    ) / 288
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                yield

        run_until_forgotten(model, ctx, never, epochs, epoch, True, interval=interval)
        _sync(device)
        return ctx.steps

    run()  # warm-up
    steps = benchmark.pedantic(run, rounds=3, iterations=1)
    ms = 1000 * benchmark.stats.stats.median / steps
    RESULTS[f"L2UL step + stop check, host read every {interval}"] = (
        ms,
        f"ms/step ({_arch(device)}, {steps} steps)",
    )


@pytest.mark.parametrize("how", ["autograd", "fused"])
def test_mas_penalty_gradient(benchmark, device, how):
    """The MAS penalty's gradient for one L2UL step (mas_only, adv_mas): back-propagated through
    the penalty's value (the official code) or added to ``.grad`` with two fused foreach
    operations (``MASPenalty.add_grad``, what the harness does)."""
    from bench.unlearning.importance import MASPenalty

    model = _model(device)
    params = dict(model.named_parameters())
    omega = {n: torch.rand_like(p) for n, p in params.items()}
    penalty = MASPenalty(model, omega, 1.0)
    with torch.no_grad():
        for p in params.values():
            p.add_(0.01)
    for p in params.values():
        p.grad = torch.zeros_like(p)

    def run():
        if how == "autograd":
            penalty(model).backward()
        else:
            penalty.add_grad(model)
        _sync(device)

    run()
    benchmark.pedantic(run, rounds=20, iterations=5)
    RESULTS[f"MAS penalty gradient, {how}"] = (
        1000 * benchmark.stats.stats.median,
        f"ms per step ({_arch(device)}, {len(params)} parameter tensors)",
    )


@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    from bench.protocol.stages import Env

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return Env(out=tmp_path_factory.mktemp("out"), cache=tmp_path_factory.mktemp("cache"))


def _smoke_specs():
    from bench.suites.catalog import SUITES

    return {
        s.method: s
        for s in SUITES.get("smoke").expand(seeds=[0])
        if s.forget.kind == ("class" if s.method == "mnemonic" else "instance")
    }


@pytest.mark.parametrize("method", sorted(_smoke_specs()))
def test_unlearning_step(benchmark, method, smoke_env):
    import json

    from bench.core.records import record_path
    from bench.protocol.stages import execute

    spec = _smoke_specs()[method]
    out = smoke_env.out / method

    def run():
        env = type(smoke_env)(out=out, cache=smoke_env.cache, device=smoke_env.device)
        assert execute(spec, env, skip_done=False) == "done"

    benchmark.pedantic(run, rounds=1, iterations=1)
    rows = [json.loads(x) for x in record_path(out, spec.run_id).read_text().splitlines()]
    sec = next(r["value"] for r in rows if r.get("metric") == "wall_seconds")
    steps = next(r["value"] for r in rows if r.get("metric") == "steps")
    label = f"unlearn {method} ({spec.forget.label})"
    if steps:
        RESULTS[label] = (1000 * sec / steps, f"ms/step ({int(steps)} steps, {sec:.2f} s)")
    else:
        RESULTS[label] = (1000 * sec, "ms (no optimizer step)")


def test_evaluate_cheap_metrics(benchmark, smoke_env):
    from bench.data import carve, load_dataset, select_forget
    from bench.data.splits import View
    from bench.metrics import evaluate
    from bench.protocol.stages import pretrained_model
    from bench.suites.catalog import CHEAP_METRICS

    spec = _smoke_specs()["neggrad"]
    b = load_dataset("digits", smoke_env.locations)
    c = carve(b, spec.data)
    model, _ = pretrained_model(spec, c, smoke_env)
    tr = View(b.train, c.train, smoke_env.device, "train")
    forget = select_forget(b.train.targets[c.train], spec.forget, 0)
    keep = torch.ones(len(c.train), dtype=torch.bool)
    keep[forget] = False
    views = {
        "forget": tr.subset(forget),
        "retain": tr.subset(torch.nonzero(keep).flatten()),
        "test": View(b.test, c.test, smoke_env.device, "test"),
    }

    def run():
        return list(evaluate(model, views, b.num_classes, CHEAP_METRICS))

    rows = benchmark.pedantic(run, rounds=3, iterations=1)
    assert rows
    RESULTS["evaluation: cheap metrics on digits"] = (
        1000 * benchmark.stats.stats.median,
        f"ms per evaluation ({len(rows)} values)",
    )


def test_smoke_suite_wall_time(benchmark, tmp_path):
    """The main job as a new user runs it (fresh output and cache, report included)."""

    def run():
        out = tmp_path / f"smoke-{time.time_ns()}"
        subprocess.run(
            [sys.executable, "-m", "bench.run", "--suite", "smoke", "--out", str(out),
             "--no-progress", "--no-summary"],
            cwd=ROOT, check=True, capture_output=True, timeout=1200,
        )  # fmt: skip

    benchmark.pedantic(run, rounds=1, iterations=1)
    RESULTS["smoke suite, end to end"] = (benchmark.stats.stats.median, "s (goal: <= 120 s)")
    assert np.isfinite(benchmark.stats.stats.median)


#: the issue's end-to-end GPU goal: the six L2UL-family methods of ``l2ul-cifar10`` (the suite
#: also lists ``retrain``, 20 full retrainings, which the goal leaves out)
L2UL_SIX = ("finetune", "neggrad", "random_labels", "adv_only", "mas_only", "adv_mas")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a GPU benchmark (about 15 min)")
def test_l2ul_cifar10_suite_gpu(benchmark, tmp_path):
    """``l2ul-cifar10`` end to end on the CIFAR-10 JPEG copy: 6 methods x 4 k x 5 seeds = 120
    runs, pretraining included (fresh cache), report included; wall time and the GPU's mean
    utilization over the whole command."""
    from bench.core.records import run_status
    from bench.suites.catalog import SUITES

    root = _cifar_root()
    if root is None:
        pytest.skip("needs the CIFAR-10 JPEG copy (BENCH_DATA or ../shared/data)")
    out = tmp_path / "l2ul-cifar10"
    util = GpuUtilization()

    def run():
        with util:
            subprocess.run(
                [sys.executable, "-m", "bench.run", "--suite", "l2ul-cifar10",
                 "--method", ",".join(L2UL_SIX), "--data-root", str(root), "--out", str(out),
                 "--no-progress", "--no-summary"],
                cwd=ROOT, check=True, timeout=4 * 3600,
            )  # fmt: skip

    benchmark.pedantic(run, rounds=1, iterations=1)
    specs = [s for s in SUITES.get("l2ul-cifar10").expand() if s.method in L2UL_SIX]
    done = sum(run_status(out, s.run_id) == "done" for s in specs)
    minutes = benchmark.stats.stats.median / 60
    RESULTS["l2ul-cifar10 (6 methods, 120 runs), end to end"] = (
        minutes,
        f"min ({done}/{len(specs)} runs done; goal < 15 min on one H100)",
    )
    if util.mean is not None:
        RESULTS["l2ul-cifar10: mean GPU utilization"] = (util.mean, "% (nvidia-smi, every 0.5 s)")
    assert done == len(specs) == 120
