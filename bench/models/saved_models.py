"""``--save-model``: each finished run's unlearned weights, kept so that any run can be scored
again (``python -m bench.eval``) or inspected later.

Layout under the output root, both files written atomically (temp file + rename):

* ``models/<run_id>.pt``: the model's full state dict (``bench.models.archs.Classifier``: the input
  normalization ``norm.*`` and the network ``net.*``), CPU tensors in the standard memory
  layout, ``torch.save``-d as a plain dict, so ``torch.load(path, weights_only=True)`` reads
  it and ``bench.models.checkpoint`` loads it (``--checkpoint``, ``bench.eval --unlearned``);
* ``models/<run_id>.json``: the run's spec (``RunSpec.to_dict()``), the code version, the
  ``.pt`` file's sha256 (as ``sha256sum`` prints it) and its layout.

The ``.pt`` is written first and the ``.json`` last, both before the run's record: a run whose
record says ``done`` has both files. A continual run keeps its final model.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.core.spec import RunSpec

MODELS_DIR = "models"
LAYOUT = "state_dict of bench.models.archs.Classifier (norm.* + net.*), CPU tensors"


def model_paths(out: Path, run_id: str) -> tuple[Path, Path]:
    """``(OUT/models/<run_id>.pt, OUT/models/<run_id>.json)``."""
    base = Path(out) / MODELS_DIR / run_id
    return base.with_suffix(".pt"), base.with_suffix(".json")


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict as contiguous CPU tensors, without the ``_orig_mod.`` /
    ``module.`` prefixes of a compiled or data-parallel wrapper."""
    from bench.models.checkpoint import unwrap

    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return unwrap(sd, "the unlearned model")


def save_model(out: Path, spec: RunSpec, model: nn.Module) -> tuple[Path, Path]:
    """Write ``model`` and ``spec`` as ``OUT/models/<run_id>.pt`` and ``.json``; returns the
    two paths."""
    from bench.core.records import atomic_write_bytes, atomic_write_text, code_version

    pt, meta = model_paths(out, spec.run_id)
    buf = io.BytesIO()
    torch.save(cpu_state_dict(model), buf)
    data = buf.getvalue()
    atomic_write_bytes(pt, data)
    info: dict[str, Any] = {
        "run_id": spec.run_id,
        "file": pt.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "layout": LAYOUT,
        "spec": spec.to_dict(),
        "code_version": code_version(),
        "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(meta, json.dumps(info, indent=1, sort_keys=True) + "\n")
    return pt, meta


def has_saved_model(out: Path, run_id: str) -> bool:
    """Whether ``run_id``'s model and spec are both under ``OUT/models``."""
    return all(p.is_file() for p in model_paths(out, run_id))
