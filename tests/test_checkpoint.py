"""Bring your own model (issue #16, parts 1, 4 and 6): ``--checkpoint`` reads every usual
layout with ``weights_only=True`` and answers a bad file or a mismatch in one line before any
run; a run starts from exactly the file's weights, is named by its sha256 (not its path) and
reruns idempotently; ``--normalize`` is part of the run; the ``resnet20_cifar`` arch loads the
key names of ``../shared/data/weights/PROVENANCE.txt`` (and, in a slow test, reaches its
accuracy on the CIFAR-10 JPEG copy)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.core.errors import BenchError
from bench.core.spec import DataSpec, RunSpec, parse_normalize
from bench.data import Locations, carve, load_dataset, select_forget
from bench.data.forget import retain_positions
from bench.models import checkpoint as ck
from bench.models.archs import ARCHS, build_model
from bench.protocol.plan import unit_id, units_for
from bench.protocol.stages import Env, pretrained_model
from bench.run import main, parser, plan
from bench.suites.catalog import SUITES
from tests.helpers import pinned_spec, tiny_spec

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"

# the synthetic data: 4 classes of 1x8x8 images, normalized with mean 0.5, std 0.25
CLASSES, SHAPE, MEAN, STD = 4, (1, 8, 8), (0.5,), (0.25,)


def _model(seed: int = 0, classes: int = CLASSES, normalize=None) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("smallcnn", classes, SHAPE, MEAN, STD, normalize=normalize)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.strip() == text
    return text


# ---------------------------------------------------------------------------------------
# layouts


def _prefixed(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


LAYOUTS = {
    "plain": lambda sd, own: sd,
    "net": lambda sd, own: {"net": sd, "acc": 91.5, "epoch": 200},
    "state_dict": lambda sd, own: {"state_dict": sd, "epoch": 3, "arch": "smallcnn"},
    "model": lambda sd, own: {"model": sd, "args": {"lr": 0.1}},
    "model_state_dict": lambda sd, own: {
        "model_state_dict": sd,
        "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
    },
    "nested": lambda sd, own: {"model": {"state_dict": _prefixed(sd, "module."), "step": 9}},
    "module.": lambda sd, own: _prefixed(sd, "module."),
    "_orig_mod.": lambda sd, own: _prefixed(sd, "_orig_mod."),
    # torch.compile of a DDP model, and DDP of a compiled one
    "_orig_mod.module.": lambda sd, own: _prefixed(sd, "_orig_mod.module."),
    "module._orig_mod.": lambda sd, own: {"net": _prefixed(sd, "module._orig_mod.")},
    # the harness's own layout (Classifier: norm.* + net.*; what --save-model writes)
    "own": lambda sd, own: own,
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_loads_exactly(layout, tmp_path):
    src = _model(seed=1)
    with torch.no_grad():  # BN statistics too, so that every tensor is checked
        for m in src.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = tmp_path / "w.pt"
    torch.save(LAYOUTS[layout](src.net.state_dict(), src.state_dict()), path)
    sd = ck.read_state_dict(path)
    want = src.state_dict() if layout == "own" else src.net.state_dict()
    assert _same(sd, want)
    dst = _model(seed=2)
    assert not _same(dst.state_dict(), src.state_dict())
    ck.load_into(dst, sd)
    assert _same(dst.state_dict(), src.state_dict())
    x = torch.rand(5, *SHAPE)
    assert torch.equal(dst.eval()(x), src.eval()(x))


class _Payload:
    """Unpickling this runs code (it creates a file): what weights_only=True must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize(
    "what,content,needle",
    [
        ("no state dict", {"epoch": 3, "acc": 0.9}, "holds no state dict (keys: epoch, acc)"),
        ("empty", {}, "holds no state dict"),
        ("a list", [1, 2, 3], "holds a list, not a state dict"),
        ("a tensor", torch.zeros(3), "holds a Tensor, not a state dict"),
        ("a module", "module", "is a pickle that imports bench.models.archs."),
        ("code", "payload", "is a pickle that imports io.open"),
        ("not torch", b"this is not a torch file\n", "cannot read checkpoint"),
    ],
)
def test_bad_files_are_one_line_errors(what, content, needle, tmp_path):
    path = tmp_path / "bad.pt"
    marker = tmp_path / "ran"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "module":  # the whole nn.Module pickled: weights_only refuses it
        torch.save(_model(), path)
    elif content == "payload":
        torch.save({"net": _Payload(marker)}, path)
    else:
        torch.save(content, path)
    with pytest.raises(BenchError) as exc:
        ck.read_state_dict(path)
    text = _one_line(exc)
    assert needle in text and str(path) in text
    if content in ("module", "payload"):
        assert "model.state_dict()" in text  # the fix
        assert "weights_only=False" not in text  # torch's own advice: unsafe here
    assert not marker.exists()  # nothing in the file ran


