"""Hardware-relative measures for the benchmarks: FLOPs of a training step, the fraction of the
GPU's bf16 peak they reach, and the GPU's utilization while a command runs."""

from __future__ import annotations

import shutil
import subprocess
import threading

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

#: dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s, matched
#: against ``torch.cuda.get_device_name()`` in this order
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),  # SXM (HBM3)
    ("A100", 312.0),
    ("L40S", 362.1),
    ("A10", 125.0),
)


def bf16_peak_tflops(device_name: str) -> float | None:
    """The datasheet bf16 dense peak for a device name, ``None`` when unknown."""
    for key, peak in BF16_PEAK_TFLOPS:
        if key in device_name:
            return peak
    return None


def train_step_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one training step (forward, cross-entropy, backward) on batch ``(x, y)``,
    counted by PyTorch's ``FlopCounterMode`` (matrix products and convolutions: what tensor
    cores run). Gradients are cleared afterwards; the model's parameters are not changed."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


class GpuUtilization:
    """Samples the GPU's utilization (% of time a kernel ran, ``nvidia-smi``) in a thread while
    active: ``with GpuUtilization() as u: ...; u.mean``. ``mean`` is ``None`` without
    ``nvidia-smi`` or samples."""

    def __init__(self, interval: float = 0.5, index: int = 0):
        self.interval, self.index = interval, index
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> float | None:
        out = subprocess.run(
            ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        try:
            return float(out.stdout.strip().splitlines()[0])
        except (IndexError, ValueError):
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is not None:
                self.samples.append(value)
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuUtilization:
        if shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None
