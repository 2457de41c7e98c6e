"""``--dataset folder:PATH`` (issue #16, part 3): any image folder as a dataset, decoded once
into uint8 tensors with its statistics, cached, resized to one size, grey when all files are,
with val/ as the validation split, streamed beyond a size limit, and usable from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bench.data.datasets as datasets_mod
import bench.data.image_folder as folder_mod
from bench.core.errors import BenchError
from bench.core.spec import DataSpec, Recipe
from bench.data import DATASETS, FileSplit, Locations, TensorSplit, carve, load_dataset
from bench.run import main
from bench.suites.catalog import dataset_defaults

CLASSES = ["ant", "bee", "cat"]  # written unsorted below: labels follow the sorted names


@pytest.fixture(autouse=True)
def _fresh_memo():
    datasets_mod._LOADED.clear()
    yield
    datasets_mod._LOADED.clear()


def _write(
    base: Path,
    n: dict[str, int] | None = None,
    size: tuple[int, int] = (12, 12),
    grey: bool = False,
    odd: int = 0,
    seed: int = 0,
) -> dict[str, list[tuple[np.ndarray, int]]]:
    """``base/<split>/<class>/NN.png`` (``n`` per class and split), ``size`` (H, W); ``odd``
    extra train images of class ``bee`` sized 12x16 and 16x10 in turn (resized on load).
    Returns each split's images (HWC uint8, or HW grey) and labels in folder order."""
    rng = np.random.default_rng(seed)
    n = n or {"train": 4, "test": 2}
    out: dict[str, list[tuple[np.ndarray, int]]] = {}
    for split, per_class in n.items():
        out[split] = []
        for ci, cls in enumerate(CLASSES):
            d = base / split / cls
            d.mkdir(parents=True, exist_ok=True)
            shapes = [size] * per_class
            if split == "train" and cls == "bee":
                shapes += [(12, 16) if j % 2 == 0 else (16, 10) for j in range(odd)]
            for j, (h, w) in enumerate(shapes):
                shape = (h, w) if grey else (h, w, 3)
                a = rng.integers(0, 256, size=shape, dtype=np.uint8)
                Image.fromarray(a, "L" if grey else "RGB").save(d / f"{j:02d}.png")
                out[split].append((a, ci))
    return out


def _expected(rows, size: tuple[int, int], grey: bool = False) -> torch.Tensor:
    """What decoding should give: each image as is, or torchvision's Resize(side) +
    CenterCrop(side) when its size differs (square targets)."""
    from torchvision import transforms as T

    fix = T.Compose([T.Resize(size[0]), T.CenterCrop(size[0])])
    xs = []
    for a, _ in rows:
        if a.shape[:2] != size:
            a = np.asarray(fix(Image.fromarray(a, "L" if grey else "RGB")))
        xs.append(a[..., None] if grey else a)
    return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2)


def _loc(tmp_path: Path, root: Path | None = None) -> Locations:
    return Locations(root, tmp_path / "cache")


def test_load_gives_shapes_labels_classes_and_numpy_statistics(tmp_path, caplog):
    base = tmp_path / "flowers"
    w = _write(base, odd=3)
    name = f"folder:{base}"
    with caplog.at_level("WARNING"):
        b = load_dataset(name, _loc(tmp_path))
    assert b.name == name and b.source == f"image-folder:{base}"
    assert (b.num_classes, b.class_names, b.input_shape) == (3, CLASSES, (3, 12, 12))
    assert (len(b.train), len(b.test), b.val) == (15, 6, None)
    for split, rows in ((b.train, w["train"]), (b.test, w["test"])):
        assert isinstance(split, TensorSplit) and split.x.dtype == torch.uint8
        assert torch.equal(split.x, _expected(rows, (12, 12)))
        assert split.targets.tolist() == [c for _, c in rows]
    # the 3 odd-sized images were resized, and that was said once
    said = [r.getMessage() for r in caplog.records if "resized" in r.getMessage()]
    assert len(said) == 1 and "3 of 21 images" in said[0] and "12x12" in said[0]
    # per-channel statistics of the train pixels in [0, 1], as numpy computes them
    px = b.train.x.permute(0, 2, 3, 1).reshape(-1, 3).numpy() / 255.0
    np.testing.assert_allclose(b.mean, px.mean(axis=0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.std, px.std(axis=0), rtol=0, atol=1e-9)
    # batches stay uint8 until batched: float in [0, 1]
    (x, y), *_ = b.train.batches(torch.arange(4), 4, torch.device("cpu"))
    assert x.dtype == torch.float32 and torch.equal(x, b.train.x[:4].float() / 255)


def test_grey_folder_has_one_channel_and_one_colour_file_makes_it_rgb(tmp_path):
    base = tmp_path / "grey"
    w = _write(base, size=(8, 8), grey=True)
    b = load_dataset(f"folder:{base}", _loc(tmp_path))
    assert b.input_shape == (1, 8, 8) and len(b.mean) == len(b.std) == 1
    assert torch.equal(b.train.x, _expected(w["train"], (8, 8), grey=True))
    px = w["train"][0][0] / 255.0  # spot check: the first image
    assert np.allclose(b.train.x[0, 0].numpy() / 255.0, px)
    # one RGB file among grey ones: the whole folder is RGB
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8), "RGB").save(base / "test/cat/rgb.png")
    datasets_mod._LOADED.clear()
    b = load_dataset(f"folder:{base}", _loc(tmp_path))
    assert b.input_shape == (3, 8, 8) and len(b.mean) == 3
    assert torch.equal(b.train.x[:, 0], b.train.x[:, 2])  # grey pixels, repeated