def test_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(BenchError) as exc:
        ck.read_state_dict(tmp_path / "nowhere.pt")
    assert "nowhere.pt does not exist" in _one_line(exc)
    with pytest.raises(BenchError) as exc:
        ck.reference("nowhere.pt", data_root=tmp_path)
    text = _one_line(exc)
    assert "does not exist" in text and str(tmp_path) in text and "--data-root" in text


# ---------------------------------------------------------------------------------------
# the mismatch message


def _mismatch(sd: dict, model: nn.Module | None = None) -> str:
    with pytest.raises(BenchError) as exc:
        ck.load_into(model if model is not None else _model(), sd, "checkpoint w.pt")
    text = _one_line(exc)
    assert text.startswith("checkpoint w.pt does not fit the architecture: keys ")
    return text


def test_mismatch_names_first_missing_keys_and_count():
    sd = {k: v for k, v in _model().net.state_dict().items() if not k.startswith("1.")}
    text = _mismatch(sd)
    # smallcnn's first BN (module 1) has 5 tensors: the first 3 named, then the rest counted
    assert "5 missing (1.weight, 1.bias, 1.running_mean, ... +2)" in text
    assert "unexpected" not in text and "shape" not in text


def test_mismatch_names_unexpected_keys_and_count():
    sd = {**_model().net.state_dict(), "head.weight": torch.zeros(2), "head.bias": torch.zeros(2)}
    text = _mismatch(sd)
    assert "2 unexpected (head.weight, head.bias)" in text and "missing" not in text


def test_mismatch_names_shapes_file_vs_model():
    sd = _model(classes=10).net.state_dict()  # a 10-class head for 4 classes
    text = _mismatch(sd)
    assert (
        "2 of another shape (file vs model: 12.weight (10, 128) vs (4, 128), 12.bias (10,) vs (4,))"
    ) in text
    assert "--arch" in text and "classes" in text


def test_mismatch_all_kinds_in_one_line():
    sd = dict(_model(classes=10).net.state_dict())
    del sd["0.weight"]
    sd["extra"] = torch.zeros(1)
    text = _mismatch(sd)
    assert "1 missing (0.weight); 1 unexpected (extra); 2 of another shape" in text


def test_another_architecture_is_refused():
    torch.manual_seed(0)
    r20 = build_model("resnet20_cifar", CLASSES, SHAPE, MEAN, STD, normalize=(MEAN, STD))
    text = _mismatch(r20.net.state_dict())
    assert "missing (0.weight, 1.weight, 1.bias, ... +" in text
    assert "unexpected (conv1.weight, bn1.weight, bn1.bias, ... +" in text


def test_own_layout_keeps_the_runs_normalization():
    """A file in the harness's own layout carries its norm buffers: one that differs from the
    run's normalization would silently change the model, so it is refused with the fix."""
    own = _model().state_dict()
    with pytest.raises(BenchError) as exc:
        ck.load_into(_model(normalize=((0.4,), (0.3,))), own, "checkpoint w.pt")
    text = _one_line(exc)
    assert "normalization 0.5/0.25" in text and "0.4/0.3" in text
    assert "--normalize 0.5/0.25" in text
    m = _model(seed=3, normalize=((0.5,), (0.25,)))
    ck.load_into(m, own)
    assert _same(m.state_dict(), own)


