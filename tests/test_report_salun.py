"""The ``salun`` table (``reports.salun``) and the reproduction page (``reports.reproduction``)
on records built by hand: known answers for UA / RA / TA / MIA-Efficacy, Avg. Gap, the
published values, deltas and hard / soft flags, when the table appears, runs told apart by
their hyperparameters, and what ``reproduction.md`` and ``index.html`` say."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.unlearning.method import METHODS
from reports.aggregate import load
from reports.build import build
from reports.html import read_meta
from reports.reproduction import deviations, load_protocols, reproduction_markdown
from reports.salun import (
    PAPER_METHODS,
    TABLE_METHODS,
    hparam_variants,
    load_published_salun,
    salun_table,
)
from reports.tables import write_tables

#: per method: (D_f acc, D_r acc, test acc, mia_svc, seconds) at seed 0; seed 1 adds `shift`
RUNS = {
    "retrain": (95.0, 100.0, 94.0, 0.13, 100.0),
    "salun": (97.0, 99.5, 93.5, 0.15, 10.0),
    "ga": (99.0, 99.0, 93.0, 0.02, 2.0),
    "scrub": (98.0, 99.8, 93.8, 0.05, 5.0),  # not in the table: a salun suite's extra baseline
}


def write_run(out: Path, method: str, seed: int, forget: str, values, **kw) -> str:
    """One record file with a full meta line; returns its run id."""
    f, r, t, mia, secs = values
    suite = kw.get("suite", "salun-test")
    dataset, arch = kw.get("dataset", "digits"), kw.get("arch", "smallcnn")
    hp = kw.get("hp", {"mask_mode": "hard"} if method == "salun" else {})
    rid = kw.get("rid", f"{suite}-{method}-{forget}-s{seed}-{hp.get('mask_mode', '')}")
    spec = {
        "method": method,
        "data": {"name": dataset, "val_fraction": 0.1},
        "arch": arch,
        "recipe": {"epochs": 10, "schedule": "cosine"},
        "forget": {"kind": "fraction", "fraction": forget},
        "hparams": hp,
        "seed": seed,
        "suite": suite,
        "checkpoint": "",
    }
    meta = {
        "type": "meta",
        "run_id": rid,
        "spec": spec,
        "hparams_resolved": hp,
        "runtime": {"precision": "fp32"},
        "code_version": "0.1.0+gabc123",
        "hardware": {"device": "cpu", "cpu_count": 2},
    }
    base = dict(run_id=rid, suite=suite, method=method, dataset=dataset, arch=arch, seed=seed,
                forget=forget, k=0, scenario="single", request=1)  # fmt: skip
    shift = float(seed)
    rows = [
        ("after", "forget", "accuracy", f - shift),
        ("after", "retain", "accuracy", r),
        ("after", "test", "accuracy", t + shift),
        ("after", "forget", "mia_svc", mia),
        ("after", "forget", "mia_svc_entropy", 0.99),  # another feature: never the table's MIA
        ("unlearn", "-", "wall_seconds", secs + shift),
    ]
    lines = [meta] + [
        {"type": "metric", **base, "stage": a, "split": b, "metric": c, "value": v}
        for a, b, c, v in rows
    ]
    lines.append({"run_id": rid, "status": "done"})
    (out / "records").mkdir(parents=True, exist_ok=True)
    (out / "records" / f"{rid}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return rid


def make(out: Path) -> Path:
    """A salun suite: 4 methods x 2 seeds at random 10 %, retrain and salun at class 0."""
    for method, values in RUNS.items():
        for seed in (0, 1):
            write_run(out, method, seed, "frac=0.1", values)
    for method in ("retrain", "salun"):
        write_run(out, method, 0, "class=0", RUNS[method])
    return out


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = make(tmp_path_factory.mktemp("salun"))
    metrics, runs = load(out)
    return out, metrics, runs


def test_published_numbers_are_stored_with_source_and_flags():
    pub = load_published_salun()
    assert set(pub["source"].str.contains("SalUn, ICLR 2024, Table 1")) == {True}
    ten = pub[pub["forget"] == "frac=0.1"]
    assert len(ten) == 9 * 5 and len(pub[pub["forget"] == "frac=0.5"]) == 9 * 4
    v = ten.set_index(["method", "metric"])
    assert v.loc[("retrain", "UA"), "value"] == pytest.approx(5.24)
    assert v.loc[("retrain", "UA"), "std"] == pytest.approx(0.69)
    assert v.loc[("salun", "MIA-Efficacy"), "value"] == pytest.approx(14.39)
    assert v.loc[("salun", "Avg. Gap"), "value"] == pytest.approx(1.15)
    flags = pub.drop_duplicates("method").set_index("method")["target"]
    assert flags["retrain"] == "hard" and set(flags.drop("retrain")) == {"soft"}
    other = load_published_salun(paper="l1_sparse").set_index("metric")
    assert other.loc["UA", "value"] == pytest.approx(5.41) and set(other["target"]) == {"hard"}
    assert set(pub["method"]) == set(TABLE_METHODS) == set(PAPER_METHODS.values())
    registered = set(METHODS.list())
    assert set(TABLE_METHODS) <= registered, set(TABLE_METHODS) - registered


def test_published_avg_gap_is_the_gap_of_the_published_means():
    """The paper's Avg. Gap = mean |method - Retrain| over the four means: a check that the
    stored numbers are the table's (it holds for every 10 % row to the printed rounding)."""
    v = load_published_salun()
    v = v[v["forget"] == "frac=0.1"].pivot_table(index="method", columns="metric", values="value")
    terms = ["UA", "RA", "TA", "MIA-Efficacy"]
    gap = (v[terms] - v.loc["retrain", terms]).abs().mean(axis=1)
    assert gap.to_dict() == pytest.approx(v["Avg. Gap"].to_dict(), abs=0.006)