def test_second_load_reads_the_cache_not_the_images(tmp_path, monkeypatch):
    base = tmp_path / "d"
    _write(base, odd=1)
    b = load_dataset(f"folder:{base}", _loc(tmp_path))
    (entry,) = (tmp_path / "cache" / "data").glob("folder-d-*.pt")
    datasets_mod._LOADED.clear()

    def refuse(*a, **k):
        raise AssertionError("images read again despite the cache")

    monkeypatch.setattr(folder_mod, "decode_images", refuse)
    monkeypatch.setattr(folder_mod, "header", refuse)
    b2 = load_dataset(f"folder:{base}", _loc(tmp_path))
    assert torch.equal(b2.train.x, b.train.x) and torch.equal(b2.test.targets, b.test.targets)
    assert (b2.mean, b2.std, b2.input_shape) == (b.mean, b.std, b.input_shape)
    assert list((tmp_path / "cache" / "data").glob("folder-d-*.pt")) == [entry]


def test_relative_path_under_data_root_then_current_directory(tmp_path, monkeypatch):
    _write(tmp_path / "root" / "sub" / "d", n={"train": 1, "test": 1})
    _write(tmp_path / "cwd" / "sub" / "d", n={"train": 2, "test": 1})
    monkeypatch.chdir(tmp_path / "cwd")
    b = load_dataset("folder:sub/d", _loc(tmp_path, tmp_path / "root"))
    assert len(b.train) == 3 and b.name == "folder:sub/d"
    b = load_dataset("folder:sub/d", _loc(tmp_path, tmp_path / "elsewhere"))
    assert len(b.train) == 6
    b = load_dataset("folder:sub/d", _loc(tmp_path))
    assert len(b.train) == 6


def _no_test(base: Path) -> None:
    _write(base)
    for f in (base / "test").rglob("*.png"):
        f.unlink()
    for d in sorted((base / "test").iterdir()):
        d.rmdir()
    (base / "test").rmdir()


def _mismatch(base: Path) -> None:
    _write(base)
    (base / "test" / "cat").rename(base / "test" / "cow")


def _empty_class(base: Path) -> None:
    _write(base)
    for f in (base / "train" / "bee").iterdir():
        f.unlink()