# ---------------------------------------------------------------------------------------
# import into the cache


def test_import_is_by_content_and_idempotent(tmp_path):
    sd = _model().net.state_dict()
    path = tmp_path / "w.pt"
    torch.save({"net": sd}, path)
    ref = ck.import_checkpoint(path, tmp_path / "cache")
    assert ref == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "checkpoints" / f"{ref[7:]}.pt"
    assert dest.is_file()
    stamp = dest.stat().st_mtime_ns
    assert ck.import_checkpoint(path, tmp_path / "cache") == ref
    assert dest.stat().st_mtime_ns == stamp  # not written again
    got, source = ck.cached_state_dict(tmp_path / "cache", ref)
    assert _same(got, sd) and source == str(path.resolve())
    # a reference nobody resolved in this process must be in the cache already
    with pytest.raises(BenchError) as exc:
        ck.import_references(["sha256:" + "0" * 64], tmp_path / "cache")
    assert "not in the cache" in _one_line(exc) and "--checkpoint PATH" in str(exc.value)
    ck.import_references([ref, ""], tmp_path / "cache")  # in the cache: fine


# ---------------------------------------------------------------------------------------
# end to end through the command line (in-process, debug executor)


def _argv(out: Path, *extra: str) -> list[str]:
    return [
        "--suite",
        "l2ul-digits",  # its metrics: accuracy only
        "--dataset",
        "synthetic",
        "--method",
        "neggrad",
        "--forget",
        "8",
        "--seeds",
        "0",
        "--out",
        str(out / "out"),
        "--cache-dir",
        str(out / "cache"),
        "--executor",
        "debug",
        "--no-progress",
        "--no-summary",
        "--no-report",
        *extra,
    ]


