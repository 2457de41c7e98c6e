"""Dataset loaders, registered by name.

* ``digits``    scikit-learn's bundled 8x8 digits (1,797 images): the embedded offline default.
* ``synthetic`` a tiny generated 4-class problem for tests (no files at all).
* ``cifar10`` / ``cifar100``  torchvision's on-disk format (``cifar-10-batches-py``), an
  image-folder export (``train/<class>/*.png|jpg`` + ``test/<class>/*``), or the CIFAR-10 JPEG
  tarball ``cifar10_jpeg.tar.gz`` (unpacked once into the cache). Downloads only with
  ``download=True`` (CLI ``--download``).
* ``imagenet``  ``ImageFolder`` layout ``train/`` + ``val/``, streamed from disk.
* ``folder:PATH``  any image folder ``PATH/train/<class>/*`` + ``PATH/test/<class>/*`` (+ an
  optional ``PATH/val/<class>/*``), decoded once and cached (``bench.data.image_folder``); not
  registered one by one: :class:`DatasetRegistry` answers every ``folder:`` name.

The data root comes from ``--data-root`` or the ``BENCH_DATA`` environment variable, never from
the working directory (a relative ``folder:PATH`` alone falls back to it, see
:func:`folder_path`).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.core.cache import load_entry, save_entry
from bench.core.errors import BenchError, DataDamagedError, DataNotFoundError
from bench.core.registry import Entry, Registry
from bench.data.image_folder import (
    LAYOUT,
    decode_images,
    files_digest,
    load_image_folder,
    original_order,
)
from bench.data.safe_pickle import RefusedPickle, load_data_pickle
from bench.data.splits import FileSplit, Split, TensorSplit

FOLDER_PREFIX = "folder:"


class DatasetRegistry(Registry):
    """The dataset registry, where besides the registered names every ``folder:PATH`` names a
    dataset (an image folder given as a path): :meth:`entry` answers it with :func:`load_folder`
    bound to that name and the metadata of the registered ``folder:PATH`` entry (which
    ``--list datasets`` shows)."""

    def entry(self, name: str) -> Entry:
        if isinstance(name, str) and name.startswith(FOLDER_PREFIX) and name not in self._entries:
            folder_path(name, None)  # an empty PATH is an error here, a missing one at load
            template = super().entry(FOLDER_PREFIX + "PATH")
            loader = functools.partial(load_folder, name=name)
            functools.update_wrapper(loader, load_folder)  # its docstring for --list -v
            return Entry(name, loader, dict(template.meta))
        return super().entry(name)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name.startswith(FOLDER_PREFIX):
            return bool(name[len(FOLDER_PREFIX) :].strip())
        return super().__contains__(name)


DATASETS = DatasetRegistry("dataset")
register_dataset = DATASETS.register

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class DatasetBundle:
    """A loaded dataset: train and test splits plus what models need to know about inputs."""

    name: str
    train: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] = field(default_factory=list)
    source: str = ""
    #: the dataset's own validation split (a ``folder:`` dataset's ``val/``), or None; ``carve``
    #: takes all of it as the validation split when the spec holds none out (val_fraction 0)
    val: Split | None = None


@dataclass
class Locations:
    """Where to look for data and where to cache derived files."""

    root: Path | None
    cache: Path
    download: bool = False


def data_root(cli_value: str | os.PathLike | None = None) -> Path | None:
    value = cli_value or os.environ.get("BENCH_DATA")
    return Path(value).expanduser() if value else None


# ---------------------------------------------------------------------------------------
# embedded data


@register_dataset("digits", offline=True, num_classes=10, input_shape=(1, 8, 8))
def load_digits(loc: Locations) -> DatasetBundle:
    """scikit-learn's bundled handwritten digits, 8x8 grey, 10 classes; a fixed stratified
    80/20 train/test split (random_state=0): 1,437 train and 360 test images."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=d.target, random_state=0)
    tr, te = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
    mean, std = float(x[tr].mean()), float(x[tr].std())
    return DatasetBundle(
        "digits",
        TensorSplit(x[tr], y[tr]),
        TensorSplit(x[te], y[te]),
        10,
        (1, 8, 8),
        (round(mean, 4),),
        (round(std, 4),),
        [str(i) for i in range(10)],
        "sklearn.datasets",
    )