def test_salun_table_numbers_deltas_and_flags(records):
    _, metrics, _ = records
    t = salun_table(metrics).set_index(["forget", "method"])
    s, r = t.loc[("frac=0.1", "salun")], t.loc[("frac=0.1", "retrain")]
    # UA = 100 - D_f acc: seeds 3, 4 -> 3.5; MIA-Efficacy = the confidence row x 100
    assert s["UA"] == pytest.approx(3.5) and s["UA_std"] == pytest.approx(0.5**0.5)
    assert s["MIA-Efficacy"] == pytest.approx(15.0) and s["n"] == 2
    assert s["TA"] == pytest.approx(94.0) and s["RA"] == pytest.approx(99.5)
    # per seed |3-5| + |99.5-100| + |93.5-94| + |15-13| = 5 -> 1.25 (both seeds)
    assert s["Avg. Gap"] == pytest.approx(1.25) and s["Gap of means"] == pytest.approx(1.25)
    assert s["UA paper"] == pytest.approx(2.85) and s["UA paper_std"] == pytest.approx(0.43)
    assert s["ΔUA"] == pytest.approx(3.5 - 2.85)
    assert s["ΔMIA-Efficacy"] == pytest.approx(15.0 - 14.39)
    assert s["ΔAvg. Gap"] == pytest.approx(1.25 - 1.15)
    assert s["seconds"] == pytest.approx(10.5) and s["target"] == "soft"
    assert r["target"] == "hard" and r["Avg. Gap"] == 0 and r["ΔUA"] == pytest.approx(5.5 - 5.24)
    g = t.loc[("frac=0.1", "ga")]  # |1-5| + 1 + 1 + 11 = 17 -> 4.25
    assert g["Avg. Gap"] == pytest.approx(4.25) and g["ΔAvg. Gap"] == pytest.approx(4.25 - 4.12)
    # the suite's other baseline and the class-wise setting: ours only, no flag
    x = t.loc[("frac=0.1", "scrub")]
    assert x["target"] == "" and pd.isna(x["UA paper"]) and x["UA"] == pytest.approx(2.5)
    c = t.loc[("class=0", "salun")]
    assert c["target"] == "" and pd.isna(c["ΔUA"]) and c["Avg. Gap"] == pytest.approx(1.25)
    assert "variant" not in t.columns  # one hyperparameter set per method


