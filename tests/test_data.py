"""The data layer: dataset loaders (embedded, CIFAR in every supported on-disk form, ImageNet
folders), missing-data errors, carving / forget-set selection, and batch augmentation.

Every on-disk fixture is written here, in ``tmp_path``, a handful of images at a time; nothing
touches the network (see the autouse guard in ``conftest.py``).
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bench.data.datasets as datasets_mod
from bench.core.errors import BenchError, DataNotFoundError, UnknownNameError
from bench.core.spec import DataSpec, ForgetSpec
from bench.data.datasets import DatasetBundle, Locations, data_root, load_dataset
from bench.data.forget import carve, retain_positions, select_forget
from bench.data.splits import FileSplit, TensorSplit, View, augment_batch

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_memo():
    """``load_dataset`` memoises per process; every test starts (and ends) with it empty."""
    datasets_mod._LOADED.clear()
    yield
    datasets_mod._LOADED.clear()


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------
# embedded datasets


def test_digits_loads_offline(cache):
    b = load_dataset("digits", Locations(None, cache))
    assert isinstance(b, DatasetBundle)
    assert (len(b.train), len(b.test)) == (1437, 360)
    assert b.num_classes == 10 and b.input_shape == (1, 8, 8)
    assert len(b.class_names) == 10
    for split in (b.train, b.test):
        assert isinstance(split, TensorSplit)
        assert split.x.shape[1:] == (1, 8, 8)
        assert split.x.dtype == torch.float32
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
        assert split.targets.dtype == torch.int64
        assert set(split.targets.tolist()) == set(range(10))
    assert len(b.mean) == 1 and len(b.std) == 1
    assert not (cache / "data").exists()  # embedded data writes nothing


def test_synthetic_loads(cache):
    b = load_dataset("synthetic", Locations(None, cache))
    assert (len(b.train), len(b.test)) == (256, 128)
    assert b.num_classes == 4 and b.input_shape == (1, 8, 8)
    assert b.train.x.shape == (256, 1, 8, 8)
    assert set(b.train.targets.tolist()) == {0, 1, 2, 3}
    assert float(b.train.x.min()) >= 0.0 and float(b.train.x.max()) <= 1.0
    # deterministic: a fresh load (memo cleared) gives the same tensors
    datasets_mod._LOADED.clear()
    b2 = load_dataset("synthetic", Locations(None, cache))
    assert b2 is not b
    assert torch.equal(b.train.x, b2.train.x) and torch.equal(b.test.x, b2.test.x)


def test_load_dataset_memoises_per_locations(tmp_path):
    loc = Locations(None, tmp_path / "c")
    a = load_dataset("synthetic", loc)
    assert load_dataset("synthetic", loc) is a
    assert load_dataset("synthetic", Locations(None, tmp_path / "other")) is not a


def test_unknown_dataset_name(cache):
    with pytest.raises(UnknownNameError):
        load_dataset("cifar11", Locations(None, cache))


def test_data_root_from_cli_or_env(monkeypatch, tmp_path):
    monkeypatch.delenv("BENCH_DATA", raising=False)
    assert data_root(None) is None
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "env"))
    assert data_root(None) == tmp_path / "env"
    assert data_root(str(tmp_path / "cli")) == tmp_path / "cli"  # the CLI wins


# ---------------------------------------------------------------------------------------
# CIFAR in torchvision's own format


def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_cifar10_tv(root: Path, per_file: int = 4) -> dict:
    """torchvision's ``cifar-10-batches-py``: five train batches, a test batch, the meta file."""
    import torchvision

    tv = torchvision.datasets.CIFAR10
    base = root / tv.base_folder
    rng = _rng(10)
    written = {}
    for split, files in (("train", tv.train_list), ("test", tv.test_list)):
        datas, labels = [], []
        for fname, _md5 in files:
            data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
            lab = [int(v) for v in rng.integers(0, 10, size=per_file)]
            _pickle(
                base / fname,
                {
                    "batch_label": fname,
                    "data": data,
                    "labels": lab,
                    "filenames": [f"{fname}_{i}.png" for i in range(per_file)],
                },
            )
            datas.append(data)
            labels += lab
        written[split] = (np.concatenate(datas), labels)
    assert tv.meta["key"] == "label_names"
    _pickle(
        base / tv.meta["filename"],
        {tv.meta["key"]: CIFAR10_CLASSES, "num_cases_per_batch": per_file, "num_vis": 3072},
    )
    return written