@register_dataset("synthetic", offline=True, num_classes=4, input_shape=(1, 8, 8))
def load_synthetic(loc: Locations) -> DatasetBundle:
    """A tiny generated problem for tests: 4 classes, 1x8x8 images, 256 train / 128 test.
    Each class is a random prototype (weight 0.3) plus uniform noise (0.7): a model fits train
    to 100 % but tests near 80 %: it partly memorises its training points, so forgetting them
    is measurable."""
    g = torch.Generator().manual_seed(1234)
    protos = torch.rand(4, 1, 8, 8, generator=g)

    def make(n: int) -> TensorSplit:
        y = torch.arange(n) % 4
        x = (0.3 * protos[y] + 0.7 * torch.rand(n, 1, 8, 8, generator=g)).clamp(0, 1)
        return TensorSplit(x, y)

    train, test = make(256), make(128)
    return DatasetBundle(
        "synthetic", train, test, 4, (1, 8, 8), (0.5,), (0.25,), ["a", "b", "c", "d"], "generated"
    )


# ---------------------------------------------------------------------------------------
# CIFAR


def _cifar(
    loc: Locations, name: str, tv_cls_name: str, folder: str, n_classes: int, mean, std
) -> DatasetBundle:
    import torchvision

    tv_cls = getattr(torchvision.datasets, tv_cls_name)
    root = loc.root
    candidates: list[Path] = []
    if root is not None:
        # 1) torchvision's own format
        if (root / tv_cls.base_folder).is_dir():
            return _cifar_torchvision(tv_cls, root, name, n_classes, mean, std)
        # 2) an image-folder export, under <root>/<name>/ or at <root> itself
        for base in (root / name, root / f"{name}-jpeg", root):
            candidates.append(base)
            if (base / "train").is_dir() and (base / "test").is_dir():
                return _image_folder_tensors(base, name, n_classes, mean, std, loc.cache)
        # 3) the JPEG tarball (../shared/data/cifar10-jpeg/cifar10_jpeg.tar.gz)
        for tar in (root / f"{name}_jpeg.tar.gz", root / f"{name}-jpeg" / f"{name}_jpeg.tar.gz"):
            if tar.is_file():
                return _image_folder_tensors(
                    _unpack(tar, loc.cache),
                    name,
                    n_classes,
                    mean,
                    std,
                    loc.cache,
                    order_file=tar.parent / f"{name}_labels_original_order.npz",
                )
    if loc.download:
        if root is None:
            raise BenchError(f"--download needs a --data-root (or BENCH_DATA) to put {name} in")
        from torchvision.datasets.utils import download_and_extract_archive

        root.mkdir(parents=True, exist_ok=True)
        # torchvision checks the archive's MD5; the files are read by our loader below
        download_and_extract_archive(
            tv_cls.url, str(root), filename=tv_cls.filename, md5=tv_cls.tgz_md5
        )
        return _cifar_torchvision(tv_cls, root, name, n_classes, mean, std)
    where = f"under {root}" if root is not None else "(no data root given)"
    raise DataNotFoundError(
        f"{name} not found {where}: expected {tv_cls.base_folder}/ (torchvision format), "
        f"{name}/train/<class>/*.png + {name}/test/<class>/* (image folder) or {name}_jpeg.tar.gz; "
        f"pass --data-root DIR (or set BENCH_DATA) to the folder holding one of them, "
        f"or add --download to fetch it with torchvision"
    )


