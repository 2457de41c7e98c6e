"""``--save-model`` and ``python -m bench.eval``: a registered method's saved weights, scored as
an external model, give the run's own metric values; idempotence, the index-file forget set,
the oracle-pool path, bad input, and the report over external and ordinary records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import eval as beval
from bench import run as brun
from bench.core.spec import Recipe

#: a few pretraining epochs: enough for a model that is not random, in seconds
QUICK = Recipe(epochs=3, batch_size=32, lr=0.05)
#: a strong, short NegGrad, so that the unlearned model clearly differs from the original
NEGGRAD_HP = ["--hp", "neggrad.max_epochs=3", "--hp", "neggrad.lr=0.01"]


def _records(out: Path) -> dict[str, list[dict]]:
    """method -> rows of the record files under ``out``."""
    recs = {}
    for f in sorted((out / "records").glob("*.jsonl")):
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        recs[rows[0]["spec"]["method"]] = rows
    return recs


def _values(rows: list[dict], stage: str) -> dict[tuple[str, str], float]:
    return {
        (r["split"], r["metric"]): r["value"]
        for r in rows
        if r.get("type") == "metric" and r["stage"] == stage
    }


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-6, nan_ok=True), key


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """An original model (the harness's pretraining on the synthetic data, exported as a plain
    state dict) and ``bench.run --checkpoint ORIG --method neggrad,retrain --save-model`` from
    it (in this process; worker processes get the same Env pickled, see the continual test):
    ``(root, orig, out)``."""
    from bench.data import carve, load_dataset
    from bench.protocol.stages import Env, pretrained_model
    from tests.helpers import tiny_spec

    root = tmp_path_factory.mktemp("ext")
    env = Env(out=root / "pre", cache=root / "pre-cache")
    spec = tiny_spec("neggrad", recipe=QUICK)
    bundle = load_dataset("synthetic", env.locations)
    model, _ = pretrained_model(spec, carved := carve(bundle, spec.data), env)
    assert len(carved.train) == 256
    orig = root / "orig.pt"
    torch.save(model.state_dict(), orig)
    out = root / "out"
    code = brun.main(
        [
            "--dataset",
            "synthetic",
            "--checkpoint",
            str(orig),
            "--method",
            "neggrad,retrain",
            *NEGGRAD_HP,
            "--forget",
            "16",
            "--seeds",
            "0",
            "--save-model",
            "--executor",
            "debug",
            "--no-progress",
            "--no-summary",
            "--no-report",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return root, orig, out


def _eval(argv: list[str], capsys=None) -> tuple[int, str, str]:
    code = beval.main(argv)
    if capsys is None:
        return code, "", ""
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _base(made, *extra: str) -> list[str]:
    _, orig, out = made
    run = _records(out)["neggrad"][0]["run_id"]
    return [
        "--original",
        str(orig),
        "--unlearned",
        str(out / "models" / f"{run}.pt"),
        "--arch",
        "smallcnn",
        "--dataset",
        "synthetic",
        *extra,
    ]


def test_save_model_writes_weights_and_spec(made):
    from bench.data import load_dataset
    from bench.models.checkpoint import load_into, read_state_dict
    from bench.models.train import fresh_model
    from bench.protocol.stages import Env

    _, _, out = made
    recs = _records(out)
    for method in ("neggrad", "retrain"):
        meta = recs[method][0]
        rid = meta["run_id"]
        pt, js = out / "models" / f"{rid}.pt", out / "models" / f"{rid}.json"
        saved = json.loads(js.read_text())
        assert saved["spec"] == meta["spec"] and saved["run_id"] == rid
        assert saved["code_version"] == meta["code_version"]
        assert saved["sha256"] == hashlib.sha256(pt.read_bytes()).hexdigest()
        sd = torch.load(pt, weights_only=True)  # a plain state dict of CPU tensors
        assert all(v.device.type == "cpu" for v in sd.values())
        assert any(k.startswith("norm.") for k in sd) and any(k.startswith("net.") for k in sd)
        bundle = load_dataset("synthetic", Env(out=out).locations)
        model = fresh_model(bundle, "smallcnn", 0)
        load_into(model, read_state_dict(pt))
    assert not [p for p in (out / "models").iterdir() if p.suffix not in (".pt", ".json")]


def test_eval_reproduces_the_runs_metrics(made, capsys):
    """The key property: scoring a registered method's saved weights as an external model
    gives that run's values, every metric, before and after."""
    _, orig, out = made
    code, stdout, err = _eval(
        [*_base(made, "--forget", "16", "--forget-seed", "0"), "--out", str(out)], capsys
    )
    assert code == 0, err
    recs = _records(out)
    run, ext = recs["neggrad"], recs["external"]
    after = _values(run, "after")
    assert len(after) > 15  # every cheap metric, per split
    _assert_same(_values(ext, "after"), after)
    _assert_same(_values(ext, "before"), _values(run, "before"))
    assert _values(ext, "after") != _values(ext, "before")  # the model did change
    # an ordinary record: same keys, no unlearning rows, external provenance in the meta line
    row = next(r for r in ext if r.get("type") == "metric")
    assert (row["method"], row["forget"], row["k"], row["seed"]) == ("external", "k=16", 16, 0)
    assert not [r for r in ext if r.get("stage") in ("unlearn", "trace")]
    meta = ext[0]
    assert meta["external"] is True and ext[-1]["status"] == "done"
    sha = hashlib.sha256(orig.read_bytes()).hexdigest()
    assert meta["files"]["original"]["sha256"] == sha
    assert meta["spec"]["checkpoint"] == f"sha256:{sha}" == run[0]["spec"]["checkpoint"]
    unlearned = out / "models" / f"{run[0]['run_id']}.pt"
    digest = hashlib.sha256(unlearned.read_bytes()).hexdigest()
    assert meta["files"]["unlearned"][0]["sha256"] == digest
    assert meta["spec"]["hparams"]["unlearned"] == [digest]
    # the printed summary line: before -> after accuracies on D_f, D_r, test
    b, a = _values(run, "before"), _values(run, "after")
    assert stdout.count("\n") == 1
    for split, label in (("forget", "D_f"), ("retain", "D_r"), ("test", "test")):
        assert f"{label} {b[split, 'accuracy']:.2f} -> {a[split, 'accuracy']:.2f}" in stdout

    # the same command again: skipped, the record untouched
    path = out / "records" / f"{meta['run_id']}.jsonl"
    before = path.stat().st_mtime_ns
    code, stdout2, err2 = _eval(
        [*_base(made, "--forget", "16", "--forget-seed", "0"), "--out", str(out)], capsys
    )
    assert code == 0 and "already done" in err2 and stdout2 == stdout
    assert path.stat().st_mtime_ns == before


