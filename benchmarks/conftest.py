"""Shared pieces of the benchmarks: the machine, the data, and a summary printed at the end.

Run: ``python -m pytest benchmarks/`` (see docs/performance.md). Numbers each
benchmark measures go into ``RESULTS`` and are printed, with the ratio of our pretraining
epoch to the reference pipeline's, in the terminal summary.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
import torch

#: name -> (value, unit), filled by the benchmarks, printed at the end
RESULTS: dict[str, tuple[float, str]] = {}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU, {torch.get_num_threads()} threads"
    )
    return f"{dev}; {os.cpu_count()} x {cpu}; torch {torch.__version__}"


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("unlearning-bench performance")
    tr.write_line(f"machine: {machine()}")
    for name, (value, unit) in RESULTS.items():
        tr.write_line(f"{name:58s} {value:12.2f} {unit}")
    ours = RESULTS.get("pretrain epoch: ours")
    ref = RESULTS.get("pretrain epoch: reference (DataLoader + PIL)")
    if ours and ref:
        tr.write_line(
            f"{'RATIO pretraining throughput, ours / reference':58s} {ours[0] / ref[0]:12.2f} x"
        )
    every, deferred = (RESULTS.get(f"L2UL step + stop check, host read every {n}") for n in (1, 8))
    if every and deferred:
        tr.write_line(
            f"{'RATIO L2UL step time, read every step / every 8':58s} "
            f"{every[0] / deferred[0]:12.2f} x"
        )
    autograd, fused = (RESULTS.get(f"MAS penalty gradient, {h}") for h in ("autograd", "fused"))
    if autograd and fused:
        tr.write_line(
            f"{'RATIO MAS penalty gradient, autograd / fused':58s} {autograd[0] / fused[0]:12.2f} x"
        )
