"""Faults in data and caches (issue #15 items 2, 3, 5): crafted or damaged CIFAR pickles, a
truncated JPEG tarball, a corrupt image, damaged decoded-data / pretrained / oracle caches.

Bad input ends in one line on stderr and exit status 2, and nothing in a data root is executed;
a damaged cache entry is moved aside (``*.corrupt``) with one warning line and rebuilt.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import bench.data.datasets as datasets_mod
from bench.data import carve, load_dataset
from bench.data.datasets import Locations
from bench.run import main
from tests.helpers import tiny_spec
from tests.test_data import (
    CIFAR10_CLASSES,
    _write_cifar10_tv,
    _write_jpeg_tarball,
    _write_png_folder,
)

ROOT = Path(__file__).resolve().parent.parent
BATCHES = "cifar-10-batches-py"


@pytest.fixture(autouse=True)
def fresh_memo():
    datasets_mod._LOADED.clear()
    yield
    datasets_mod._LOADED.clear()


def _cli(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--dataset",
        "cifar10",
        "--data-root",
        str(root),
        "--method",
        "neggrad",
        "--seeds",
        "0",
        "--forget",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
        *extra,
    ]


def _one_line_exit_2(argv: list[str], capsys, *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# ---------------------------------------------------------------------------------------
# CIFAR pickles: nothing executes; fixtures still load; garbage is one line


class _Payload:
    """Unpickling this runs ``touch MARKER`` (a stand-in for any shell command)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_crafted_pickle_is_refused_without_executing(tmp_path, capsys, dry_run):
    root = tmp_path / "data"
    _write_cifar10_tv(root)
    marker = tmp_path / "pwned"
    crafted = {"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 4, "x": _Payload(marker)}
    (root / BATCHES / "data_batch_1").write_bytes(pickle.dumps(crafted, protocol=2))
    code = main(_cli(root, tmp_path, *(["--dry-run"] if dry_run else [])))
    err = capsys.readouterr().err.strip()
    assert not marker.exists(), "a pickle in the data root ran code"
    assert "data_batch_1" in err and "MD5" in err and "system" in err, err
    # data that is there but unsafe is refused by a dry run too (missing data only warns: it
    # may live where the jobs run)
    assert code == 2 and err.startswith("error: ") and "\n" not in err


def test_fixture_pickles_load_without_the_unrestricted_unpickler(tmp_path, monkeypatch):
    """Hand-made fixtures (any pickle protocol, bytes keys, numpy labels) load through the
    restricted unpickler; ``pickle.load`` / ``pickle.loads`` (which import anything) are never
    called on files of the data root."""
    root = tmp_path / "data"
    w = _write_cifar10_tv(root)
    base = root / BATCHES
    # re-write one batch at the newest protocol, with bytes keys and numpy int64 labels
    entry = pickle.loads((base / "data_batch_2").read_bytes())
    labels = np.asarray(entry["labels"], dtype=np.int64)
    entry = {b"data": entry["data"], b"labels": list(labels)}
    (base / "data_batch_2").write_bytes(pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL))

    def refuse(*a, **k):
        raise AssertionError("unrestricted pickle.load used on a data file")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    b = load_dataset("cifar10", Locations(root, tmp_path / "cache"))
    assert b.train.targets.tolist() == w["train"][1]
    assert torch.equal(b.train.x, torch.from_numpy(w["train"][0].reshape(-1, 3, 32, 32)))
    assert b.class_names == CIFAR10_CLASSES


@pytest.mark.parametrize("fault", ["garbage", "truncated", "not-cifar"])
def test_bad_cifar_pickle_one_line_exit_2(tmp_path, capsys, fault):
    root = tmp_path / "data"
    _write_cifar10_tv(root)
    bad = root / BATCHES / "data_batch_4"
    if fault == "garbage":
        bad.write_bytes(b"\x80\x02this is not a pickle at all" * 10)
    elif fault == "truncated":
        bad.write_bytes(bad.read_bytes()[:300])
    else:
        bad.write_bytes(pickle.dumps(["a list, not a CIFAR batch"], protocol=2))
    _one_line_exit_2(_cli(root, tmp_path), capsys, "data_batch_4", "--download")


# ---------------------------------------------------------------------------------------
# JPEG tarball, image folder


def test_truncated_jpeg_tarball_one_line_no_leftover(tmp_path, capsys):
    root = tmp_path / "data"
    tar = root / "cifar10-jpeg" / "cifar10_jpeg.tar.gz"
    _write_jpeg_tarball(tar, tmp_path)
    whole = tar.read_bytes()
    tar.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises((tarfile.TarError, EOFError, OSError)), tarfile.open(tar) as tf:
        tf.getmembers()  # the file is really damaged
    _one_line_exit_2(_cli(root, tmp_path), capsys, str(tar))
    data = tmp_path / "cache" / "data"
    assert not data.exists() or not any(data.iterdir()), list(data.iterdir())


@pytest.mark.parametrize("fault", ["garbage", "truncated"])
def test_corrupt_image_in_folder_one_line_exit_2(tmp_path, capsys, fault):
    root = tmp_path / "data"
    _write_png_folder(root / "cifar10", CIFAR10_CLASSES, per_class=1)
    bad = root / "cifar10" / "train" / "dog" / "0000.png"
    bad.write_bytes(b"not an image" if fault == "garbage" else bad.read_bytes()[:200])
    _one_line_exit_2(_cli(root, tmp_path), capsys, str(bad))
    assert not list((tmp_path / "cache").rglob("*.pt"))  # nothing cached for a bad export