def _write_cifar100_tv(root: Path, n_train: int = 6, n_test: int = 4) -> dict:
    """torchvision's ``cifar-100-python``: ``train``, ``test`` and ``meta``."""
    import torchvision

    tv = torchvision.datasets.CIFAR100
    base = root / tv.base_folder
    rng = _rng(100)
    written = {}
    for split, files, n in (("train", tv.train_list, n_train), ("test", tv.test_list, n_test)):
        ((fname, _md5),) = files
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        _pickle(
            base / fname,
            {
                "data": data,
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
                "filenames": [f"img{i}.png" for i in range(n)],
            },
        )
        written[split] = (data, fine)
    assert tv.meta["key"] == "fine_label_names"
    names = [f"fine{i:02d}" for i in range(100)]
    _pickle(
        base / tv.meta["filename"],
        {"fine_label_names": names, "coarse_label_names": [f"coarse{i}" for i in range(20)]},
    )
    written["classes"] = names
    return written


def _check_cifar_pixels(x: torch.Tensor, data: np.ndarray) -> None:
    """A CIFAR data row is 1024 R, then 1024 G, then 1024 B values, each 32x32 row-major."""
    assert x.dtype == torch.uint8
    assert x.shape == (data.shape[0], 3, 32, 32)
    assert torch.equal(x, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
    # spot-check the layout explicitly rather than only through reshape
    for i, c, r, col in ((0, 0, 0, 0), (0, 1, 0, 0), (0, 2, 31, 31), (1, 0, 5, 17), (2, 2, 30, 1)):
        assert int(x[i, c, r, col]) == int(data[i, c * 1024 + r * 32 + col])


def test_cifar10_torchvision_format(tmp_path, cache):
    root = tmp_path / "data"
    w = _write_cifar10_tv(root)
    b = load_dataset("cifar10", Locations(root, cache))
    assert b.name == "cifar10" and b.num_classes == 10 and b.input_shape == (3, 32, 32)
    assert (len(b.train), len(b.test)) == (20, 4)
    _check_cifar_pixels(b.train.x, w["train"][0])
    _check_cifar_pixels(b.test.x, w["test"][0])
    assert b.train.targets.tolist() == w["train"][1]
    assert b.test.targets.tolist() == w["test"][1]
    assert b.train.targets.dtype == torch.int64
    assert b.class_names == CIFAR10_CLASSES
    assert b.source.startswith("torchvision:")


def test_cifar100_torchvision_format(tmp_path, cache):
    root = tmp_path / "data"
    w = _write_cifar100_tv(root)
    b = load_dataset("cifar100", Locations(root, cache))
    assert b.num_classes == 100 and b.input_shape == (3, 32, 32)
    assert (len(b.train), len(b.test)) == (6, 4)
    _check_cifar_pixels(b.train.x, w["train"][0])
    _check_cifar_pixels(b.test.x, w["test"][0])
    assert b.train.targets.tolist() == w["train"][1]  # fine labels, not coarse
    assert b.test.targets.tolist() == w["test"][1]
    assert b.class_names == w["classes"]


def test_cifar_torchvision_missing_batch_is_bench_error(tmp_path, cache):
    root = tmp_path / "data"
    _write_cifar10_tv(root)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(BenchError, match="--download"):
        load_dataset("cifar10", Locations(root, cache))


def test_cifar_torchvision_loader_is_pure_uint8_view(tmp_path, cache):
    """Batches from the uint8 split come out as float in [0, 1] (x / 255)."""
    root = tmp_path / "data"
    w = _write_cifar10_tv(root)
    b = load_dataset("cifar10", Locations(root, cache))
    view = View(b.train, torch.tensor([3, 0, 7]), CPU)
    x, y = view.tensors()
    expect = torch.from_numpy(w["train"][0][[3, 0, 7]].reshape(-1, 3, 32, 32)).float() / 255
    assert x.dtype == torch.float32 and torch.allclose(x, expect)
    assert y.tolist() == [w["train"][1][i] for i in (3, 0, 7)]


# ---------------------------------------------------------------------------------------
# CIFAR as an image-folder export


def _write_png_folder(base: Path, classes: list[str], per_class: int = 2, seed: int = 0) -> dict:
    """``base/{train,test}/<class>/NNNN.png``; returns the pixels (HWC uint8) per split, in
    torchvision's ``make_dataset`` order (sorted class, then sorted file name)."""
    rng = _rng(seed)
    out: dict[str, list[tuple[np.ndarray, int]]] = {}
    for split in ("train", "test"):
        out[split] = []
        for ci, cls in enumerate(sorted(classes)):
            d = base / split / cls
            d.mkdir(parents=True)
            for j in range(per_class):
                a = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                Image.fromarray(a, "RGB").save(d / f"{j:04d}.png")
                out[split].append((a, ci))
    return out


def test_cifar10_image_folder_png(tmp_path, cache, monkeypatch):
    root = tmp_path / "data"
    w = _write_png_folder(root / "cifar10", CIFAR10_CLASSES)
    b = load_dataset("cifar10", Locations(root, cache))
    assert b.class_names == CIFAR10_CLASSES
    assert (len(b.train), len(b.test)) == (20, 20)
    assert b.source.startswith("image-folder:")
    for split, rows in ((b.train, w["train"]), (b.test, w["test"])):
        assert split.x.dtype == torch.uint8 and split.x.shape == (20, 3, 32, 32)
        expect = torch.from_numpy(np.stack([a for a, _ in rows])).permute(0, 3, 1, 2)
        assert torch.equal(split.x, expect)  # PNG is lossless
        assert split.targets.tolist() == [c for _, c in rows]
    # labels are the sorted class-folder index
    assert b.train.targets.tolist() == [i // 2 for i in range(20)]

    cached = list((cache / "data").glob("cifar10-folder-*.pt"))
    assert len(cached) == 1 and cached[0].is_file()

    # a second load (memo cleared) reads the decoded-tensor cache instead of the images
    datasets_mod._LOADED.clear()

    def no_decode(samples):
        raise AssertionError("images decoded again despite the cache")

    monkeypatch.setattr(datasets_mod, "_decode", no_decode)
    b2 = load_dataset("cifar10", Locations(root, cache))
    assert torch.equal(b2.train.x, b.train.x) and torch.equal(b2.test.x, b.test.x)
    assert torch.equal(b2.train.targets, b.train.targets)
    assert list((cache / "data").glob("cifar10-folder-*.pt")) == cached


def test_cifar10_image_folder_at_root_itself(tmp_path, cache):
    root = tmp_path / "export"
    _write_png_folder(root, CIFAR10_CLASSES, per_class=1)
    b = load_dataset("cifar10", Locations(root, cache))
    assert (len(b.train), len(b.test)) == (10, 10)
    assert b.train.targets.tolist() == list(range(10))


def test_image_folder_cache_key_changes_with_files(tmp_path, cache):
    root = tmp_path / "data"
    _write_png_folder(root / "cifar10", CIFAR10_CLASSES, per_class=1)
    load_dataset("cifar10", Locations(root, cache))
    a = np.zeros((32, 32, 3), dtype=np.uint8)
    Image.fromarray(a).save(root / "cifar10" / "train" / "cat" / "extra.png")
    datasets_mod._LOADED.clear()
    b = load_dataset("cifar10", Locations(root, cache))
    assert len(b.train) == 11
    assert len(list((cache / "data").glob("cifar10-folder-*.pt"))) == 2


def test_image_folder_wrong_class_count(tmp_path, cache):
    root = tmp_path / "data"
    _write_png_folder(root / "cifar10", ["cat", "dog", "frog"], per_class=1)
    with pytest.raises(BenchError) as ei:
        load_dataset("cifar10", Locations(root, cache))
    msg = str(ei.value)
    assert "3 class folders" in msg and "needs 10" in msg
    assert str(root / "cifar10" / "train") in msg and "--data-root" in msg
    assert not (cache / "data").exists()  # nothing cached for a rejected export


def test_image_folder_wrong_image_size(tmp_path, cache):
    root = tmp_path / "data"
    _write_png_folder(root / "cifar10", CIFAR10_CLASSES, per_class=1)
    big = root / "cifar10" / "test" / "dog" / "big.png"
    Image.fromarray(np.zeros((40, 36, 3), dtype=np.uint8)).save(big)
    with pytest.raises(BenchError, match="32x32"):
        load_dataset("cifar10", Locations(root, cache))


# ---------------------------------------------------------------------------------------
# CIFAR-10 JPEG tarball


def _write_jpeg_tarball(tar_path: Path, tmp: Path) -> None:
    """``cifar10_jpeg.tar.gz`` with top-level ``train/<class>/0000.jpg`` and ``test/...``."""
    src = tmp / "tar-src"
    rng = _rng(7)
    for split in ("train", "test"):
        for cls in CIFAR10_CLASSES:
            d = src / split / cls
            d.mkdir(parents=True)
            # a flat colour per image survives JPEG almost exactly
            colour = rng.integers(30, 220, size=3, dtype=np.uint8)
            a = np.broadcast_to(colour, (32, 32, 3)).copy()
            Image.fromarray(a).save(d / "0000.jpg", quality=95)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w:gz") as tf:
        for split in ("train", "test"):
            tf.add(src / split, arcname=split)


@pytest.mark.parametrize("where", ["cifar10-jpeg/cifar10_jpeg.tar.gz", "cifar10_jpeg.tar.gz"])
def test_cifar10_jpeg_tarball(tmp_path, cache, monkeypatch, where):
    root = tmp_path / "data"
    _write_jpeg_tarball(root / where, tmp_path)
    b = load_dataset("cifar10", Locations(root, cache))
    assert b.class_names == CIFAR10_CLASSES
    assert (len(b.train), len(b.test)) == (10, 10)
    assert b.train.x.dtype == torch.uint8 and b.train.x.shape == (10, 3, 32, 32)
    assert b.train.targets.tolist() == list(range(10))
    assert b.test.targets.tolist() == list(range(10))
    # each image is (close to) one flat colour
    per_img = b.train.x.float().flatten(2)
    assert float((per_img - per_img.median(dim=2, keepdim=True).values).abs().max()) <= 8

    unpacked = [p for p in (cache / "data").iterdir() if p.is_dir()]
    assert len(unpacked) == 1 and unpacked[0].name.startswith("cifar10_jpeg-")
    assert (unpacked[0] / ".complete").exists()
    assert (unpacked[0] / "train" / "cat" / "0000.jpg").is_file()

    # unpacked once: a second load must not open the tarball again
    datasets_mod._LOADED.clear()

    def no_open(*a, **k):
        raise AssertionError("tarball unpacked a second time")

    monkeypatch.setattr(tarfile, "open", no_open)
    b2 = load_dataset("cifar10", Locations(root, cache))
    assert torch.equal(b2.train.x, b.train.x)
    assert [p for p in (cache / "data").iterdir() if p.is_dir()] == unpacked


# ---------------------------------------------------------------------------------------
# missing data


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_names_path_and_fixes(tmp_path, cache, name):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as ei:
        load_dataset(name, Locations(empty, cache))
    msg = str(ei.value)
    assert str(empty) in msg
    assert "--data-root" in msg and "--download" in msg
    assert isinstance(ei.value, BenchError) and isinstance(ei.value, FileNotFoundError)
    assert list(empty.iterdir()) == []  # nothing downloaded or created


def test_cifar_missing_without_root(cache):
    with pytest.raises(DataNotFoundError, match="no data root given") as ei:
        load_dataset("cifar10", Locations(None, cache))
    assert "--data-root" in str(ei.value) and "--download" in str(ei.value)


def test_cifar_download_without_root_is_bench_error(cache):
    with pytest.raises(BenchError, match="--data-root"):
        load_dataset("cifar10", Locations(None, cache, download=True))


@pytest.mark.parametrize("download", [False, True])
def test_imagenet_missing_names_path_and_fixes(tmp_path, cache, download):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as ei:
        load_dataset("imagenet", Locations(empty, cache, download=download))
    msg = str(ei.value)
    assert str(empty) in msg
    assert "--data-root" in msg
    # ImageNet cannot be fetched by torchvision: the message says so instead of offering
    # --download, and asking for a download does not touch the network either
    assert "download" in msg
    assert list(empty.iterdir()) == []


# ---------------------------------------------------------------------------------------
# ImageNet ImageFolder layout

WNIDS = ["n01440764", "n01443537", "n01484850"]


def _write_imagenet(base: Path, per_class: int = 2) -> None:
    rng = _rng(3)
    for split in ("train", "val"):
        for wnid in WNIDS:
            d = base / split / wnid
            d.mkdir(parents=True)
            for j in range(per_class):
                a = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
                Image.fromarray(a).save(d / f"{wnid}_{j}.JPEG", format="JPEG")


def test_imagenet_image_folder(tmp_path, cache):
    root = tmp_path / "data"
    _write_imagenet(root / "imagenet")
    b = load_dataset("imagenet", Locations(root, cache))
    assert isinstance(b.train, FileSplit) and isinstance(b.test, FileSplit)
    assert b.class_names == WNIDS and b.num_classes == 3
    assert b.input_shape == (3, 224, 224)
    assert (len(b.train), len(b.test)) == (6, 6)
    assert b.train.targets.tolist() == [0, 0, 1, 1, 2, 2]
    for split in (b.train, b.test):
        split.num_workers = 0

    idx = torch.tensor([5, 0, 2, 3, 1])
    seen = []
    for x, y in View(b.train, idx, CPU).loader(batch_size=2):
        assert x.shape[1:] == (3, 224, 224) and x.shape[0] in (1, 2)
        assert x.dtype == torch.float32
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert y.dtype == torch.int64
        seen.append(y)
    assert [t.shape[0] for t in seen] == [2, 2, 1]
    assert torch.cat(seen).tolist() == b.train.targets[idx].tolist()

    # the evaluation transform is deterministic; training augmentation keeps the shape
    val = View(b.test, torch.arange(len(b.test)), CPU)
    x1, y1 = val.tensors()
    x2, _ = val.tensors()
    assert x1.shape == (6, 3, 224, 224) and torch.equal(x1, x2)
    assert y1.tolist() == [0, 0, 1, 1, 2, 2]
    torch.manual_seed(0)
    xa, ya = next(iter(View(b.train, idx, CPU).loader(batch_size=3, augment="crop_flip")))
    assert xa.shape == (3, 3, 224, 224) and ya.tolist() == b.train.targets[idx[:3]].tolist()


def test_imagenet_layout_at_root(tmp_path, cache):
    root = tmp_path / "in1k"
    _write_imagenet(root, per_class=1)
    b = load_dataset("imagenet", Locations(root, cache))
    assert len(b.train) == 3 and b.class_names == WNIDS


# ---------------------------------------------------------------------------------------
# carving and forget sets


@pytest.fixture
def synth(tmp_path) -> DatasetBundle:
    return load_dataset("synthetic", Locations(None, tmp_path / "cache"))


def test_carve_defaults_keep_everything(synth):
    c = carve(synth, DataSpec("synthetic"))
    assert torch.equal(c.train, torch.arange(256))
    assert c.val.numel() == 0
    assert torch.equal(c.test, torch.arange(128))
    assert c.train.dtype == c.val.dtype == c.test.dtype == torch.int64


def test_carve_validation_holdout(synth):
    spec = DataSpec("synthetic", val_fraction=0.2, split_seed=3)
    c = carve(synth, spec)
    tr, va = set(c.train.tolist()), set(c.val.tolist())
    assert not tr & va
    assert tr | va == set(range(256))
    assert len(va) == 52  # sklearn rounds the held-out share up: ceil(0.2 * 256)
    # stratified: every class in val, in proportion (64 per class -> ~13 each)
    val_y = synth.train.targets[c.val]
    counts = torch.bincount(val_y, minlength=4)
    assert (counts > 0).all() and int(counts.max() - counts.min()) <= 1
    assert torch.equal(c.train, c.train.sort().values) and torch.equal(c.val, c.val.sort().values)
    # deterministic for a seed, different across seeds
    c2 = carve(synth, spec)
    assert torch.equal(c.train, c2.train) and torch.equal(c.val, c2.val)
    c3 = carve(synth, DataSpec("synthetic", val_fraction=0.2, split_seed=4))
    assert not torch.equal(c.val, c3.val)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1])
