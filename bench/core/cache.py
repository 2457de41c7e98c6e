"""Verified cache entries: pretrained models, oracle models, decoded data.

Each entry is a ``torch.save``-d dict written atomically with a ``check`` field: the key the
entry was built for and a SHA-256 of its content (every tensor's dtype, shape and bytes, every
other value's ``repr``). Loading verifies both; an entry that fails to load, holds another key,
fails its hash or its caller's own validation is moved aside to ``<name>.corrupt`` with one
warning line, and the caller rebuilds it. Entries written before checks existed are accepted
when they load, their stored ``info.key`` (if any) matches and the caller's validation passes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.core.records import atomic_torch_save

log = logging.getLogger(__name__)


class DamagedEntry(Exception):
    """A cache entry that loads but is not what it should be."""


def content_digest(obj: Any) -> str:
    """SHA-256 of ``obj``'s content: nested dicts (keys in sorted order), lists, tuples,
    tensors and arrays (dtype, shape, bytes) and plain values (``repr``)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj: Any) -> None:
    if isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode() + b":")
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy())
    elif isinstance(obj, np.ndarray):
        h.update(f"A{obj.dtype.str}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    else:
        h.update(repr(obj).encode())


def save_entry(blob: dict[str, Any], path: Path, key: str) -> dict[str, Any]:
    """Write ``blob`` atomically to ``path`` with its check (``key`` and content hash); returns
    ``blob`` (without the check)."""
    atomic_torch_save({**blob, "check": {"key": key, "sha256": content_digest(blob)}}, path)
    return blob


def load_entry(
    path: Path, key: str, validate: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any] | None:
    """The verified entry at ``path`` (without its check), or ``None`` when there is none or it
    was damaged (then it has been moved aside: rebuild it). ``validate`` may raise to reject an
    entry that loads but does not fit (wrong shapes, a state dict of another model)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict):
            raise DamagedEntry(f"holds a {type(blob).__name__}, not a dict")
        check = blob.pop("check", None)
        info = blob.get("info")
        stored = check.get("key") if isinstance(check, dict) else None
        if stored is None and isinstance(info, dict):
            stored = info.get("key")
        if stored is not None and stored != key:
            raise DamagedEntry(f"stored key {stored} differs from the expected {key}")
        if check is not None and content_digest(blob) != check.get("sha256"):
            raise DamagedEntry("content hash differs from the stored one")
        if validate is not None:
            validate(blob)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, the fix is a rebuild
        quarantine(path, exc)
        return None
    return blob


def quarantine(path: Path, reason: Exception | str) -> Path:
    """Move a damaged entry aside to ``<name>.corrupt`` (replacing an older one) and say so in
    one line; returns where it went."""
    path = Path(path)
    text = str(reason).strip().splitlines()
    why = (text[0] if text else type(reason).__name__)[:200]
    if isinstance(reason, Exception) and not isinstance(reason, DamagedEntry):
        why = f"{type(reason).__name__}: {why}"
    dest = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, dest)
    except OSError:
        path.unlink(missing_ok=True)
    log.warning(
        "cache entry %s is damaged (%s); moved aside to %s, rebuilding", path, why, dest.name
    )
    return dest
