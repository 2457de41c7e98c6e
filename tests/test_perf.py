"""The benchmarks' hardware-relative measures (benchmarks/perf.py) on constructed cases."""

from __future__ import annotations

import os
import stat
import time

import torch
from torch import nn

from benchmarks.perf import GpuUtilization, bf16_peak_tflops, train_step_flops


def test_train_step_flops_counts_forward_and_backward_matmuls():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(5, 8), torch.randint(0, 4, (5,))
    # forward 2*5*8*16 + 2*5*16*4; backward: both weight gradients, and the input gradient of
    # the second layer only (x needs none)
    expected = (1280 + 640) + (1280 + 640 + 640)
    assert train_step_flops(model, x, y) == expected
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_bf16_peaks_by_device_name():
    assert bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bf16_peak_tflops("NVIDIA H200") == 989.4
    assert bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bf16_peak_tflops("Tesla T4") is None


def test_gpu_utilization_samples_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 42\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with GpuUtilization(interval=0.05) as util:
        time.sleep(0.3)
    assert util.samples and util.mean == 42.0


def test_gpu_utilization_without_nvidia_smi(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with GpuUtilization(interval=0.05) as util:
        time.sleep(0.1)
    assert util.mean is None and util.samples == []