def test_carve_rejects_bad_val_fraction(synth, bad):
    with pytest.raises(BenchError, match="val_fraction"):
        carve(synth, DataSpec("synthetic", val_fraction=bad))


def test_carve_train_and_test_subsets(synth):
    c = carve(synth, DataSpec("synthetic", train_subset=50, test_subset=20, split_seed=1))
    assert c.train.numel() == 50 and len(set(c.train.tolist())) == 50
    assert c.test.numel() == 20 and len(set(c.test.tolist())) == 20
    assert int(c.train.min()) >= 0 and int(c.train.max()) < 256
    assert int(c.test.min()) >= 0 and int(c.test.max()) < 128
    assert torch.equal(c.train, c.train.sort().values)
    again = carve(synth, DataSpec("synthetic", train_subset=50, test_subset=20, split_seed=1))
    assert torch.equal(c.train, again.train) and torch.equal(c.test, again.test)
    other = carve(synth, DataSpec("synthetic", train_subset=50, split_seed=2))
    assert not torch.equal(c.train, other.train)
    # a subset as large as the split keeps all of it
    full = carve(synth, DataSpec("synthetic", train_subset=10_000))
    assert torch.equal(full.train, torch.arange(256))


def test_carve_subset_excludes_validation(synth):
    c = carve(synth, DataSpec("synthetic", val_fraction=0.25, train_subset=40, split_seed=5))
    assert c.train.numel() == 40
    assert not set(c.train.tolist()) & set(c.val.tolist())
    assert c.val.numel() == 64