def test_forget_file_gives_the_same_values(made, capsys, tmp_path):
    """The forget set as an index file (.txt and .npy: one run, one identity) scores as the
    drawn one did; its label names the positions' digest."""
    from bench.core.spec import ForgetSpec
    from bench.data import load_dataset, select_forget
    from bench.protocol.stages import Env

    _, _, out = made
    bundle = load_dataset("synthetic", Env(out=tmp_path).locations)
    positions = select_forget(bundle.train.targets, ForgetSpec("instance", k=16), 0).numpy()
    txt = tmp_path / "forget.txt"
    txt.write_text("# drawn by bench.run --forget 16 --seeds 0\n" + "\n".join(map(str, positions)))
    npy = tmp_path / "forget.npy"
    np.save(npy, positions[::-1].copy())  # order does not matter
    eout = tmp_path / "eval"
    code, _, err = _eval([*_base(made, "--forget-file", str(txt)), "--out", str(eout)], capsys)
    assert code == 0, err
    ext = _records(eout)["external"]
    _assert_same(_values(ext, "after"), _values(_records(out)["neggrad"], "after"))
    row = next(r for r in ext if r.get("type") == "metric")
    assert row["forget"].startswith("idx=") and row["k"] == 16
    assert ext[0]["files"]["forget_file"]["path"] == str(txt.resolve())
    code, _, err = _eval([*_base(made, "--forget-file", str(npy)), "--out", str(eout)], capsys)
    assert code == 0 and "already done" in err  # the same positions: the same run
    # D_r scored on a fixed sample (as the l2ul-cifar10-r20 suite does): another run
    argv = [*_base(made, "--forget-file", str(npy)), "--retain-eval", "100", "--name", "sampled"]
    code, _, err = _eval([*argv, "--out", str(eout)], capsys)
    assert code == 0, err
    sampled = _records(eout)["sampled"]
    assert sampled[0]["spec"]["data"]["retain_eval"] == 100
    assert (
        _values(sampled, "after")["forget", "accuracy"]
        == _values(ext, "after")["forget", "accuracy"]
    )