@pytest.mark.parametrize(
    "make,needles",
    [
        (lambda base: None, ["no folder", "train/<class>/*", "test/<class>/*"]),
        (_no_test, ["no test/ folder", "test/<class>/*"]),
        (_mismatch, ["differ", "only in train/: cat", "only in test/: cow", "same class"]),
        (_empty_class, ["bee", "no image file", ".png"]),
    ],
    ids=["missing", "no-test", "classes-differ", "empty-class"],
)
def test_layout_errors_are_one_line_and_name_the_layout(tmp_path, make, needles):
    base = tmp_path / "d"
    make(base)
    with pytest.raises(BenchError) as e:
        load_dataset(f"folder:{base}", _loc(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and str(base) in msg
    for needle in needles:
        assert needle in msg, msg


def test_val_folder_is_the_validation_split_unless_held_out(tmp_path):
    base = tmp_path / "d"
    w = _write(base, n={"train": 4, "test": 2, "val": 1})
    b = load_dataset(f"folder:{base}", _loc(tmp_path))
    assert torch.equal(b.val.x, _expected(w["val"], (12, 12)))
    c = carve(b, DataSpec(f"folder:{base}"))
    assert c.val_split is b.val and c.val.tolist() == [0, 1, 2] and len(c.train) == 12
    c = carve(b, DataSpec(f"folder:{base}", val_fraction=0.25))  # held out of train instead
    assert c.val_split is b.train and len(c.val) == 3 and len(c.train) == 9


def test_folder_over_the_size_limit_streams_from_disk(tmp_path, monkeypatch):
    base = tmp_path / "d"
    _write(base, odd=1)  # 19 images of 3x12x12: 8,208 bytes decoded
    in_memory = load_dataset(f"folder:{base}", _loc(tmp_path))
    datasets_mod._LOADED.clear()
    monkeypatch.setenv("BENCH_FOLDER_MAX_BYTES", "4K")
    # a folder of more train images than HEADER_SAMPLE is sized from that many headers first
    monkeypatch.setattr(folder_mod, "HEADER_SAMPLE", 4)
    read = []
    real_header = folder_mod.header
    monkeypatch.setattr(folder_mod, "header", lambda p: read.append(p) or real_header(p))
    loc = Locations(None, tmp_path / "cache2")
    b = load_dataset(f"folder:{base}", loc)
    assert isinstance(b.train, FileSplit) and "(streamed)" in b.source
    assert len(read) == 4
    assert b.input_shape == in_memory.input_shape
    np.testing.assert_allclose(b.mean, in_memory.mean, atol=1e-12)  # sample = all 13 images
    np.testing.assert_allclose(b.std, in_memory.std, atol=1e-12)
    b.test.num_workers = b.train.num_workers = 0
    (x, y), *_ = b.test.batches(torch.arange(6), 6, torch.device("cpu"))
    assert torch.equal(x, in_memory.test.x.float() / 255) and torch.equal(y, in_memory.test.targets)
    (x, _), *_ = b.train.batches(torch.arange(13), 13, torch.device("cpu"))
    assert torch.equal(x, in_memory.train.x.float() / 255)  # the odd image resized alike
    # the streamed entry is cached too; with the limit raised the folder is decoded
    datasets_mod._LOADED.clear()
    monkeypatch.setattr(folder_mod, "header", None)
    assert isinstance(load_dataset(f"folder:{base}", loc).train, FileSplit)
    datasets_mod._LOADED.clear()
    monkeypatch.setattr(folder_mod, "header", real_header)
    monkeypatch.delenv("BENCH_FOLDER_MAX_BYTES")
    b = load_dataset(f"folder:{base}", loc)
    assert isinstance(b.train, TensorSplit) and torch.equal(b.train.x, in_memory.train.x)
    monkeypatch.setenv("BENCH_FOLDER_MAX_BYTES", "lots")
    datasets_mod._LOADED.clear()
    with pytest.raises(BenchError, match="8G"):
        load_dataset(f"folder:{base}", Locations(None, tmp_path / "cache3"))


def test_registry_defaults_and_listing(tmp_path, capsys):
    assert "folder:/any/where" in DATASETS and "folder:" not in DATASETS
    entry = DATASETS.entry("folder:/any/where")
    assert entry.name == "folder:/any/where" and entry.meta["offline"]
    with pytest.raises(BenchError, match="folder:PATH"):
        DATASETS.entry("folder: ")
    assert dataset_defaults("folder:/any/where") == ("smallcnn", Recipe())
    assert main(["--list", "datasets"]) == 0
    assert "folder:PATH" in capsys.readouterr().out.split()


def _cli(base: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--dataset",
        f"folder:{base}",
        "--seeds",
        "0",
        "--out",
        str(tmp_path / "out"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--executor",
        "debug",
        "--no-progress",
        "--no-report",
        "--no-summary",
        *extra,
    ]


def test_cli_runs_a_folder_dataset_end_to_end(tmp_path, capsys):
    base = tmp_path / "d"
    _write(base, n={"train": 6, "test": 2})
    argv = _cli(
        base, tmp_path, "--method", "finetune", "--forget", "2", "--hp", "finetune.epochs=1"
    )
    assert main(argv) == 0, capsys.readouterr().err
    (rec,) = (tmp_path / "out" / "records").glob("*.jsonl")
    lines = [json.loads(s) for s in rec.read_text().splitlines()]
    assert lines[-1]["status"] == "done"
    assert {r["dataset"] for r in lines[:-1] if "dataset" in r} == {f"folder:{base}"}
    # a method that needs a validation split: refused without val/ (a dry run only warns),
    # accepted with it
    capsys.readouterr()
    nt = _cli(base, tmp_path, "--method", "nabla_tau", "--forget", "2", "--dry-run")
    assert main(nt) == 0 and "needs a validation split" in capsys.readouterr().err
    _write(base, n={"val": 1}, seed=1)
    datasets_mod._LOADED.clear()
    assert main(nt) == 0 and "validation" not in capsys.readouterr().err


def test_cli_bad_folder_is_one_line_exit_2(tmp_path, capsys):
    base = tmp_path / "d"
    _mismatch(base)
    assert main(_cli(base, tmp_path, "--method", "finetune", "--forget", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "only in test/: cow" in err


# -- links and degenerate folders (fault battery): never silent ---------------------------------


def _train_counts(base: Path, tmp_path: Path) -> list[int]:
    b = load_dataset(f"folder:{base}", _loc(tmp_path))
    return torch.bincount(b.train.targets, minlength=len(CLASSES)).tolist()


def test_a_symlink_loop_is_not_followed_and_is_counted(tmp_path, caplog, capsys):
    """``train/ant/loop -> ..`` made torchvision's walk read every class ~40 times as ``ant``."""
    base = tmp_path / "d"
    _write(base)
    (base / "train" / "ant" / "loop").symlink_to("..")
    (base / "train" / "bee" / "self").symlink_to(".")
    with caplog.at_level("WARNING"):
        assert _train_counts(base, tmp_path) == [4] * len(CLASSES)
    assert "skipped 2 link(s) that loop back" in caplog.text
    # through the CLI: the run goes on with the right labels and says what it skipped once
    caplog.clear()
    datasets_mod._LOADED.clear()
    folder_mod._WARNED.clear()
    argv = _cli(base, tmp_path, "--method", "finetune", "--forget", "2")
    with caplog.at_level("WARNING"):
        assert main([*argv, "--hp", "finetune.epochs=1"]) == 0, capsys.readouterr().err
    assert caplog.text.count("link(s) that loop back") == 1


def test_links_outside_the_root_are_skipped_unless_asked_for(tmp_path, caplog, monkeypatch):
    base = tmp_path / "d"
    _write(base)
    outside = tmp_path / "elsewhere"
    _write(outside, n={"train": 3}, seed=5)
    (base / "train" / "ant" / "more").symlink_to(outside / "train" / "ant")
    (base / "train" / "cat" / "x.png").symlink_to(outside / "train" / "cat" / "00.png")
    with caplog.at_level("WARNING"):
        assert _train_counts(base, tmp_path) == [4] * len(CLASSES)
    assert "2 link(s) that lead outside it" in caplog.text
    assert folder_mod.FOLLOW_EXTERNAL_ENV in caplog.text
    monkeypatch.setenv(folder_mod.FOLLOW_EXTERNAL_ENV, "1")
    datasets_mod._LOADED.clear()
    counts = _train_counts(base, tmp_path)
    assert counts[CLASSES.index("ant")] == 7 and counts[CLASSES.index("cat")] == 5


def test_links_inside_the_root_are_followed(tmp_path):
    base = tmp_path / "d"
    _write(base)
    store = base / "store"
    _write(store, n={"train": 2}, seed=3)
    (base / "train" / "ant" / "extra").symlink_to(store / "train" / "ant")
    assert _train_counts(base, tmp_path)[CLASSES.index("ant")] == 6


def test_a_one_class_folder_is_refused_before_any_work(tmp_path, capsys):
    base = tmp_path / "d"
    _write(base)
    for split in ("train", "test"):
        for c in CLASSES[1:]:
            for f in (base / split / c).iterdir():
                f.unlink()
            (base / split / c).rmdir()
    assert main(_cli(base, tmp_path, "--method", "neggrad", "--forget", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "1 class folder" in err and "at least 2 classes" in err
    assert not (tmp_path / "out" / "records").exists()