def test_carve_subset_must_be_positive(synth):
    with pytest.raises(BenchError, match="train_subset"):
        carve(synth, DataSpec("synthetic", train_subset=0))


def test_select_forget_instance_nested_prefixes():
    y = torch.arange(200) % 4
    f8 = select_forget(y, ForgetSpec("instance", k=8), seed=11)
    f32 = select_forget(y, ForgetSpec("instance", k=32), seed=11)
    assert f8.numel() == 8 and len(set(f8.tolist())) == 8
    assert f32.numel() == 32 and len(set(f32.tolist())) == 32
    assert set(f8.tolist()) <= set(f32.tolist())
    assert torch.equal(f8, f8.sort().values)
    assert int(f32.min()) >= 0 and int(f32.max()) < 200
    assert torch.equal(f8, select_forget(y, ForgetSpec("instance", k=8), seed=11))
    assert set(select_forget(y, ForgetSpec("instance", k=32), seed=12).tolist()) != set(
        f32.tolist()
    )


def test_select_forget_fraction_shares_the_permutation():
    y = torch.arange(200) % 4
    f = select_forget(y, ForgetSpec("fraction", fraction=0.1), seed=5)
    assert f.numel() == 20 and len(set(f.tolist())) == 20
    inst = select_forget(y, ForgetSpec("instance", k=20), seed=5)
    assert torch.equal(f, inst)
    assert set(select_forget(y, ForgetSpec("fraction", fraction=0.05), seed=5).tolist()) <= set(
        f.tolist()
    )