def _trained(seed: int) -> nn.Module:
    """A smallcnn trained briefly here (its own seed, 3 epochs, no weight decay): weights that
    the harness's pretraining (15 epochs, seed 0) never produces."""
    bundle = load_dataset("synthetic", Locations(None, None))
    model = _model(seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(3):
        order = torch.randperm(len(bundle.train), generator=g)
        for x, y in bundle.train.batches(order, 32, torch.device("cpu")):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


def _accuracy(model: nn.Module, split, idx: torch.Tensor) -> float:
    correct = 0
    with torch.no_grad():
        for x, y in split.batches(idx, 64, torch.device("cpu")):
            correct += int((model(x).argmax(1) == y).sum())
    return 100.0 * correct / len(idx)


def _records(out: Path) -> dict[str, list[dict]]:
    return {
        f.stem: [json.loads(line) for line in f.read_text().splitlines()]
        for f in sorted((out / "out" / "records").glob("*.jsonl"))
    }


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    """A user's model (trained here), saved as DataParallel would inside a "state_dict"
    wrapper, and one run of the CLI from it: ``(tmp, path, model, records, stderr)``."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("byo")
    model = _trained(seed=7)
    path = tmp / "mine.pt"
    torch.save({"state_dict": _prefixed(model.net.state_dict(), "module."), "epoch": 3}, path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(_argv(tmp, "--checkpoint", str(path)))
    assert code == 0, err.getvalue()
    return tmp, path, model, _records(tmp), err.getvalue()


def test_run_starts_from_exactly_the_checkpoint(byo):
    tmp, path, model, records, err = byo
    assert "new 1, skipped 0" in err
    ((run_id, rows),) = records.items()
    meta = rows[0]
    assert meta["type"] == "meta" and rows[-1]["status"] == "done"
    sha = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["spec"]["checkpoint"] == sha and meta["pretrain"]["checkpoint"] == sha
    assert meta["pretrain"]["steps"] == 0 and meta["pretrain"]["source"] == str(path.resolve())
    # the "before" accuracies are those of the user's model, evaluated here directly
    spec = RunSpec.from_dict(meta["spec"])
    bundle = load_dataset("synthetic", Locations(None, None))
    carved = carve(bundle, spec.data)
    targets = bundle.train.targets.index_select(0, carved.train)
    forget = select_forget(targets, spec.forget, spec.forget_seed)
    retain = retain_positions(len(carved.train), forget)
    want = {
        "forget": _accuracy(model, bundle.train, carved.train[forget]),
        "retain": _accuracy(model, bundle.train, carved.train[retain]),
        "test": _accuracy(model, bundle.test, carved.test),
    }
    before = {
        r["split"]: r["value"]
        for r in rows
        if r.get("stage") == "before" and r["metric"] == "accuracy"
    }
    assert before == pytest.approx(want, abs=1e-4)  # the harness counts in float32
    assert 40 < want["test"] < 100  # a trained model, not chance, not the data's ceiling
    # and the run's starting model holds the file's tensors, bit for bit
    env = Env(out=tmp / "out", cache=tmp / "cache", device=torch.device("cpu"))
    start, info = pretrained_model(spec, carved, env)
    assert _same(start.net.state_dict(), model.net.state_dict())
    assert info["checkpoint"] == sha


def test_same_command_again_skips(byo, capsys):
    tmp, path, _, records, _ = byo
    assert main(_argv(tmp, "--checkpoint", str(path))) == 0
    assert "new 0, skipped 1" in capsys.readouterr().err
    assert _records(tmp).keys() == records.keys()


def test_moved_file_is_the_same_run_and_another_file_another(byo, capsys):
    tmp, path, model, records, _ = byo
    moved = tmp / "elsewhere" / "renamed.pth"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    assert main(_argv(tmp, "--checkpoint", str(moved))) == 0
    assert "new 0, skipped 1" in capsys.readouterr().err
    # the cached import is a sha256 reference: the run also finds it by that name alone
    (run_id,) = records
    sha = records[run_id][0]["spec"]["checkpoint"]
    assert main(_argv(tmp, "--checkpoint", sha)) == 0
    assert "new 0, skipped 1" in capsys.readouterr().err

    other = tmp / "other.pt"
    sd = model.net.state_dict()
    torch.save({k: v + 1e-3 if v.is_floating_point() else v for k, v in sd.items()}, other)
    (spec,) = plan(parser().parse_args(_argv(tmp, "--checkpoint", str(other))))
    (plain,) = plan(parser().parse_args(_argv(tmp)))
    assert len({spec.run_id, run_id, plain.run_id}) == 3


def test_normalize_changes_the_run_and_the_models_norm(byo, capsys):
    tmp, path, model, records, _ = byo
    (run_id,) = records
    argv = _argv(tmp, "--checkpoint", str(path), "--normalize", "0.4/0.3")
    (spec,) = plan(parser().parse_args(argv))
    assert spec.normalize == ((0.4,), (0.3,)) and spec.run_id != run_id
    assert main(argv) == 0, capsys.readouterr().err
    assert "new 1, skipped 0" in capsys.readouterr().err
    rows = _records(tmp)[spec.run_id]
    assert rows[-1]["status"] == "done" and rows[0]["spec"]["normalize"] == [[0.4], [0.3]]
    env = Env(out=tmp / "out", cache=tmp / "cache", device=torch.device("cpu"))
    bundle = load_dataset("synthetic", Locations(None, None))
    start, _ = pretrained_model(spec, carve(bundle, spec.data), env)
    assert start.norm.mean.flatten().tolist() == pytest.approx([0.4])
    assert start.norm.std.flatten().tolist() == pytest.approx([0.3])
    assert _same(start.net.state_dict(), model.net.state_dict())  # the same weights
    # one value each is repeated for every channel; a wrong count is refused before any run
    assert parse_normalize("0.5,0.2") == ((0.5,), (0.2,))
    norm = build_model("smallcnn", 10, (3, 8, 8), MEAN * 3, STD * 3, normalize=((0.5,), (0.2,)))
    assert norm.norm.std.flatten().tolist() == pytest.approx([0.2] * 3)
    for extra in (("--checkpoint", str(path)), ()):
        bad = _argv(tmp, *extra, "--normalize", "0.1,0.2,0.3/0.2,0.2,0.2")
        assert main(bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --normalize has 3 means") and err.count("\n") == 1


def test_mnemonic_cannot_start_from_a_checkpoint(byo, capsys, tmp_path):
    tmp, path, _, _, _ = byo
    argv = _argv(tmp_path, "--checkpoint", str(path))
    argv[argv.index("neggrad")] = "mnemonic"
    argv[argv.index("8")] = "class=1"  # mnemonic forgets classes
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: method 'mnemonic' needs its own pretraining")
    assert "--checkpoint" in err and err.count("\n") == 1
    assert not list((tmp_path / "out").glob("records/*.jsonl"))
    # and through the API, without the command line's checks
    ref = ck.import_checkpoint(path, tmp_path / "cache")
    spec = tiny_spec("mnemonic", checkpoint=ref)
    env = Env(out=tmp_path / "o", cache=tmp_path / "cache", device=torch.device("cpu"))
    bundle = load_dataset("synthetic", Locations(None, None))
    with pytest.raises(BenchError, match="needs its own pretraining"):
        pretrained_model(spec, carve(bundle, spec.data), env)


@pytest.mark.parametrize("bad", ["missing", "mismatch", "module", "no state dict", "nan", "inf"])
def test_cli_bad_checkpoint_is_one_line_exit_2_before_any_run(bad, tmp_path, capsys):
    path = tmp_path / "w.pt"
    if bad in ("nan", "inf"):  # was accepted: ~70 scikit-learn warnings later, then exit 1
        sd = _model().net.state_dict()
        key = next(k for k, v in sd.items() if v.is_floating_point())
        sd[key].view(-1)[0] = float(bad)
        torch.save(sd, path)
    elif bad == "mismatch":
        torch.save(_model(classes=10).net.state_dict(), path)
    elif bad == "module":
        torch.save(_model(), path)
    elif bad == "no state dict":
        torch.save({"epoch": 1}, path)
    assert main(_argv(tmp_path, "--checkpoint", str(path))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(path) in err
    if bad in ("nan", "inf"):
        assert "NaN or infinite values in 1 tensor(s)" in err
    if bad == "module":  # torch's own text, cut at 200 characters, advised weights_only=False
        assert "imports bench.models.archs" in err and "weights_only=False" not in err
        assert "torch.save(model.state_dict(), PATH)" in err
    if bad == "mismatch":
        assert "(--arch smallcnn) does not fit the architecture" in err
        assert "12.weight (10, 128) vs (4, 128)" in err
    assert not list((tmp_path / "out").glob("records/*.jsonl"))
    assert not (tmp_path / "out" / "plan.json").exists()  # nothing was launched


def test_dry_run_checks_the_file_without_importing_it(byo, tmp_path, capsys):
    _, path, _, _, _ = byo
    assert main([*_argv(tmp_path, "--checkpoint", str(path)), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err, err  # the file was read where it lies
    assert not (tmp_path / "cache" / "checkpoints").exists()


# ---------------------------------------------------------------------------------------
# identity: run ids, round trips, plan units, suites


def test_specs_without_checkpoint_keep_their_run_ids():
    """The pinned spec of tests/test_spec.py: the new fields at their defaults leave its id."""
    spec = pinned_spec()
    assert spec.run_id == "9b7346e3682aba43"
    assert not {"checkpoint", "normalize"} & set(spec.to_dict())  # records as before
    ids = {
        spec.run_id,
        dataclasses.replace(spec, checkpoint="sha256:" + "a" * 64).run_id,
        dataclasses.replace(spec, checkpoint="sha256:" + "b" * 64).run_id,
        dataclasses.replace(spec, normalize=((0.5,), (0.25,))).run_id,
    }
    assert len(ids) == 4


def test_spec_round_trip_with_checkpoint_and_normalize():
    spec = tiny_spec(
        "neggrad",
        checkpoint="sha256:" + "c" * 64,
        normalize=((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.201)),
    )
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["checkpoint"] == spec.checkpoint and d["normalize"][1] == [0.2023, 0.1994, 0.201]
    back = RunSpec.from_dict(d)
    assert back == spec and back.run_id == spec.run_id
    plain = tiny_spec("neggrad")
    assert RunSpec.from_dict(json.loads(json.dumps(plain.to_dict()))) == plain


def test_plan_units_of_checkpoint_runs():
    """A checkpoint run has no pretraining to prepare (and must not mark the harness's own
    pretraining of the same setup as prepared); --normalize gives its models other units."""
    spec = tiny_spec("neggrad", pool_size=2)
    ck_spec = dataclasses.replace(spec, checkpoint="sha256:" + "d" * 64)
    assert [u.kind for u in units_for([spec])] == ["pretrain", "oracle", "oracle"]
    assert [u.kind for u in units_for([ck_spec])] == ["oracle", "oracle"]
    assert unit_id(ck_spec, "pretrain") != unit_id(spec, "pretrain")
    normed = dataclasses.replace(spec, normalize=((0.4,), (0.3,)))
    for kind in ("pretrain", "oracle"):
        assert unit_id(normed, kind) != unit_id(spec, kind)


def test_suite_checkpoint_is_looked_up_under_the_data_root(tmp_path, monkeypatch):
    (tmp_path / "weights").mkdir()
    path = tmp_path / "weights" / "w.pt"
    torch.save(_model().net.state_dict(), path)
    grid = dataclasses.replace(
        SUITES.get("l2ul-digits"), data=DataSpec("synthetic"), checkpoint="weights/w.pt"
    )
    specs = grid.expand(methods=["neggrad"], seeds=[0], data_root=tmp_path)
    sha = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert specs and all(s.checkpoint == sha for s in specs)
    with pytest.raises(BenchError, match="nor under the data root"):
        grid.expand(methods=["neggrad"], seeds=[0], data_root=tmp_path / "elsewhere")
    monkeypatch.setenv("BENCH_DATA", str(tmp_path))  # no data_root given: $BENCH_DATA's
    assert grid.expand(methods=["neggrad"], seeds=[0])[0].checkpoint == sha


# ---------------------------------------------------------------------------------------
# resnet20_cifar


def _provenance_keys() -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes that PROVENANCE.txt describes, built from its text:
    conv1 3->16, bn1; layer1..3 of 3 BasicBlocks (conv1, bn1, conv2, bn2) of widths 16, 32,
    64, 3x3 convs without bias; linear 64 -> 10; BatchNorm keys weight, bias, running_mean,
    running_var, num_batches_tracked."""

    def bn(name: str, c: int) -> dict:
        shapes = {"weight": (c,), "bias": (c,), "running_mean": (c,), "running_var": (c,)}
        return {**{f"{name}.{k}": s for k, s in shapes.items()}, f"{name}.num_batches_tracked": ()}

    keys = {"conv1.weight": (16, 3, 3, 3), **bn("bn1", 16)}
    c_in = 16
    for layer, width in ((1, 16), (2, 32), (3, 64)):
        for block in range(3):
            p = f"layer{layer}.{block}"
            keys[f"{p}.conv1.weight"] = (width, c_in, 3, 3)
            keys.update(bn(f"{p}.bn1", width))
            keys[f"{p}.conv2.weight"] = (width, width, 3, 3)
            keys.update(bn(f"{p}.bn2", width))
            c_in = width
    keys["linear.weight"] = (10, 64)
    keys["linear.bias"] = (10,)
    return keys


def _r20(classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet20_cifar", classes, (3, 32, 32), (0.5,) * 3, (0.25,) * 3)


def test_resnet20_size_forward_and_registered_normalization():
    model = _r20()
    assert sum(p.numel() for p in model.parameters()) == 269_722
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert "resnet20_cifar" in ARCHS.list()
    # the normalization its published weights expect wins over the dataset's ...
    assert model.norm.mean.flatten().tolist() == pytest.approx([0.4914, 0.4822, 0.4465])
    assert model.norm.std.flatten().tolist() == pytest.approx([0.2023, 0.1994, 0.2010])
    # ... and --normalize over both
    given = ((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))
    other = build_model("resnet20_cifar", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3, normalize=given)
    assert other.norm.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(BenchError, match="--checkpoint"):
        build_model("resnet20_cifar", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3, pretrained=True)


def test_resnet20_loads_the_provenance_key_names():
    want = _provenance_keys()
    assert len(want) == 116  # "116 tensors"
    params = [s for k, s in want.items() if k.endswith(("weight", "bias"))]
    assert sum(torch.Size(s).numel() for s in params) == 269_722
    g = torch.Generator().manual_seed(0)
    sd = {
        k: torch.tensor(5) if k.endswith("num_batches_tracked") else torch.rand(s, generator=g)
        for k, s in want.items()
    }
    model = _r20()
    ck.load_into(model, sd)  # no mismatch
    assert _same(model.net.state_dict(), sd)


def test_option_a_shortcut_pads_channels():
    """Where the shape changes, the shortcut takes every second pixel and zero-pads the
    channels by planes // 4 on each side: with the residual branch silenced (conv2 = 0, BN in
    eval at its initial statistics), a block's output is that shortcut."""
    net = _r20().net
    block = net.layer2[0]  # 16 -> 32 channels, stride 2
    assert (net.layer2[0].pad, net.layer3[0].pad) == (8, 16)
    assert all(b.pad == 0 for b in (net.layer1[0], net.layer2[1], net.layer3[2]))
    with torch.no_grad():
        block.conv2.weight.zero_()
    x = torch.rand(2, 16, 8, 8)  # >= 0: the final ReLU keeps it
    with torch.no_grad():
        out = block.eval()(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :8], torch.zeros(2, 8, 4, 4))
    assert torch.equal(out[:, 24:], torch.zeros(2, 8, 4, 4))
    assert torch.allclose(out[:, 8:24], x[:, :, ::2, ::2])


# ---------------------------------------------------------------------------------------
# the shared checkpoint on the CIFAR-10 JPEG copy


def _shared_root() -> Path:
    return Path(os.environ.get("BENCH_DATA") or SHARED)


@pytest.mark.slow
def test_shared_resnet20_accuracy_on_the_jpeg_copy(tmp_path):
    """PROVENANCE.txt: 88.63 % on the 10,000 JPEG test images, 95.93 % on the train images
    (eval mode). Here: the test set whole, train on a seeded 5,000-image subset."""
    root = _shared_root()
    weights = root / "weights" / "resnet20_cifar10_jpeg.pt"
    tar = root / "cifar10-jpeg" / "cifar10_jpeg.tar.gz"
    if not weights.is_file() or not tar.is_file():
        pytest.skip(f"no {weights} or {tar} (set BENCH_DATA to the shared data folder)")
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert sha == "e1e5f024e46762fc4bcf712be813425d2c3653ffd61473e50a4aa82b779b12a0"
    cache = Path(os.environ.get("BENCH_CACHE") or tmp_path / "cache")
    bundle = load_dataset("cifar10", Locations(root, cache))
    assert (len(bundle.train), len(bundle.test)) == (50_000, 10_000)
    torch.manual_seed(0)
    model = build_model("resnet20_cifar", 10, bundle.input_shape, bundle.mean, bundle.std).eval()
    ck.load_into(model, ck.read_state_dict(weights))
    test = _accuracy(model, bundle.test, torch.arange(len(bundle.test)))
    assert test == pytest.approx(88.63, abs=0.5)
    subset = torch.randperm(50_000, generator=torch.Generator().manual_seed(0))[:5000]
    train = _accuracy(model, bundle.train, subset)
    assert train == pytest.approx(95.93, abs=1.5)
