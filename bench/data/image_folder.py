"""Image folders decoded once into uint8 tensors: the machinery behind ``folder:PATH`` datasets
and CIFAR's image-folder exports (``bench.data.datasets``).

Layout: ``train/<class>/*``, ``test/<class>/*`` and optionally ``val/<class>/*``, image files
of any format PIL reads (torchvision's ``IMG_EXTENSIONS``); classes are the sorted ``train/``
folder names and labels their index, as ``torchvision.datasets.ImageFolder`` gives them.

A folder is decoded once into uint8 tensors (N, C, H, W) with its per-channel mean and std,
and cached as a verified entry (``bench.core.cache``) keyed by a hash of the file list and sizes,
so later loads take well under a second and a changed folder is decoded afresh. A folder
whose decoded tensors would exceed ``BENCH_FOLDER_MAX_BYTES`` (default 8 GiB) is streamed from
disk instead (``FileSplit``), so an ImageNet-size folder never fills the memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.core.cache import load_entry, save_entry
from bench.core.errors import BenchError
from bench.data.splits import FileSplit, Split, TensorSplit

log = logging.getLogger(__name__)

SPLITS = ("train", "test", "val")  # val/ is optional
MAX_BYTES_ENV = "BENCH_FOLDER_MAX_BYTES"
DEFAULT_MAX_BYTES = 8 * 2**30
#: PIL modes of grey images (a folder whose files all have one of them is decoded to 1 channel)
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
HEADER_SAMPLE = 256  # train headers read to size a folder before reading every header
STATS_SAMPLE = 2000  # train images the statistics of a streamed folder are estimated from
FORMAT = 1  # part of the cache key: bump when the decoding rule changes
LAYOUT = "PATH/train/<class>/*, PATH/test/<class>/* and optionally PATH/val/<class>/*"


@dataclass
class FolderData:
    """A loaded image folder: its splits (``train``, ``test`` and ``val`` when present),
    classes, input shape (C, H, W), per-channel statistics and whether it streams from disk."""

    classes: list[str]
    splits: dict[str, Split]
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    streamed: bool = False


# ---------------------------------------------------------------------------------------
# listing


def list_splits(base: Path) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """The classes (sorted ``train/`` folder names) and each split's ``(path, label)`` samples
    in torchvision's ``make_dataset`` order (class, then file name). A missing ``train/`` or
    ``test/``, class folders differing between splits and an empty class folder are one-line
    :class:`BenchError`\\ s naming the expected layout."""
    from torchvision.datasets.folder import find_classes

    present = [s for s in SPLITS if (base / s).is_dir()]
    missing = [f"{s}/" for s in ("train", "test") if s not in present]
    if missing:
        raise BenchError(
            f"{base} has no {' and no '.join(missing)} folder: expected {_layout(base)}"
        )
    classes: list[str] = []
    idx: dict[str, int] = {}
    out: dict[str, list[tuple[str, int]]] = {}
    skipped = Skipped()
    for split in present:
        try:
            names, _ = find_classes(str(base / split))
        except FileNotFoundError:
            raise BenchError(
                f"{base / split} has no class folders: expected {_layout(base)}"
            ) from None
        if split == "train":
            classes, idx = names, {c: i for i, c in enumerate(names)}
            if len(classes) < 2:
                raise BenchError(
                    f"{base / split} has {len(classes)} class folder ({_few(classes)}): "
                    "unlearning needs a classifier of at least 2 classes; add class folders "
                    f"({_layout(base)})"
                )
        elif names != classes:
            only_train = sorted(set(classes) - set(names))
            only_here = sorted(set(names) - set(classes))
            diff = "; ".join(
                f"only in {where}/: {_few(c)}"
                for where, c in (("train", only_train), (split, only_here))
                if c
            )
            raise BenchError(
                f"{base}: the class folders of train/ and {split}/ differ ({diff}); every split "
                f"needs the same class folders: {_layout(base)}"
            )
        out[split] = list_samples(base / split, idx, base, skipped)
    if skipped:
        parts = []
        if skipped.loops:
            parts.append(f"{skipped.loops} link(s) that loop back into a folder being read")
        if skipped.outside:
            parts.append(
                f"{skipped.outside} link(s) that lead outside it (set "
                f"{FOLLOW_EXTERNAL_ENV}=1 to follow those)"
            )
        if str(base) not in _WARNED:  # once per process, not once per run
            _WARNED.add(str(base))
            log.warning("%s: skipped %s", base, " and ".join(parts))
    return classes, out


#: set to 1 to follow links that lead outside a folder dataset's root (a farm of links into a
#: shared image store); links that loop are never followed
FOLLOW_EXTERNAL_ENV = "BENCH_FOLDER_FOLLOW_EXTERNAL"
_WARNED: set[str] = set()


@dataclass
class Skipped:
    """Links a listing did not follow: ``loops`` (a directory link to a folder already being
    walked) and ``outside`` (a link that resolves outside the dataset's root)."""

    loops: int = 0
    outside: int = 0

    def __bool__(self) -> bool:
        return bool(self.loops or self.outside)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def safe_walk(top: Path, root: Path, skipped: Skipped):
    """``os.walk(top, followlinks=True)`` that never follows a directory link into a folder it
    is already inside (a loop) nor, unless ``BENCH_FOLDER_FOLLOW_EXTERNAL=1``, a link that
    resolves outside ``root``; file links outside ``root`` are dropped likewise. What it skips
    is counted in ``skipped``. Yields ``(dirpath, filenames)``."""
    real_root = os.path.realpath(root)
    external = os.environ.get(FOLLOW_EXTERNAL_ENV) == "1"
    stack: dict[str, tuple[str, ...]] = {}  # walked dir -> the real paths of its ancestors
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        chain = (*stack.get(dirpath, ()), real)
        keep = []
        for d in dirnames:
            full = os.path.join(dirpath, d)
            target = os.path.realpath(full)
            if any(_inside(c, target) for c in chain):
                skipped.loops += 1  # a link back to this folder or to one above it
            elif os.path.islink(full) and not external and not _inside(target, real_root):
                skipped.outside += 1
            else:
                keep.append(d)
                stack[full] = chain
        dirnames[:] = keep
        files = []
        for f in filenames:
            full = os.path.join(dirpath, f)
            if (
                os.path.islink(full)
                and not external
                and not _inside(os.path.realpath(full), real_root)
            ):
                skipped.outside += 1
                continue
            files.append(f)
        yield dirpath, files


def list_samples(
    folder: Path, idx: dict[str, int], base: Path, skipped: Skipped | None = None
) -> list[tuple[str, int]]:
    """``(path, label)`` of every image file under ``folder/<class>/``, in torchvision's
    ``make_dataset`` order (class, then the sorted walk, then the sorted file names), through
    :func:`safe_walk` (torchvision's own walk follows every link, loops included)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

    skipped = Skipped() if skipped is None else skipped
    out: list[tuple[str, int]] = []
    empty = []
    for c in sorted(idx, key=idx.get):
        target = folder / c
        if not target.is_dir():
            continue
        found = 0
        for root, fnames in sorted(safe_walk(target, base, skipped)):
            for fname in sorted(fnames):
                if has_file_allowed_extension(fname, IMG_EXTENSIONS):
                    out.append((os.path.join(root, fname), idx[c]))
                    found += 1
        if not found:
            empty.append(c)
    if empty:
        raise BenchError(
            f"{folder}: class folder(s) {_few(empty)} hold no image file "
            f"({' '.join(IMG_EXTENSIONS)}): add images or remove the folder from every split"
        )
    return out


def _few(names: list[str], n: int = 5) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _layout(base: Path) -> str:
    return LAYOUT.replace("PATH", str(base))


def files_digest(base: Path, split_samples: dict[str, list[tuple[str, int]]]) -> str:
    """SHA-256 of every file's split, path relative to ``base`` and size: the cache key of a
    decoded folder (a file added, removed, renamed or rewritten to another size changes it)."""
    h = hashlib.sha256()
    for s, samples in split_samples.items():
        for p, _ in samples:
            h.update(f"{s}/{os.path.relpath(p, base)}:{os.path.getsize(p)}".encode())
    return h.hexdigest()


def original_order(split_samples: dict, order_file: Path) -> dict:
    """Reorder each split of a CIFAR export to the dataset's original order (see
    ``bench.data.datasets._image_folder_tensors``); splits whose files do not match the label
    file keep folder order."""
    try:
        with np.load(order_file, allow_pickle=False) as npz:
            labels = dict(npz)
        names = [str(c) for c in labels["class_names"]]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise BenchError(
            f"{order_file} is not a readable label file ({exc}): replace it, or delete it to "
            f"use folder order"
        ) from None
    out = {}
    for split, samples in split_samples.items():
        by_key = {}
        for path, target in samples:
            p = Path(path)
            by_key[(p.parent.name, p.stem)] = (path, target)
        lab = labels[f"{split}_labels"]
        seen = np.zeros(len(names), dtype=np.int64)
        ordered = []
        for y in lab:
            ordered.append(by_key.get((names[y], f"{seen[y]:04d}")))
            seen[y] += 1
        ok = len(lab) == len(samples) and all(o is not None for o in ordered)
        out[split] = ordered if ok else samples
    return out


# ---------------------------------------------------------------------------------------
# decoding


def _unreadable(path: str, exc: BaseException) -> BenchError:
    why = (str(exc).splitlines() or [""])[0][:160] or type(exc).__name__
    return BenchError(f"{path} is not a readable image ({why}): replace or delete it")


def _image_errors():
    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def header(path: str) -> tuple[str, tuple[int, int]]:
    """``(mode, (height, width))`` of an image file, from its header (nothing decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode, (im.size[1], im.size[0])
    except _image_errors() as exc:
        raise _unreadable(path, exc) from None


def fit(im, size: tuple[int, int]):
    """``im`` (PIL) resized to cover ``size`` (H, W), then centre-cropped to it: torchvision's
    ``Resize(side)`` (shorter side, bilinear) + ``CenterCrop(side)`` for a square ``size``."""
    from torchvision.transforms import functional as TF

    h, w = size
    if (im.size[1], im.size[0]) == (h, w):
        return im
    if h == w:
        im = TF.resize(im, h)
    else:
        scale = max(h / im.size[1], w / im.size[0])
        im = TF.resize(im, [max(h, round(im.size[1] * scale)), max(w, round(im.size[0] * scale))])
    return TF.center_crop(im, [h, w])


def decode_images(
    samples: list[tuple[str, int]],
    size: tuple[int, int],
    channels: int = 3,
    resize: bool = True,
    rule: str = "",
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Images ``(x uint8 [N, C, H, W], y int64 [N], number resized)``, filled in place (no
    second copy). ``channels`` 1 converts to grey ("L"), 3 to RGB. An image of another size
    is fitted (:func:`fit`) when ``resize``, else an error stating ``rule``."""
    from PIL import Image

    if not samples:
        raise BenchError("an image-folder split is empty")
    h, w = size
    mode = "L" if channels == 1 else "RGB"
    x = torch.empty((len(samples), channels, h, w), dtype=torch.uint8)
    resized = 0
    for i, (path, _) in enumerate(samples):
        try:
            with Image.open(path) as im:
                im = im.convert(mode)
                if (im.size[1], im.size[0]) != (h, w):
                    if not resize:
                        raise BenchError(f"{path} is {im.size[0]}x{im.size[1]}; {rule}")
                    im, resized = fit(im, size), resized + 1
                a = np.array(im, dtype=np.uint8)  # writable: torch.from_numpy warns otherwise
        except BenchError:
            raise
        except _image_errors() as exc:
            raise _unreadable(path, exc) from None
        x[i] = torch.from_numpy(a.reshape(h, w, channels)).permute(2, 0, 1)
    return x, torch.tensor([t for _, t in samples], dtype=torch.long), resized


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images as pixels in [0, 1], summed
    exactly in int64 over chunks of ~16 M values (no float copy of the whole set)."""
    n, c = x.shape[0], x.shape[1]
    per_image = max(1, x[0].numel() if n else 1)
    step = max(1, 2**24 // per_image)
    s = torch.zeros(c, dtype=torch.int64)
    ss = torch.zeros(c, dtype=torch.int64)
    for i in range(0, n, step):
        chunk = x[i : i + step].to(torch.int64)
        s += chunk.sum(dim=(0, 2, 3))
        ss += (chunk * chunk).sum(dim=(0, 2, 3))
    count = max(1, n * x.shape[2] * x.shape[3])
    mean = s.double() / (count * 255.0)
    var = (ss.double() / (count * 255.0**2) - mean**2).clamp_min(0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in var.sqrt())


# ---------------------------------------------------------------------------------------
# loading


def max_bytes() -> int:
    """The decoded-size limit: ``BENCH_FOLDER_MAX_BYTES`` (bytes, or with a K/M/G suffix)."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(text[-1].upper(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise BenchError(f"{MAX_BYTES_ENV}={text!r}: give a size in bytes, e.g. 8G or 500M")
    return int(value)


def load_image_folder(base: Path, cache: Path) -> FolderData:
    """Load ``base`` (see the module docstring): decoded uint8 tensors, or streamed when
    decoded they would exceed :func:`max_bytes`.

    Image size: the train images' common size, or when they differ the most common train
    (H, W), every image of another size being resized (shorter side, bilinear) and
    centre-cropped to it (:func:`fit`; logged once). Channels: 1 when every file is grey,
    else 3 (RGB). Statistics: per-channel mean and std of the train pixels in [0, 1], stored
    in the cache entry; a streamed folder estimates them from a seeded sample of
    ``STATS_SAMPLE`` train images and takes its size and channels from ``HEADER_SAMPLE``
    train headers (reading every header of a huge folder would take minutes)."""
    classes, split_samples = list_splits(base)
    digest = hashlib.sha256(f"v{FORMAT}:{files_digest(base, split_samples)}".encode())
    key = cache / "data" / f"folder-{_slug(base.name)}-{digest.hexdigest()[:16]}.pt"
    sizes = {s: len(samples) for s, samples in split_samples.items()}
    limit = max_bytes()
    blob = None
    # the entry follows the limit: decoded tensors over it (lowered since) are not even read,
    # a streamed folder now within it (raised since) is decoded
    if not (key.exists() and key.stat().st_size > limit):
        blob = load_entry(key, key.stem, lambda b: _check_blob(b, sizes))
    if blob is not None and blob["kind"] == "stream" and blob["bytes"] <= limit:
        blob = None
    if blob is None:
        blob = _build(base, split_samples, limit)
        save_entry(blob, key, key.stem)
    mean, std = tuple(blob["mean"]), tuple(blob["std"])
    if blob["kind"] == "stream":
        c, h, w = blob["shape"]
        eval_t, train_t = _transforms((h, w), c)
        workers = min(8, os.cpu_count() or 1)
        splits: dict[str, Split] = {
            s: FileSplit(samples, eval_t, train_t, workers) for s, samples in split_samples.items()
        }
        return FolderData(classes, splits, (c, h, w), mean, std, streamed=True)
    splits = {s: TensorSplit(*blob[s]) for s in split_samples}
    c, h, w = (int(v) for v in blob["train"][0].shape[1:])
    return FolderData(classes, splits, (c, h, w), mean, std)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:40] or "root"


def _check_blob(blob: dict, sizes: dict[str, int]) -> None:
    """Validation of a cache entry: for every split uint8 images of one shape and a label each
    (or, streamed, the shape), and one mean and std per channel."""
    if blob["kind"] == "stream":
        c = int(blob["shape"][0])
    else:
        shapes = set()
        for split, n in sizes.items():
            x, y = blob[split]
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[0] != n or tuple(y.shape) != (n,):
                raise ValueError(f"{split} tensors of shape {tuple(x.shape)} for {n} images")
            shapes.add(tuple(x.shape[1:]))
        if len(shapes) != 1:
            raise ValueError(f"splits of different image shapes {sorted(shapes)}")
        c = shapes.pop()[0]
    if len(blob["mean"]) != c or len(blob["std"]) != c:
        raise ValueError(f"statistics for {len(blob['mean'])} channels, images have {c}")


def _build(base: Path, split_samples: dict[str, list[tuple[str, int]]], limit: int) -> dict:
    """Decode the folder (or size it for streaming): the cache entry's content."""
    train = split_samples["train"]
    n_all = sum(len(s) for s in split_samples.values())
    if len(train) > HEADER_SAMPLE:  # size a huge folder from a sample before every header
        pick = np.unique(np.linspace(0, len(train) - 1, HEADER_SAMPLE).round().astype(int))
        heads = [header(train[i][0]) for i in pick]
        size, channels = _size_and_channels(heads, heads)
        if n_all * channels * size[0] * size[1] > limit:
            return _stream_entry(base, train, size, channels, n_all, limit)
    heads = {s: [header(p) for p, _ in samples] for s, samples in split_samples.items()}
    size, channels = _size_and_channels(heads["train"], [h for v in heads.values() for h in v])
    if n_all * channels * size[0] * size[1] > limit:
        return _stream_entry(base, train, size, channels, n_all, limit)
    blob: dict = {"kind": "tensors"}
    resized = 0
    for s, samples in split_samples.items():
        x, y, r = decode_images(samples, size, channels)
        blob[s], resized = (x, y), resized + r
    if resized:
        log.warning(
            "%s: %d of %d images are not %dx%d (the most common train size); resized (shorter "
            "side) and centre-cropped to it",
            base,
            resized,
            n_all,
            size[1],
            size[0],
        )
    mean, std = channel_stats(blob["train"][0])
    blob["mean"], blob["std"] = list(mean), list(std)
    return blob


def _size_and_channels(train_heads, all_heads) -> tuple[tuple[int, int], int]:
    """The most common train (H, W) (the first met among equals) and 1 channel when every
    header is grey, else 3."""
    size = Counter(hw for _, hw in train_heads).most_common(1)[0][0]
    return size, 1 if all(mode in GREY_MODES for mode, _ in all_heads) else 3


def _stream_entry(base, train, size, channels, n_all, limit) -> dict:
    """The cache entry of a streamed folder: shape and statistics estimated from a seeded
    sample of train images (decoded as the splits will decode them)."""
    nbytes = n_all * channels * size[0] * size[1]
    log.warning(
        "%s: decoded, its %d images would take %.1f GiB (> %s = %.1f GiB): streaming them from "
        "disk instead (DataLoader workers)",
        base,
        n_all,
        nbytes / 2**30,
        MAX_BYTES_ENV,
        limit / 2**30,
    )
    rows = np.random.default_rng(0).permutation(len(train))[:STATS_SAMPLE]
    x, _, _ = decode_images([train[i] for i in np.sort(rows)], size, channels)
    mean, std = channel_stats(x)
    return {
        "kind": "stream",
        "bytes": nbytes,
        "shape": [channels, size[0], size[1]],
        "mean": list(mean),
        "std": list(std),
    }


class Fit:
    """Picklable transform (DataLoader workers): :func:`fit` to ``size``, grey when
    ``channels`` is 1 (the streamed split opens every image as RGB)."""

    def __init__(self, size: tuple[int, int], channels: int):
        self.size, self.channels = tuple(size), channels

    def __call__(self, im):
        return fit(im.convert("L") if self.channels == 1 else im, self.size)


def _transforms(size: tuple[int, int], channels: int):
    """(eval, train) transforms of a streamed folder: fit + ToTensor; for training also a
    random crop with 4 pixels of zero padding and a horizontal flip (whatever the recipe's
    augmentation kind, as for ImageNet: a streamed split has one train transform)."""
    from torchvision import transforms as T

    ev = T.Compose([Fit(size, channels), T.ToTensor()])
    tr = T.Compose(
        [Fit(size, channels), T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), T.ToTensor()]
    )
    return ev, tr