def test_select_forget_class():
    y = torch.tensor([0, 2, 1, 2, 3, 2, 0, 1])
    f = select_forget(y, ForgetSpec("class", classes=(2,)), seed=0)
    assert f.tolist() == [1, 3, 5]
    f2 = select_forget(y, ForgetSpec("class", classes=(0, 3)), seed=99)
    assert f2.tolist() == [0, 4, 6]
    with pytest.raises(BenchError, match="do not exist"):
        select_forget(y, ForgetSpec("class", classes=(4,)), seed=0)


@pytest.mark.parametrize("k", [10, 11, 100])
def test_select_forget_too_large(k):
    y = torch.arange(10) % 2
    with pytest.raises(BenchError, match="smaller k"):
        select_forget(y, ForgetSpec("instance", k=k), seed=0)


def test_select_forget_rounding_to_empty():
    with pytest.raises(BenchError, match="empty"):
        select_forget(torch.arange(10) % 2, ForgetSpec("fraction", fraction=0.01), seed=0)


def test_retain_positions_complement():
    forget = torch.tensor([1, 4, 7])
    r = retain_positions(10, forget)
    assert r.tolist() == [0, 2, 3, 5, 6, 8, 9]


# ---------------------------------------------------------------------------------------
# batch augmentation


def _batch(n=6, c=3, h=8, w=8, seed=0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["crop", "crop_flip"])
def test_augment_shape_preserved(kind):
    x = _batch(n=5, c=3, h=8, w=6)
    out = augment_batch(x, kind, 3, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype


def test_augment_crop_without_padding_is_identity():
    x = _batch()
    assert torch.equal(augment_batch(x, "crop", 0, torch.Generator().manual_seed(0)), x)


def test_augment_crop_flip_without_padding_only_flips():
    x = _batch(n=32)
    out = augment_batch(x, "crop_flip", 0, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)]
    same = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert any(flipped) and any(same)


