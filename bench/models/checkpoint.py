"""Users' weights: read a checkpoint file in any of the usual layouts, identify it by content,
and load it into a registered architecture with a one-line answer when it does not fit.

* :func:`read_state_dict` takes a plain state dict or the common wrappers (``{"net": ...}``,
  ``{"state_dict": ...}``, ``{"model": ...}``, ``{"model_state_dict": ...}``), strips the
  ``module.`` prefix of ``nn.DataParallel`` / DDP and the ``_orig_mod.`` prefix of
  ``torch.compile`` (both, in either order), and always loads with ``weights_only=True``
  (no code in a file runs).
* :func:`import_checkpoint` copies the state dict into the cache under its sha256
  (``CACHE/checkpoints/<sha256>.pt``): runs name a checkpoint by ``sha256:<hex>``, so run ids
  and cache keys do not depend on where the file lies, and SLURM jobs find it in the shared
  cache. The file's sha256 is that of its bytes, as ``sha256sum`` prints it.
* :func:`load_into` loads a state dict into a :class:`bench.models.archs.Classifier`: either the
  harness's own layout (``norm.*`` + ``net.*``, what ``--save-model`` writes) or the backbone's
  (the usual case: keys as the architecture names them, no normalization layer).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from bench.core.errors import BenchError

#: wrapper keys under which training scripts usually store the state dict
WRAPPERS = ("state_dict", "model_state_dict", "net", "model", "module")
#: key prefixes added by wrappers of the model itself
PREFIXES = ("module.", "_orig_mod.")
PREFIX = "sha256:"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (see the module docstring for the layouts understood)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchError(f"checkpoint {path} does not exist: give the path of a .pt/.pth file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle errors of every kind: one clear line
        code = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if code:  # torch's own text advises weights_only=False: never, for a file unchecked
            raise BenchError(
                f"checkpoint {path} is a pickle that imports {code.group(1)} (a saved model or "
                "other code, not plain weights); it is not loaded, since unpickling it could run "
                "code: save the weights alone with torch.save(model.state_dict(), PATH)"
            ) from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BenchError(
            f"cannot read checkpoint {path} with torch.load(weights_only=True) ({first}): save "
            f"the weights with torch.save(model.state_dict(), PATH)"
        ) from None
    return unwrap(obj, str(path))


def unwrap(obj, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint object, prefixes stripped."""
    seen = []
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        inner = next((k for k in WRAPPERS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            keys = ", ".join(map(str, list(obj)[:6]))
            raise BenchError(
                f"{where} holds no state dict (keys: {keys}): expected a state dict or one under "
                f"{', '.join(repr(w) for w in WRAPPERS)}"
            )
        seen.append(inner)
        obj = obj[inner]
    if not isinstance(obj, Mapping):
        raise BenchError(
            f"{where} holds a {type(obj).__name__}, not a state dict: save "
            f"model.state_dict() rather than the model"
        )
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    # in any order and nesting: torch.compile(DDP(model)) saves "_orig_mod.module.*"
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                stripped = True
    return sd


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


#: where each reference seen in this process came from (``reference``), for the import
_SOURCES: dict[str, Path] = {}
_BY_PATH: dict[tuple[str, int, int], str] = {}


def locate(text: str, data_root: Path | None = None) -> Path:
    """A checkpoint path as given: absolute, or relative to ``data_root`` when the file is
    there (suites name their weights relative to the data root), else to the current
    directory."""
    path = Path(text).expanduser()
    if not path.is_absolute() and data_root is not None and (Path(data_root) / path).is_file():
        return Path(data_root) / path
    if not path.is_file():
        where = (
            f" (nor under the data root {data_root})"
            if data_root and not path.is_absolute()
            else ""
        )
        raise BenchError(
            f"checkpoint {text} does not exist{where}: give the path of a .pt/.pth file, or "
            f"set --data-root / $BENCH_DATA to the folder the suite's weights are under"
        )
    return path


def reference(text: str, data_root: Path | None = None) -> str:
    """``sha256:<hex>`` of the checkpoint file ``text`` (a path, see :func:`locate`; a
    ``sha256:`` reference is returned as is). Remembers the file for
    :func:`import_references`."""
    if text.startswith(PREFIX):
        return text
    path = locate(text, data_root)
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _BY_PATH:
        _BY_PATH[memo] = PREFIX + file_sha256(path)
    ref = _BY_PATH[memo]
    _SOURCES[ref] = path
    return ref


def import_references(refs, cache: Path) -> None:
    """Make every reference in ``refs`` available in ``cache``: import the files this process
    resolved (:func:`reference`); a reference of unknown origin must already be there."""
    from bench.core.cache import load_entry

    for ref in sorted(set(r for r in refs if r)):
        if ref in _SOURCES:
            got = import_checkpoint(_SOURCES[ref], cache)
            if got != ref:
                raise BenchError(
                    f"checkpoint {_SOURCES[ref]} changed while launching ({ref} -> {got}): "
                    f"launch again"
                )
        elif load_entry(checkpoint_path(cache, ref), ref) is None:
            raise BenchError(
                f"checkpoint {ref} is not in the cache {Path(cache) / 'checkpoints'}: pass "
                f"--checkpoint PATH with the same --cache-dir"
            )


def checkpoint_path(cache: Path, ref: str) -> Path:
    return Path(cache) / "checkpoints" / f"{ref.removeprefix(PREFIX)}.pt"


def import_checkpoint(path: str | Path, cache: Path) -> str:
    """Read ``path``, keep its state dict in the cache under the file's sha256 and return the
    reference ``sha256:<hex>`` that runs carry (idempotent: a second import is a no-op)."""
    from bench.core.cache import load_entry, save_entry

    path = Path(path).expanduser()
    sd = read_state_dict(path)  # readable and a state dict, before anything is written
    ref = PREFIX + file_sha256(path)
    dest = checkpoint_path(cache, ref)
    if load_entry(dest, ref) is None:  # absent, or damaged (then moved aside)
        save_entry({"state_dict": sd, "source": str(path.resolve())}, dest, ref)
    return ref


def cached_state_dict(cache: Path, ref: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict imported as ``ref`` and the path it came from; not imported yet (``--dry-run``
    imports nothing), read from the file this process resolved as ``ref``."""
    from bench.core.cache import load_entry

    dest = checkpoint_path(cache, ref)
    blob = load_entry(dest, ref, lambda b: b["state_dict"])
    if blob is None and ref in _SOURCES:
        return read_state_dict(_SOURCES[ref]), str(_SOURCES[ref].resolve())
    if blob is None:
        raise BenchError(
            f"checkpoint {ref} is not in the cache {Path(cache) / 'checkpoints'}: pass "
            f"--checkpoint PATH (the file is imported on launch) with the same --cache-dir"
        )
    return blob["state_dict"], blob.get("source", "")


def load_into(model: nn.Module, sd: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Load ``sd`` into a ``Classifier`` (``model.norm`` + ``model.net``): whole when it is in
    the harness's own layout, else into the backbone. Any missing or unexpected key or shape
    mismatch is one :class:`BenchError` naming the first few; so is an own-layout file whose
    normalization buffers differ from the model's (the run's ``--normalize``, arch or data)."""
    own = "norm.mean" in sd and any(k.startswith("net.") for k in sd)
    target = model if own or not hasattr(model, "net") else model.net
    want = target.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}"
        for k, v in want.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_first(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} of another shape (file vs model: {_first(shapes)})")
    if problems:
        raise BenchError(
            f"{what} does not fit the architecture: keys {'; '.join(problems)}; check --arch "
            f"(and the number of classes of --dataset)"
        )
    if own and not all(
        torch.allclose(sd[k].float(), want[k].float(), rtol=1e-6, atol=1e-7)
        for k in ("norm.mean", "norm.std")
    ):
        # the run's other models (oracles, fresh ones) use the run's normalization: a file
        # that silently replaced it would score a model unlike the rest of the run
        file_norm = f"{_vals(sd['norm.mean'])}/{_vals(sd['norm.std'])}"
        run_norm = f"{_vals(want['norm.mean'])}/{_vals(want['norm.std'])}"
        raise BenchError(
            f"{what} carries the input normalization {file_norm} (means/stds), the run uses "
            f"{run_norm}: pass --normalize {file_norm} to start from it"
        )
    check_finite(sd, what)
    target.load_state_dict(dict(sd))


def check_finite(sd: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """One :class:`BenchError` naming the first tensor of ``sd`` that holds a NaN or an infinite
    value (and how many of its tensors do): such weights cannot be unlearned or scored, and
    a run from them would fail later with pages of numerical warnings."""
    bad = [
        k
        for k, v in sd.items()
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if bad:
        raise BenchError(
            f"{what} has NaN or infinite values in {len(bad)} tensor(s) ({_first(bad)}): it "
            "cannot be unlearned or scored; check how it was trained or saved"
        )


def _vals(t: torch.Tensor) -> str:
    return ",".join(f"{v:.6g}" for v in t.flatten().tolist())


def _first(items: list[str], n: int = 3) -> str:
    more = f", ... +{len(items) - n}" if len(items) > n else ""
    return ", ".join(items[:n]) + more