def _official_md5(path: Path, md5: str) -> str:
    """How ``path`` compares with torchvision's official file of that name (for messages)."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() == md5:
        return "it has the MD5 of torchvision's official file"
    return "it is not torchvision's official file: MD5 differs"


def _read_cifar_pickle(path: Path, md5: str, base: Path) -> dict:
    """One CIFAR pickle, read with :func:`load_data_pickle`: plain data only, whatever the file
    (official, re-packed or hand-made); keys as str."""
    fix = f"delete {base} and re-download with --download"
    try:
        with open(path, "rb") as f:
            obj = load_data_pickle(f)
    except RefusedPickle as exc:
        raise DataDamagedError(
            f"{path}: refused to unpickle ({_official_md5(path, md5)}, and it imports {exc}; "
            f"only dicts, lists, str, bytes, numbers and numpy arrays are read from CIFAR "
            f"pickles, nothing was run): {fix}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        if isinstance(exc, MemoryError):
            raise
        why = (str(exc).splitlines() or [""])[0][:120] or type(exc).__name__
        raise DataDamagedError(
            f"{path} is not a readable CIFAR pickle ({why}; {_official_md5(path, md5)}): {fix}"
        ) from None
    if not isinstance(obj, dict):
        raise DataDamagedError(
            f"{path} holds a {type(obj).__name__}, not a CIFAR batch (a dict): {fix}"
        )
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_torchvision(tv_cls, root: Path, name, n_classes, mean, std) -> DatasetBundle:
    """torchvision's CIFAR format, read with a data-only unpickler (never ``pickle.load``, so
    a crafted file in the data root cannot run code): ``data`` rows of 3072 bytes (1024 R,
    G, B values each) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100)."""
    base = root / tv_cls.base_folder
    fix = f"delete {base} and re-download with --download"
    files = {f: md5 for f, md5 in tv_cls.train_list + tv_cls.test_list}
    files[tv_cls.meta["filename"]] = tv_cls.meta["md5"]
    missing = [f for f in files if not (base / f).is_file()]
    if missing:
        raise BenchError(
            f"{name} files under {base} are incomplete ({', '.join(missing)} missing): {fix}"
        )
    splits = []
    for listing in (tv_cls.train_list, tv_cls.test_list):
        xs, ys = [], []
        for fname, md5 in listing:
            path = base / fname
            entry = _read_cifar_pickle(path, md5, base)
            data = entry.get("data")
            labels = entry.get("labels", entry.get("fine_labels"))
            try:
                data = np.asarray(data, dtype=np.uint8).reshape(-1, 3072)
                labels = np.asarray(labels, dtype=np.int64).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise BenchError(f"{path} is not a CIFAR batch ({exc}): {fix}") from None
            if len(labels) != len(data) or (
                len(labels) and not 0 <= labels.min() <= labels.max() < n_classes
            ):
                raise BenchError(
                    f"{path} is not a CIFAR batch ({len(data)} images, {len(labels)} labels in "
                    f"0..{n_classes - 1} expected): {fix}"
                )
            xs.append(data)
            ys.append(labels)
        x = torch.from_numpy(np.concatenate(xs).reshape(-1, 3, 32, 32))
        splits.append(TensorSplit(x, torch.from_numpy(np.concatenate(ys))))
    meta_path = base / tv_cls.meta["filename"]
    classes = _read_cifar_pickle(meta_path, tv_cls.meta["md5"], base).get(tv_cls.meta["key"])
    if not isinstance(classes, (list, tuple)) or len(classes) != n_classes:
        raise BenchError(f"{meta_path} lacks the {n_classes} {tv_cls.meta['key']}: {fix}")
    return DatasetBundle(
        name,
        splits[0],
        splits[1],
        n_classes,
        (3, 32, 32),
        mean,
        std,
        [str(c) for c in classes],
        f"torchvision:{base}",
    )


def _unpack(tar: Path, cache: Path) -> Path:
    st = tar.stat()
    dest = cache / "data" / f"{tar.name.split('.')[0]}-{st.st_size}"
    if not (dest / ".complete").exists():
        from bench.core.files import owner_tag  # the owner's pid@host: a dead owner's is cleaned

        tmp = dest.with_name(dest.name + f".tmp{owner_tag()}")
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(tar) as tf:
                tf.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            shutil.rmtree(tmp, ignore_errors=True)  # no half-unpacked folder left behind
            why = (str(exc).splitlines() or [""])[0][:160] or type(exc).__name__
            if isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile):
                raise BenchError(
                    f"cannot unpack {tar} into {dest.parent} ({why}): check that the file is "
                    f"readable and that the cache (BENCH_CACHE / --cache-dir) has space"
                ) from None
            raise BenchError(
                f"{tar} is truncated or damaged ({why}): copy it again, or unpack a good copy "
                f"and pass its folder as --data-root"
            ) from None
        (tmp / ".complete").touch()
        try:
            os.replace(tmp, dest)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _image_folder_tensors(
    base: Path, name, n_classes, mean, std, cache: Path, order_file: Path | None = None
) -> DatasetBundle:
    """Decode an image-folder export into uint8 tensors once and cache them (keyed by the file
    list and sizes), so later runs load in well under a second.

    Images are in folder order (class, then file name) unless a label file of the original
    order is found (``<name>_labels_original_order.npz`` beside the tarball or in the export
    folder, with ``train_labels``, ``test_labels``, ``class_names``; file ``<class>/<k>.jpg`` is
    the k-th image of that class in the original order): then the original dataset order is
    restored, so forget-set indices match those of torchvision's format."""
    from torchvision.datasets.folder import find_classes

    from bench.data.image_folder import list_samples

    classes, idx = find_classes(str(base / "train"))
    if len(classes) != n_classes:
        raise BenchError(
            f"{base / 'train'} has {len(classes)} class folders; {name} needs "
            f"{n_classes}: point --data-root at a complete {name} export"
        )
    split_samples = {s: list_samples(base / s, idx, base) for s in ("train", "test")}
    for candidate in (order_file, base / f"{name}_labels_original_order.npz"):
        if candidate is not None and candidate.is_file():
            split_samples = original_order(split_samples, candidate)
            break
    key = cache / "data" / f"{name}-folder-{files_digest(base, split_samples)[:16]}.pt"
    # verified (key, content hash, sizes); a damaged entry is moved aside and decoded again
    sizes = {s: len(samples) for s, samples in split_samples.items()}
    blob = load_entry(key, key.stem, functools.partial(_check_decoded, sizes=sizes))
    if blob is None:
        blob = {s: _decode(samples) for s, samples in split_samples.items()}
        save_entry(blob, key, key.stem)
    return DatasetBundle(
        name,
        TensorSplit(*blob["train"]),
        TensorSplit(*blob["test"]),
        n_classes,
        (3, 32, 32),
        mean,
        std,
        classes,
        f"image-folder:{base}",
    )