def test_salun_table_is_rendered_with_two_decimals_and_the_flags(records, tmp_path):
    out, metrics, runs = records
    names = {p.name for p in write_tables(metrics, runs, tmp_path, meta=read_meta(out))}
    assert {"salun.md", "salun.tex", "salun.csv"} <= names
    md = (tmp_path / "salun.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| frac=0.1 | salun |"))
    assert "| soft | 3.50 ± 0.71 | 2.85 ± 0.43 | 0.65 |" in row
    assert "**1.25 ± 0.00**" in row  # best Avg. Gap of the setting (retrain excluded)
    assert "| frac=0.1 | retrain | hard | 5.50 ± 0.71 | 5.24 ± 0.69 | 0.26 |" in md
    assert "hard = the paper's Retrain" in (tmp_path / "salun.tex").read_text()


def test_when_the_table_appears(tmp_path):
    # a random-fraction run of a table method (not only retrain) in any suite: a table
    a = tmp_path / "a"
    for m in ("retrain", "ga"):
        write_run(a, m, 0, "frac=0.5", RUNS[m], suite="other")
    t = salun_table(load(a)[0]).set_index("method")
    assert t.loc["ga", "UA paper"] == pytest.approx(0.40) and pd.isna(t.loc["ga", "UA paper_std"])
    # only retrain and a method outside the table (the nablatau suites): none
    b = tmp_path / "b"
    for m in ("retrain", "scrub"):
        write_run(b, m, 0, "frac=0.1", RUNS[m], suite="nablatau-digits")
    assert salun_table(load(b)[0]).empty
    # instance-wise runs of the table's methods outside a salun suite: none
    c = tmp_path / "c"
    for m in ("retrain", "salun"):
        write_run(c, m, 0, "k=8", RUNS[m], suite="smoke")
    assert salun_table(load(c)[0]).empty


def test_runs_of_different_mask_modes_are_rows_apart(tmp_path):
    out = tmp_path / "r"
    write_run(out, "retrain", 0, "frac=0.1", RUNS["retrain"])
    for mode in ("hard", "reference_2024"):
        write_run(out, "salun", 0, "frac=0.1", RUNS["salun"], hp={"mask_mode": mode})
    variants = hparam_variants(read_meta(out))
    assert sorted(v for v in variants.values() if v) == [
        "mask_mode=hard",
        "mask_mode=reference_2024",
    ]
    t = salun_table(load(out)[0], variants=variants)
    assert sorted(t.loc[t["method"] == "salun", "variant"]) == sorted(
        ["mask_mode=hard", "mask_mode=reference_2024"]
    )
    # a key that older records lack is not a difference
    meta = [
        {"run_id": "x", "spec": {"method": "salun"}, "hparams_resolved": {"lr": 0.1}},
        {"run_id": "y", "spec": {"method": "salun"}, "hparams_resolved": {"lr": 0.1, "m": 1}},
    ]
    assert hparam_variants(meta) == {"x": "", "y": ""}


