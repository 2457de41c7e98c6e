"""Figures, the self-contained HTML page and ``python -m reports.build`` on fixture records."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from reports import figures, html
from reports.aggregate import load
from reports.build import main

LAYERS = ["cka_net.2", "cka_net.5", "cka_net.9"]


def _row(rid, spec, request, stage, split, metric, value):
    return {
        "type": "metric", "run_id": rid, "suite": "fixture", "method": spec["method"],
        "dataset": "digits", "arch": "smallcnn", "seed": spec["seed"], "forget": spec["forget"],
        "k": 4, "scenario": spec["scenario"], "request": request, "stage": stage,
        "split": split, "metric": metric, "value": float(value),
    }  # fmt: skip


def write_fixture(root: Path, n_classes: int = 4) -> Path:
    """Records of retrain / finetune / neggrad x 2 seeds (single), finetune x 2 seeds with 3
    continual requests, one failed run; confusion and embedding artifacts for every run."""
    rng = np.random.default_rng(0)
    (root / "records").mkdir(parents=True)
    specs = []
    for method, df_acc, secs in [
        ("retrain", 80, 20.0),
        ("finetune", 95, 2.0),
        ("neggrad", 30, 0.5),
    ]:
        for seed in (0, 1):
            specs.append(dict(method=method, seed=seed, forget="k=4", scenario="single",
                              requests=1, df=df_acc, secs=secs))  # fmt: skip
    for seed in (0, 1):
        specs.append(dict(method="finetune", seed=seed, forget="k=4", scenario="continual",
                          requests=3, df=60, secs=1.0))  # fmt: skip
    for i, spec in enumerate(specs):
        rid = f"run{i:02d}"
        meta = {
            "type": "meta", "run_id": rid,
            "spec": {"method": spec["method"], "seed": spec["seed"], "suite": "fixture"},
            "code_version": "0.1.0+gfixture", "hardware": {"device": "cpu", "cpu_count": 2},
        }  # fmt: skip
        rows = [meta]
        s = spec["seed"]
        for split, v in [("forget", 100), ("retain", 99), ("test", 97)]:
            rows.append(_row(rid, spec, 0, "before", split, "accuracy", v - s))
        for r in range(1, spec["requests"] + 1):
            rows.append(_row(rid, spec, r, "unlearn", "-", "wall_seconds", spec["secs"] + s))
            rows.append(_row(rid, spec, r, "unlearn", "-", "peak_memory_mb", 100))
            drop = 10 * (r - 1)
            for split, v in [("forget", spec["df"] - drop), ("retain", 98 - r), ("test", 90 - r)]:
                rows.append(_row(rid, spec, r, "after", split, "accuracy", v + 2 * s))
            for j, layer in enumerate(LAYERS):
                for split in ("forget", "retain"):
                    v = 1 - 0.1 * j * (spec["df"] < 50) - 0.01 * j
                    rows.append(_row(rid, spec, r, "after", split, layer, v))
        rows.append({"run_id": rid, "status": "done"})
        (root / "records" / f"{rid}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
        art = root / "artifacts" / rid
        art.mkdir(parents=True)
        before = rng.integers(0, n_classes, 12)
        after = np.where(rng.random(12) < 0.5, before, rng.integers(0, n_classes, 12))
        m = np.zeros((n_classes, n_classes), dtype=np.int64)
        np.add.at(m, (before, after), 1)
        np.savez(art / "confusion.npz", matrix=m, labels=before)
        fl, rl = rng.integers(0, n_classes, 6), rng.integers(0, n_classes, 24)
        centers = rng.normal(0, 5, (n_classes, 8))
        fo, ro = centers[fl] + rng.normal(0, 1, (6, 8)), centers[rl] + rng.normal(0, 1, (24, 8))
        fu = fo + rng.normal(0, 3, fo.shape)
        np.savez(art / "embeddings.npz", forget_original=fo, forget_unlearned=fu,
                 forget_labels=fl, retain_original=ro, retain_unlearned=ro + 0.1,
                 retain_labels=rl)  # fmt: skip
    failed = {"run_id": "run99", "status": "failed", "error": "RuntimeError: boom at step 3"}
    meta = {"type": "meta", "run_id": "run99", "spec": {"method": "salun", "seed": 0},
            "code_version": "0.1.0+gfixture", "hardware": {"device": "cpu"}}  # fmt: skip
    (root / "records" / "run99.jsonl").write_text(json.dumps(meta) + "\n" + json.dumps(failed))
    return root


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("res"))


@pytest.fixture(scope="module")
def metrics(results):
    return load(results)[0]


def _check_png(p: Path) -> None:
    import matplotlib.image as mpimg

    assert p.exists() and p.stat().st_size > 0
    img = mpimg.imread(p)
    assert img.ndim == 3 and img[..., :3].var() > 1e-4, f"{p.name} is one colour"


FIGS = {
    "confusion": lambda m, r, o: figures.confusion_figures(m, r, o),
    "tsne": lambda m, r, o: figures.tsne_figures(m, r, o),
    "cka": lambda m, r, o: figures.cka_figure(m, o),
    "tradeoff": lambda m, r, o: figures.tradeoff_figure(m, o),
    "runtime": lambda m, r, o: figures.runtime_figure(m, o),
    "continual": lambda m, r, o: figures.continual_figure(m, o),
}


@pytest.mark.parametrize("name", list(FIGS))
def test_figure_writes_png_and_pdf(name, metrics, results, tmp_path):
    paths = FIGS[name](metrics, results, tmp_path)
    pngs = [p for p in paths if p.suffix == ".png"]
    assert pngs and len([p for p in paths if p.suffix == ".pdf"]) == len(pngs)
    for p in paths:
        assert p.exists() and p.stat().st_size > 0
    for p in pngs:
        _check_png(p)
    if name in ("confusion", "tsne"):
        # one figure per method x scenario, first seed only
        assert len(pngs) == 4


@pytest.mark.parametrize("name", list(FIGS))
def test_figure_without_data_returns_empty(name, metrics, tmp_path):
    import pandas as pd

    assert FIGS[name](pd.DataFrame(), tmp_path / "none", tmp_path) == []
    # only the before rows: nothing after unlearning, no artifacts
    only_before = metrics[metrics["stage"] == "before"]
    assert FIGS[name](only_before, tmp_path / "none", tmp_path / "o") == []


def test_markdown_table_to_html():
    md = "# Title\n\nsome *text*\n\n| method | D_f acc |\n|:---|---:|\n| a\\|b | **1.0** |\n"
    out = html.markdown_to_html(md)
    assert "<h3>Title</h3>" in out and "<i>text</i>" in out
    assert '<th style="text-align:left">method</th>' in out
    assert '<td style="text-align:right"><b>1.0</b></td>' in out and "a|b" in out


def test_build_writes_self_contained_html(results, tmp_path, capsys):
    out = tmp_path / "report"
    assert main([str(results), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    index = out / "index.html"
    assert printed[-1] == str(index)
    page = index.read_text()
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(imgs) >= 6
    assert base64.b64decode(imgs[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'id="failed-runs"' in page and "Failed runs (1)" in page
    assert "RuntimeError: boom at step 3" in page and "run99" in page
    assert "0.1.0+gfixture" in page and "device=cpu" in page
    assert "8 done" in page and "1 failed" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from outside


def test_build_default_out_and_markdown_tables(results, tmp_path):
    res = tmp_path / "res"
    shutil.copytree(results, res)
    (res / "report").mkdir()
    (res / "report" / "extra.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert main([str(res)]) == 0
    page = (res / "report" / "index.html").read_text()
    assert "<h3>extra</h3>" in page and '<td style="text-align:left">2</td>' in page


def test_build_without_tables_module(results, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "reports.tables", None)  # import fails
    assert main([str(results), "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: no tables") == 1
    assert "data:image/png;base64," in (tmp_path / "r" / "index.html").read_text()


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_build_bad_results_dir(kind, tmp_path, capsys):
    d = tmp_path / "nope"
    if kind == "empty":
        d.mkdir()
    assert main([str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "Traceback" not in err[0]


def test_html_renders_in_headless_chromium(results, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed")
    assert main([str(results), "--out", str(tmp_path / "r")]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}",
         "--window-size=1200,1600", (tmp_path / "r" / "index.html").as_uri()],
        check=False, capture_output=True, timeout=60,
    )  # fmt: skip
    assert shot.exists(), "chromium wrote no screenshot"
    _check_png(shot)


def test_trace_figure_from_trace_rows(tmp_path):
    import pandas as pd

    rows = [
        {
            "run_id": f"{m}-{s}",
            "method": m,
            "seed": s,
            "forget": "k=8",
            "request": 1,
            "stage": "trace",
            "split": "forget",
            "metric": "objective_unmet",
            "value": max(0.0, 100.0 - rate * step),
            "step": step,
        }
        for m, rate in (("neggrad", 20.0), ("adv_mas", 2.0))
        for s in (0, 1)
        for step in range(0, 60, 3)
    ]
    paths = figures.trace_figure(pd.DataFrame(rows), tmp_path)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    _check_png(next(p for p in paths if p.suffix == ".png"))
    mia = pd.DataFrame(rows).assign(metric="mia_auc", value=lambda d: 0.5 + d["value"] / 200)
    paths = figures.trace_figure(mia, tmp_path, "mia_auc", "forget")
    assert [p.name for p in paths if p.suffix == ".png"] == ["traces_mia.png"]
    _check_png(paths[0] if paths[0].suffix == ".png" else paths[1])
    assert figures.trace_figure(mia, tmp_path) == []  # no objective_unmet rows
    assert figures.trace_figure(pd.DataFrame(rows).assign(stage="after"), tmp_path) == []
