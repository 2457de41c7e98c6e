"""Run records: one JSONL file per run, written atomically (temp file + rename).

Layout under the output root: ``records/<run_id>.jsonl``. Lines:

1. ``{"type": "meta", "run_id", "spec", "code_version", "hardware", "started", ...}``
2. tidy metric rows ``{"type": "metric", "run_id", "method", "dataset", "arch", "seed",
   "forget", "k", "request", "stage", "split", "metric", "value"}`` (floats, natural units:
   accuracies in percent, times in seconds, memory in MiB);
3. last line ``{"run_id": ..., "status": "done"}`` or, for a run that raised,
   ``{"run_id": ..., "status": "failed", "error": ..., "traceback": ...}``.

A rerun skips every run whose file ends with ``done`` and redoes failed or missing ones.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench.files import temp_file

RECORDS_DIR = "records"


def record_path(out: Path, run_id: str) -> Path:
    return Path(out) / RECORDS_DIR / f"{run_id}.jsonl"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, rename: a
    reader sees the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_records(out: Path, run_id: str, rows: Iterable[dict[str, Any]]) -> Path:
    path = record_path(out, run_id)
    text = "".join(json.dumps(r, allow_nan=True, default=_default) + "\n" for r in rows)
    atomic_write_text(path, text)
    return path


def _default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def last_line(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read().decode(errors="replace").strip().splitlines()
        return json.loads(tail[-1]) if tail else None
    except (OSError, json.JSONDecodeError, IndexError):
        return None


def run_status(out: Path, run_id: str) -> str:
    """``done``, ``failed`` or ``missing``."""
    last = last_line(record_path(out, run_id))
    if last is None:
        return "missing"
    return "done" if last.get("status") == "done" else "failed"


def is_done(out: Path, run_id: str) -> bool:
    return run_status(out, run_id) == "done"


def iter_records(out: Path) -> Iterator[dict[str, Any]]:
    """Every line of every record file under ``out`` (recursively), skipping unreadable ones."""
    for path in sorted(Path(out).rglob(f"{RECORDS_DIR}/*.jsonl")):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        continue


@lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe`` of the harness checkout (with ``-dirty``), else the package version."""
    from bench import __version__

    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{__version__}+g{out}" if out else __version__
    except (OSError, subprocess.SubprocessError):
        return __version__


def hardware(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": str(device),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if getattr(device, "type", str(device)) == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