def _check_decoded(blob: dict, sizes: dict[str, int]) -> None:
    """Validation of a decoded-data cache entry: uint8 images and labels for every file."""
    for split, n in sizes.items():
        x, y = blob[split]
        if x.dtype != torch.uint8 or tuple(x.shape) != (n, 3, 32, 32) or tuple(y.shape) != (n,):
            raise ValueError(f"{split} tensors of shape {tuple(x.shape)} for {n} images")


def _decode(samples: list[tuple[str, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A CIFAR export's images: 32x32 RGB (another size is an error, not resized)."""
    x, y, _ = decode_images(samples, (32, 32), 3, resize=False, rule="CIFAR images must be 32x32")
    return x, y


@register_dataset("cifar10", offline=False, num_classes=10, input_shape=(3, 32, 32))
def load_cifar10(loc: Locations) -> DatasetBundle:
    """CIFAR-10 (Krizhevsky 2009): 50,000 train / 10,000 test, 32x32 RGB, 10 classes."""
    return _cifar(loc, "cifar10", "CIFAR10", "cifar-10-batches-py", 10, CIFAR10_MEAN, CIFAR10_STD)


@register_dataset("cifar100", offline=False, num_classes=100, input_shape=(3, 32, 32))
def load_cifar100(loc: Locations) -> DatasetBundle:
    """CIFAR-100 (Krizhevsky 2009): 50,000 train / 10,000 test, 32x32 RGB, 100 classes."""
    return _cifar(loc, "cifar100", "CIFAR100", "cifar-100-python", 100, CIFAR100_MEAN, CIFAR100_STD)


# ---------------------------------------------------------------------------------------
# ImageNet


@register_dataset("imagenet", offline=False, num_classes=1000, input_shape=(3, 224, 224))
def load_imagenet(loc: Locations) -> DatasetBundle:
    """ImageNet-1K in ``ImageFolder`` layout (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``),
    streamed from disk: Resize(256) + CenterCrop(224) for evaluation (the L2UL protocol),
    RandomResizedCrop(224) + flip for training."""
    from torchvision import transforms as T
    from torchvision.datasets.folder import find_classes

    from bench.data.image_folder import list_samples

    root = loc.root
    base = None
    if root is not None:
        for b in (root / "imagenet", root):
            if (b / "train").is_dir() and (b / "val").is_dir():
                base = b
                break
    if base is None:
        raise DataNotFoundError(
            f"imagenet not found under {root}: expected imagenet/train/<wnid>/*.JPEG and "
            f"imagenet/val/<wnid>/*.JPEG (ImageFolder layout; torchvision cannot download "
            f"ImageNet: get it from image-net.org and sort val/ into class folders); pass "
            f"--data-root DIR or set BENCH_DATA"
        )
    classes, idx = find_classes(str(base / "train"))
    ev = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    tr = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()])
    workers = min(8, os.cpu_count() or 1)
    splits = [
        FileSplit(list_samples(base / s, idx, base), ev, tr, workers) for s in ("train", "val")
    ]
    return DatasetBundle(
        "imagenet",
        splits[0],
        splits[1],
        len(classes),
        (3, 224, 224),
        IMAGENET_MEAN,
        IMAGENET_STD,
        classes,
        f"image-folder:{base}",
    )


# ---------------------------------------------------------------------------------------
# any image folder


def folder_path(name: str, root: Path | None) -> Path:
    """Where ``folder:PATH`` points: PATH when absolute; a relative PATH under the data root
    (``--data-root`` / ``BENCH_DATA``) when it exists there, else under the current directory."""
    raw = name[len(FOLDER_PREFIX) :]
    if not raw.strip():
        raise BenchError(f"dataset {name!r} names no folder: use folder:PATH with {LAYOUT}")
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path
    if root is not None and (root / path).exists():
        return root / path
    return Path.cwd() / path


@register_dataset(FOLDER_PREFIX + "PATH", offline=True)
def load_folder(loc: Locations, name: str = FOLDER_PREFIX + "PATH") -> DatasetBundle:
    """Any image folder: --dataset folder:PATH with PATH/train/<class>/*, PATH/test/<class>/*,
    optionally PATH/val/<class>/* (the validation split).

    Decoded once into uint8 tensors and cached (streamed from disk beyond
    ``BENCH_FOLDER_MAX_BYTES``); images of another size than the most common train size are
    resized and centre-cropped to it; grey when every file is; per-channel statistics of the
    train pixels (``bench.data.image_folder``). The dataset's name stays the string given, so
    runs are identified by it (a relative PATH keeps its meaning across machines)."""
    base = folder_path(name, loc.root)
    if not base.is_dir():
        raw = name[len(FOLDER_PREFIX) :]
        looked = [str(base)]
        if loc.root is not None and not Path(raw).expanduser().is_absolute():
            looked.insert(0, str(loc.root / raw))
        raise DataNotFoundError(
            f"dataset {name}: no folder {' or '.join(looked)}; expected "
            f"{LAYOUT.replace('PATH', raw)} (a relative PATH is looked up under --data-root / "
            f"BENCH_DATA, then the current directory)"
        )
    data = load_image_folder(base, loc.cache)
    return DatasetBundle(
        name,
        data.splits["train"],
        data.splits["test"],
        len(data.classes),
        data.shape,
        data.mean,
        data.std,
        data.classes,
        f"image-folder:{base}" + (" (streamed)" if data.streamed else ""),
        val=data.splits.get("val"),
    )


_LOADED: dict[tuple, DatasetBundle] = {}


def load_dataset(name: str, loc: Locations) -> DatasetBundle:
    """Load (and memoise per process) a registered dataset, or a ``folder:PATH`` one."""
    key = (name, str(loc.root), str(loc.cache))
    if name.startswith(FOLDER_PREFIX):  # a relative PATH may resolve under the cwd
        key += (os.getcwd(),)
    if key not in _LOADED:
        fn: Callable[[Locations], DatasetBundle] = DATASETS.get(name)
        _LOADED[key] = fn(loc)
    return _LOADED[key]