def test_pool_metrics_with_replicas(made, capsys, tmp_path):
    """``--pool K``: with K unlearned replicas KLOM, the challenge score, U-LiRA and FQS are
    computed; with one file only FQS is, and a note names the others."""
    _, orig, out = made
    models = sorted((out / "models").glob("*.pt"))
    small = ["--train-subset", "64", "--forget", "8", "--metrics", "accuracy,klom,fqs,ulira"]
    small += ["--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "eval")]
    argv = [*_base(made, *small), "--pool", "3"]
    argv += ["--unlearned", str(models[0]), "--unlearned", str(models[1])]
    code, _, err = _eval(argv, capsys)
    assert code == 0, err
    after = _values(_records(tmp_path / "eval")["external"], "after")
    assert {("forget", "klom"), ("forget", "fqs"), ("forget", "ulira")} <= after.keys()
    code, _, err = _eval([*_base(made, *small), "--pool", "3", "--name", "one"], capsys)
    assert code == 0, err
    assert "note: klom, ulira not computed" in err and "--unlearned was given 1 time" in err
    after = _values(_records(tmp_path / "eval")["one"], "after")
    assert ("forget", "fqs") in after and ("forget", "klom") not in after
    assert len(list((tmp_path / "cache" / "oracle").glob("oracle-*.pt"))) == 3  # built once


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda a: _swap(a, "--original", "missing.pt"), "does not exist"),
        (lambda a: _swap(a, "--unlearned", "missing.pt"), "does not exist"),
        (lambda a: _swap(a, "--arch", "mlp"), "does not fit the architecture"),
        (lambda a: _swap(a, "--dataset", "digitz"), "digits"),
        (lambda a: [*a, "--name", "neggrad"], "registered method"),
        (lambda a: [*a, "--metrics", "klom"], "--pool"),
        (lambda a: [*a, "--pool", "1", "--unlearned", a[3]], "at most 1"),
        (lambda a: _swap(a, "--forget", "300"), "smaller k"),
        ("index", "out of range"),
        ("index-20-digits", "out of range"),
        ("nan-original", "NaN or infinite values"),
        ("inf-unlearned", "NaN or infinite values"),
    ],
)
def test_bad_input_one_line_exit_2(made, capsys, tmp_path, change, needle):
    argv = [*_base(made, "--forget", "16"), "--out", str(tmp_path / "o")]
    if change in ("index", "index-20-digits"):
        bad = tmp_path / "idx.txt"
        bad.write_text("1 2 256" if change == "index" else "1 2 12345678901234567890")
        argv = _swap(argv, "--forget", None) + ["--forget-file", str(bad)]
    elif change in ("nan-original", "inf-unlearned"):
        flag = "--original" if change == "nan-original" else "--unlearned"
        sd = torch.load(argv[argv.index(flag) + 1], weights_only=True)
        sd = sd.get("state_dict", sd)
        key = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
        sd[key].view(-1)[0] = float("nan" if flag == "--original" else "inf")
        torch.save(sd, tmp_path / "bad.pt")
        argv = _swap(argv, flag, str(tmp_path / "bad.pt"))
    else:
        argv = change(argv)
    code, _, err = _eval(argv, capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err
    assert not (tmp_path / "o" / "records").exists()


def _swap(argv: list[str], flag: str, value: str | None) -> list[str]:
    """``argv`` with ``flag``'s value replaced (``None``: the flag removed)."""
    i = argv.index(flag)
    return argv[:i] + argv[i + 2 :] if value is None else [*argv[: i + 1], value, *argv[i + 2 :]]


def test_report_over_external_and_method_records(made, capsys):
    """The report, retrain gaps and leaderboard take an external record beside registered
    methods' runs (its method is in no registry)."""
    from reports.aggregate import avg_gap, load
    from reports.build import build
    from reports.tables import leaderboard

    _, _, out = made
    if "external" not in _records(out):
        code, _, err = _eval([*_base(made, "--forget", "16"), "--out", str(out)], capsys)
        assert code == 0, err
    metrics, runs = load(out)
    assert set(runs["method"]) == {"neggrad", "retrain", "external"}
    gaps = avg_gap(metrics).set_index("method")["avg_gap"]
    assert gaps["external"] == pytest.approx(gaps["neggrad"])  # the same model, the same gap
    assert "external" in set(leaderboard(metrics)["method"])
    paths = build(out)
    html = Path(paths[-1]).read_text()
    assert "external" in html and "neggrad" in html


def test_continual_run_keeps_its_final_model(tmp_path):
    """A continual run saves the model after its last request (through Env, as every executor
    passes it: the local one pickles it, SLURM jobs rebuild it from JobEnv)."""
    import pickle

    from bench.data import carve, load_dataset
    from bench.execution.cluster import JobEnv
    from bench.metrics import evaluate
    from bench.models.checkpoint import read_state_dict
    from bench.models.train import fresh_model
    from bench.protocol.stages import Env, execute
    from tests.helpers import tiny_spec

    env = Env(out=tmp_path / "o", cache=tmp_path / "c", save_model=True)
    assert pickle.loads(pickle.dumps(env)).save_model
    assert JobEnv(str(env.out), str(env.cache), save_model=True).make().save_model
    spec = tiny_spec(
        "neggrad", k=4, recipe=QUICK, hp={"max_epochs": 2}, scenario="continual", requests=2
    )
    assert execute(spec, env) == "done"
    rows = [json.loads(line) for line in (env.out / "records" / f"{spec.run_id}.jsonl").open()]
    final = {
        r["split"]: r["value"]
        for r in rows
        if r.get("stage") == "after" and r["request"] == 2 and r["metric"] == "accuracy"
    }
    bundle = load_dataset("synthetic", env.locations)
    model = fresh_model(bundle, "smallcnn", 0)
    model.load_state_dict(read_state_dict(env.out / "models" / f"{spec.run_id}.pt"))
    from bench.data import View

    carved = carve(bundle, spec.data)
    views = {"test": View(bundle.test, carved.test, torch.device("cpu"), "test")}
    got = dict((s, v) for s, _, v in evaluate(model.eval(), views, 4, ("accuracy",)))
    assert got["test"] == pytest.approx(final["test"], abs=1e-9)