# ---------------------------------------------------------------------------------------
# decoded-data cache


def _folder_cache(tmp_path: Path) -> tuple[Path, Path, object]:
    root = tmp_path / "data"
    _write_png_folder(root / "cifar10", CIFAR10_CLASSES, per_class=1)
    b = load_dataset("cifar10", Locations(root, tmp_path / "cache"))
    datasets_mod._LOADED.clear()
    (entry,) = (tmp_path / "cache" / "data").glob("cifar10-folder-*.pt")
    return root, entry, b


def test_truncated_decoded_data_cache_is_moved_aside_and_rebuilt(tmp_path):
    root, entry, b = _folder_cache(tmp_path)
    entry.write_bytes(entry.read_bytes()[:1000])
    argv = [sys.executable, "-m", "bench.run", *_cli(root, tmp_path, "--dry-run")]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if entry.name in ln]
    assert len(lines) == 1 and "corrupt" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert entry.with_name(entry.name + ".corrupt").exists()
    b2 = load_dataset("cifar10", Locations(root, tmp_path / "cache"))
    assert torch.equal(b2.train.x, b.train.x) and torch.equal(b2.test.targets, b.test.targets)


def test_decoded_data_cache_content_hash_is_checked(tmp_path, caplog):
    """A loadable cache entry whose tensors no longer match its stored hash is not used."""
    root, entry, b = _folder_cache(tmp_path)
    blob = torch.load(entry, weights_only=True)
    x, y = blob["train"]
    x = x.clone()
    x[0, 0, 0, 0] ^= 0xFF
    blob["train"] = (x, y)
    torch.save(blob, entry)
    with caplog.at_level(logging.WARNING):
        b2 = load_dataset("cifar10", Locations(root, tmp_path / "cache"))
    assert torch.equal(b2.train.x, b.train.x)
    assert entry.with_name(entry.name + ".corrupt").exists()
    assert any(entry.name in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------
# pretrained and oracle models


@pytest.fixture
def env(tmp_path):
    from bench.protocol.stages import Env

    return Env(out=tmp_path / "out", cache=tmp_path / "cache", device=torch.device("cpu"))


def _pretrain_file(env) -> Path:
    (path,) = (env.cache / "models").glob("pretrain-*.pt")
    return path


def _no_training(monkeypatch):
    import bench.protocol.stages

    def refuse(*a, **k):
        raise AssertionError("trained again although a valid cache entry exists")

    monkeypatch.setattr(bench.protocol.stages, "train", refuse)


def _warned_once(caplog, path: Path) -> None:
    lines = [r.getMessage() for r in caplog.records if path.name in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and ".corrupt" in lines[0], lines


def test_truncated_pretrained_model_is_rebuilt_once(env, caplog, monkeypatch):
    from bench.protocol.stages import execute

    spec = tiny_spec("neggrad", k=8)
    assert execute(spec, env) == "done"
    path = _pretrain_file(env)
    path.write_bytes(path.read_bytes()[:2000])
    with caplog.at_level(logging.WARNING):
        assert execute(spec, env, skip_done=False) == "done"
    _warned_once(caplog, path)
    assert path.with_name(path.name + ".corrupt").exists()
    _no_training(monkeypatch)  # a second run uses the rebuilt entry
    caplog.clear()
    assert execute(spec, env, skip_done=False) == "done"
    assert not [r for r in caplog.records if path.name in r.getMessage()]


def test_checkpoint_with_another_key_is_not_used(env, caplog, monkeypatch):
    from bench.protocol.stages import pretrain_key, pretrained_model

    spec = tiny_spec("neggrad", k=8)
    other = dataclasses.replace(spec, train_seed=1)
    carved = carve(load_dataset("synthetic", env.locations), spec.data)
    pretrained_model(other, carved, env)
    (theirs,) = (env.cache / "models").glob("pretrain-*.pt")
    key = pretrain_key(spec, len(carved.train))
    ours = theirs.with_name(f"pretrain-{key}.pt")
    ours.write_bytes(theirs.read_bytes())  # a loadable checkpoint, but another model
    with caplog.at_level(logging.WARNING):
        _, info = pretrained_model(spec, carved, env)
    assert info["cached"] is False and info["key"] == key
    _warned_once(caplog, ours)
    assert ours.with_name(ours.name + ".corrupt").exists()
    _no_training(monkeypatch)
    _, again = pretrained_model(spec, carved, env)
    assert again["cached"] is True and again["key"] == info["key"]


def test_truncated_oracle_is_rebuilt(env, caplog):
    from bench.protocol.oracle import build_oracle_pool

    spec = tiny_spec("neggrad", k=8)
    carved = carve(load_dataset("synthetic", env.locations), spec.data)
    forgotten = torch.arange(8)
    first = build_oracle_pool(spec, carved, forgotten, 1, env.cache, env.device)
    (path,) = (env.cache / "oracle").glob("oracle-*.pt")
    path.write_bytes(path.read_bytes()[:1500])
    with caplog.at_level(logging.WARNING):
        again = build_oracle_pool(spec, carved, forgotten, 1, env.cache, env.device)
    _warned_once(caplog, path)
    assert again.train_logits.shape == first.train_logits.shape
    torch.load(path, weights_only=True)  # the rebuilt entry is whole