def test_reproduction_page_and_index_section(records, tmp_path):
    out, _, _ = records
    paths = build(out, tmp_path / "report")
    page = tmp_path / "report" / "reproduction.md"
    assert page in paths
    text = page.read_text()
    assert text.startswith("# Reproduction")
    assert "## SalUn Table 1" in text and "Source: Fan, Liu" in text
    # what was run, from the meta lines
    for line in [
        "- runs: 6 (ga, retrain, salun); settings: frac=0.1",
        "- seeds: 0, 1 (2 per row)",
        "- code version: 0.1.0+gabc123",
        "- hardware: device=cpu, cpu_count=2",
        "- precision: fp32",
        "- data, arch, pretraining: digits, val_fraction 0.1, smallcnn, pretraining 10 epochs, "
        "cosine",
        "- suites: salun-test",
        "- SalUn mask_mode: hard",
    ]:
        assert line in text, line
    # ours, theirs, deltas: the published rows only (not scrub, not class-wise)
    assert "| frac=0.1 | salun | soft | 3.50 ± 0.71 | 2.85 ± 0.43 | 0.65 |" in text
    assert "| scrub |" not in text and "class=0" not in text
    assert "| frac=0.1 | Jia et al. 2023 | 5.41 ± 0.11 |" in text
    # deviations: the protocol checks that differ, and the known ones that apply
    dev = text[text.index("### Deviations") :]
    assert "- **dataset**: ours digits; published cifar10" in dev
    assert "- **arch**: ours smallcnn; published resnet18_salun" in dev
    assert "- **pretrain_epochs**: ours 10; published 182" in dev
    assert "- **schedule**: ours cosine; published step" in dev
    assert "- **trials**: ours 2 per row; published 10" in dev
    assert "- **mask_mode**: ours hard; published reference_2024" in dev
    assert "**precision**" not in dev and "**val_fraction**" not in dev  # those match
    assert "Digits variant" in dev and "saliency gradient" in dev
    assert "CPU-sized variant" not in dev  # no resnet20_cifar run
    protocols = load_protocols()
    assert all(d["text"] for p in protocols.values() for d in p["deviations"])
    # index.html: its own section, apart from the tables
    html = (tmp_path / "report" / "index.html").read_text()
    section = html[html.index('<section id="reproduction">') :]
    assert "<h2>Reproduction</h2>" in section and "<ul><li>runs: 6" in section
    assert "<h3>reproduction</h3>" not in html and "<h3>salun</h3>" in html


def test_mnemonic_comparison_and_no_page_without_published_runs(tmp_path):
    rows = [
        {"run_id": "m", "method": "mnemonic", "dataset": "cifar10", "arch": "resnet18_kuangliu",
         "seed": 0, "forget": "class=0", "request": 1, "stage": "after", "split": "test",
         "metric": f"class_{c}_accuracy", "value": 0.0 if c == 0 else 94.0}
        for c in range(10)
    ]  # fmt: skip
    meta = [{"run_id": "m", "spec": {"method": "mnemonic"}, "runtime": {"precision": "bf16"}}]
    text = reproduction_markdown(pd.DataFrame(rows), meta)
    assert "## Mnemonic code" in text and "SalUn" not in text
    assert "- **precision**: ours bf16; published fp32" in text
    assert "- **trials**: ours 1 per row; published 3" in text
    assert "| mnemonic | 0 | 94.0 | 100.0 | 1 | 94.4 | 100.0 | -0.4 | 0.0 |" in text
    # instance-wise runs only: no published table has runs, no page
    out = tmp_path / "k"
    write_run(out, "retrain", 0, "k=8", RUNS["retrain"], suite="smoke")
    assert reproduction_markdown(load(out)[0], read_meta(out)) is None
    assert "reproduction.md" not in {p.name for p in build(out, tmp_path / "rep")}


def test_deviation_checks_and_when_conditions():
    protocol = load_protocols()["salun"]
    per_run = pd.DataFrame(
        {"run_id": ["a", "b"], "method": ["salun", "retrain"], "seed": [0, 0],
         "forget": ["frac=0.1"] * 2, "dataset": ["cifar10"] * 2, "arch": ["mlp"] * 2}
    )  # fmt: skip
    facts = {
        "a": {"suite": "salun-cifar10-cpu", "mask_mode": "reference_2024", "precision": "fp32"},
        "b": {"suite": "salun-cifar10-cpu", "precision": "bf16"},
    }
    lines = deviations(protocol, per_run, facts, ["forget", "method"])
    text = "\n".join(lines)
    assert "**arch**: ours mlp; published resnet18_salun" in text
    assert "**precision**: ours fp32 (1 runs); bf16 (1 runs); published fp32" in text
    assert "**dataset**" not in text and "**mask_mode**" not in text  # those match
    assert any(ln.startswith("- CPU-sized variant") for ln in lines)
    assert not any("Digits variant" in ln for ln in lines)
    assert any("saliency gradient" in ln for ln in lines)  # when method = salun
    assert not any("Boundary Expanding" in ln for ln in lines)  # no such run
