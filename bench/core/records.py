"""Run records: one JSONL file per run, written atomically (temp file + rename).

Layout under the output root: ``records/<run_id>.jsonl``. Lines:

1. ``{"type": "meta", "run_id", "spec", "code_version", "hardware", "started", ...}``
2. tidy metric rows ``{"type": "metric", "run_id", "method", "dataset", "arch", "seed",
   "forget", "k", "request", "stage", "split", "metric", "value"}`` (floats, natural units:
   accuracies in percent, times in seconds, memory in MiB);
3. last line ``{"run_id": ..., "status": "done"}`` or, for a run that raised,
   ``{"run_id": ..., "status": "failed", "error": ..., "traceback": ...}``.

A rerun skips every run whose file is whole and ends with ``done`` (every line a JSON object:
``check_record``) and redoes failed, missing and damaged ones.

A write that fails because the disk is full, over quota or read-only (``DISK_ERRNOS``) is an
``OSError`` naming the file (torch.save's "unexpected pos" included); ``disk_full_message`` turns
it into the one line the CLI prints.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench.core.files import temp_file

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
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        named = _named_write_error(exc, path)
        if named is not None:
            raise named from exc
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
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        named = _named_write_error(exc, path)
        if named is not None:
            raise named from exc
        raise


#: errno values that mean the disk takes no more writes: full, over quota, read-only
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})

#: what torch.save raises (a RuntimeError) when the file cannot be written to the end
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "failed writing")


def _named_write_error(exc: BaseException, path: Path) -> OSError | None:
    """For a write of ``path`` that failed for lack of space (an ``OSError`` in
    ``DISK_ERRNOS`` or torch.save's short-write ``RuntimeError``), the ``OSError`` naming
    ``path``; ``None`` for any other failure."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))
    if isinstance(exc, RuntimeError) and any(m in str(exc) for m in _TORCH_WRITE_FAILED):
        # a short write of a local file: the disk filled up (or the quota ran out) mid-write
        reason = f"{os.strerror(errno.ENOSPC)} (torch.save: {str(exc).strip()})"
        return OSError(errno.ENOSPC, reason, str(path))
    return None


def disk_error(exc: BaseException | None) -> OSError | None:
    """The ``OSError`` in ``exc``'s chain (causes and contexts) that says the disk takes no
    more writes, or ``None``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def free_space(path: Path | str) -> str:
    """``"1.5 MiB free on /mnt/x"`` for the nearest existing folder of ``path``."""
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        where = where.parent
    try:
        free = float(shutil.disk_usage(where).free)
    except OSError as exc:
        return f"free space on {where} unknown ({exc.strerror or exc})"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            break
        free /= 1024
    return f"{free:.1f} {unit} free on {where}" if unit != "B" else f"{free:.0f} B free on {where}"


def disk_full_message(err: OSError, path: Path | str | None = None, outcome: str = "") -> str:
    """One line for a write that failed for lack of space: the full path, the reason, the free
    space, what happened to the run (``outcome``) and what to do."""
    target = Path(path or err.filename or ".").absolute()
    reason = err.strerror or os.strerror(err.errno or errno.ENOSPC)
    return (
        f"cannot write {target}: {reason} ({free_space(target)}); "
        + (f"{outcome}; " if outcome else "")
        + "no new runs were started and finished records are kept: free some space (or choose "
        "another --out / --cache-dir) and rerun the same command to resume"
    )


def write_records(out: Path, run_id: str, rows: Iterable[dict[str, Any]]) -> Path:
    path = record_path(out, run_id)
    text = "".join(json.dumps(r, allow_nan=True, default=_default) + "\n" for r in rows)
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        if exc.errno in DISK_ERRNOS and exc.filename != str(path):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
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
        last = json.loads(tail[-1]) if tail else None
        return last if isinstance(last, dict) else None
    except (OSError, json.JSONDecodeError, IndexError):
        return None


#: states of a record file: ``check_record``
RECORD_STATES = ("done", "failed", "missing", "damaged")


def read_record(path: Path) -> tuple[str, str, list[dict[str, Any]]]:
    """``(state, reason, rows)`` of one record file, read whole: ``missing`` (no file),
    ``damaged`` (unreadable, a line that is not a JSON object, or no final status line: cut
    short), else ``done`` or ``failed`` from the last line. ``reason`` says what is damaged;
    ``rows`` are the lines that are JSON objects."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return "missing", "", []
    except OSError as exc:
        return "damaged", f"unreadable: {exc.strerror or exc}", []
    rows: list[dict[str, Any]] = []
    problem = ""
    for n, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            problem = problem or f"line {n} is not valid JSON"
            continue
        if not isinstance(row, dict):
            problem = problem or f"line {n} is not a JSON object ({type(row).__name__})"
            continue
        rows.append(row)
    if problem:
        return "damaged", problem, rows
    if not rows:
        return "damaged", "empty file", rows
    status = rows[-1].get("status")
    if status in ("done", "failed"):
        return status, "", rows
    return "damaged", "no final status line (cut short)", rows


#: check_record's answers by (path, inode, size, mtime): a rerun's checks read each file once
_CHECKED: dict[tuple, tuple[str, str]] = {}


def check_record(path: Path) -> tuple[str, str]:
    """``(state, reason)`` of a record file (see ``read_record``), validating every line."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing", ""
    except OSError as exc:
        return "damaged", f"unreadable: {exc.strerror or exc}"
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _CHECKED:
        if len(_CHECKED) > 100_000:
            _CHECKED.clear()
        _CHECKED[key] = read_record(path)[:2]
    return _CHECKED[key]


def run_status(out: Path, run_id: str) -> str:
    """``done``, ``failed``, ``missing`` or ``damaged`` (only ``done`` is skipped on rerun)."""
    return check_record(record_path(out, run_id))[0]


def is_done(out: Path, run_id: str) -> bool:
    return run_status(out, run_id) == "done"


def iter_record_files(out: Path) -> Iterator[tuple[Path, str, str, list[dict[str, Any]]]]:
    """``(path, state, reason, rows)`` of every record file under ``out`` (recursively)."""
    for path in sorted(Path(out).rglob(f"{RECORDS_DIR}/*.jsonl")):
        yield (path, *read_record(path))


def iter_records(out: Path) -> Iterator[dict[str, Any]]:
    """Every line of every record file under ``out`` (recursively) that is a JSON object,
    skipping the others."""
    for _, _, _, rows in iter_record_files(out):
        yield from rows


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