def _candidates(img: torch.Tensor, p: int) -> list[torch.Tensor]:
    _, h, w = img.shape
    padded = torch.nn.functional.pad(img, (p,) * 4)
    crops = [padded[:, r : r + h, c : c + w] for r in range(2 * p + 1) for c in range(2 * p + 1)]
    return crops + [cr.flip(2) for cr in crops]


def test_augment_crop_flip_outputs_are_shifted_crops_or_flips():
    p = 2
    x = _batch(n=16)
    out = augment_batch(x, "crop_flip", p, torch.Generator().manual_seed(42))
    for o, xi in zip(out, x):
        assert any(torch.equal(o, cand) for cand in _candidates(xi, p))
    # not everything is the identity
    assert not torch.equal(out, x)


def test_augment_crop_flip_matches_manual_crop():
    """Replay the generator's draws (offsets, then flips) and crop with plain slicing."""
    p, n, h, w = 4, 8, 8, 8
    x = _batch(n=n, h=h, w=w, seed=1)
    out = augment_batch(x, "crop_flip", p, torch.Generator().manual_seed(123))

    g = torch.Generator().manual_seed(123)
    off = torch.randint(0, 2 * p + 1, (n, 2), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (p,) * 4)
    for i in range(n):
        r, c = int(off[i, 0]), int(off[i, 1])
        expect = padded[i, :, r : r + h, c : c + w]
        if flip[i]:
            expect = expect.flip(2)
        assert torch.equal(out[i], expect), i


def test_augment_crop_known_offset():
    """A hand-checked case: 1x3x3 image, padding 1; the generator's first draws are replayed
    to learn the offset, and the expected crop is written out with slicing."""
    x = torch.arange(1, 10, dtype=torch.float32).view(1, 1, 3, 3)
    out = augment_batch(x, "crop", 1, torch.Generator().manual_seed(5))
    r, c = torch.randint(0, 3, (1, 2), generator=torch.Generator().manual_seed(5))[0].tolist()
    padded = torch.zeros(1, 1, 5, 5)
    padded[..., 1:4, 1:4] = x
    assert torch.equal(out, padded[..., r : r + 3, c : c + 3])
    # the centre offset would be the identity; zero rows/cols appear exactly where shifted
    assert (out == 0).any() == ((r, c) != (1, 1))


def test_augment_is_deterministic_for_a_generator():
    x = _batch(n=10)
    a = augment_batch(x, "crop_flip", 4, torch.Generator().manual_seed(7))
    b = augment_batch(x, "crop_flip", 4, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_tensor_split_batches_with_augmentation():
    x = (torch.arange(4 * 3 * 8 * 8) % 256).to(torch.uint8).view(4, 3, 8, 8)
    split = TensorSplit(x, torch.tensor([0, 1, 2, 3]))
    view = View(split, torch.tensor([2, 0, 3]), CPU)
    plain = list(view.loader(batch_size=2))
    assert [b[0].shape[0] for b in plain] == [2, 1]
    assert torch.equal(torch.cat([b[1] for b in plain]), torch.tensor([2, 0, 3]))
    assert torch.allclose(plain[0][0][0], x[2].float() / 255)
    g = torch.Generator().manual_seed(0)
    aug = list(
        view.loader(batch_size=3, shuffle=True, generator=g, augment="crop_flip", crop_padding=2)
    )
    xa, ya = aug[0]
    assert xa.shape == (3, 3, 8, 8) and sorted(ya.tolist()) == [0, 2, 3]
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    with pytest.raises(ValueError, match="generator"):
        view.loader(batch_size=2, shuffle=True)


def test_cifar10_jpeg_tarball_original_order(tmp_path, cache):
    """With the label file of the original order beside the tarball, images come back in the
    original dataset order (so forget-set indices match torchvision's format)."""
    root = tmp_path / "data" / "cifar10-jpeg"
    _write_jpeg_tarball(root / "cifar10_jpeg.tar.gz", tmp_path)
    # one image per class: original order = a permutation of the classes
    train_order = np.array([6, 9, 4, 1, 2, 7, 8, 3, 5, 0], dtype=np.uint8)
    test_order = np.array([3, 8, 0, 6, 1, 9, 5, 7, 4, 2], dtype=np.uint8)
    np.savez(
        root / "cifar10_labels_original_order.npz",
        train_labels=train_order,
        test_labels=test_order,
        class_names=np.array(CIFAR10_CLASSES),
    )
    b = load_dataset("cifar10", Locations(tmp_path / "data", cache))
    assert b.train.targets.tolist() == train_order.tolist()
    assert b.test.targets.tolist() == test_order.tolist()
    # the pixels moved with their labels: compare with folder order from a plain export
    datasets_mod._LOADED.clear()
    plain = load_dataset("cifar10", Locations(next((cache / "data").glob("cifar10_jpeg-*")), cache))
    assert torch.equal(b.train.x, plain.train.x[torch.from_numpy(train_order.astype(np.int64))])


def test_view_sample_is_seeded_sorted_and_bounded():
    import torch

    from bench.data.splits import TensorSplit, View

    split = TensorSplit(torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50))
    view = View(split, torch.arange(10, 50))
    a, b = view.sample(8, seed=3), view.sample(8, seed=3)
    assert torch.equal(a.indices, b.indices) and len(a) == 8
    assert torch.equal(a.indices, a.indices.sort().values)
    assert set(a.indices.tolist()) <= set(range(10, 50))
    assert not torch.equal(view.sample(8, seed=4).indices, a.indices)
    assert view.sample(100, seed=0) is view
