"""Paper-style tables (``reports.tables``) on constructed records: rendered Markdown, LaTeX and
CSV against golden files, and known answers for A_R / E_F, best-value bolding and failed runs.

Regenerate the goldens after a deliberate change of the output (then read the diff):

    UPDATE_GOLDEN=1 python -m pytest tests/test_report_tables.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from reports.aggregate import load
from reports.tables import (
    l2ul_table,
    leaderboard,
    load_published,
    mnemonic_per_run,
    mnemonic_table,
    nablatau_table,
    to_latex,
    to_markdown,
    write_tables,
)

GOLDEN = Path(__file__).parent / "golden" / "tables"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _write_run(out: Path, run_id: str, method: str, seed: int, forget: str, rows, **kw) -> None:
    """One record file: meta line, metric rows ``(request, stage, split, metric, value)`` and a
    status line (``done`` unless ``error`` is given)."""
    base = dict(
        run_id=run_id,
        suite="fixture",
        method=method,
        dataset=kw.get("dataset", "digits"),
        arch="smallcnn",
        seed=seed,
        forget=forget,
        k=kw.get("k", 0),
        scenario=kw.get("scenario", "single"),
    )
    lines = [{"type": "meta", "run_id": run_id, "spec": {"method": method, "seed": seed}}]
    for request, stage, split, metric, value in rows:
        lines.append(
            {
                "type": "metric",
                **base,
                "request": request,
                "stage": stage,
                "split": split,
                "metric": metric,
                "value": float(value),
            }
        )
    error = kw.get("error")
    lines.append(
        {"run_id": run_id, "status": "failed", "error": error}
        if error
        else {"run_id": run_id, "status": "done"}
    )
    (out / "records").mkdir(parents=True, exist_ok=True)
    (out / "records" / f"{run_id}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


#: per method: (D_f acc, D_r acc, test acc, mia_svc, steps) at seed 0; seed 1 shifts them
METHODS = {
    "retrain": (90.0, 100.0, 98.0, 0.20, 400),
    "neggrad": (0.0, 40.0, 38.0, 0.90, 50),
    "adv_mas": (20.0, 95.0, 93.0, 0.40, 300),
}


def make_records(out: Path) -> Path:
    """3 methods x 2 seeds x 2 instance forget sets (k=8, k=32), one failed run, two class
    forgetting runs with per-class accuracies, random-fraction runs with U-MIA rows and one
    continual run of 2 requests."""
    for method, (f, r, t, mia, steps) in METHODS.items():
        for seed in (0, 1):
            for k in (8, 32):
                d = seed * 2.0 + (k == 32) * 1.0
                rows = [
                    (0, "before", "forget", "accuracy", 100.0),
                    (1, "unlearn", "-", "steps", steps + 10 * seed),
                    (1, "unlearn", "-", "cap_hit", float(method == "adv_mas" and seed == 1)),
                    (1, "after", "forget", "accuracy", max(f - d, 0.0)),
                    (1, "after", "retain", "accuracy", r - d),
                    (1, "after", "test", "accuracy", t - d),
                    (1, "after", "forget", "mia_svc", mia + 0.01 * seed),
                ]
                rid = f"{method}-k{k}-s{seed}"
                _write_run(out, rid, method, seed, f"k={k}", rows, k=k)
    _write_run(out, "scrub-k8-s0", "scrub", 0, "k=8", [], k=8, error="ValueError: lr | too big")
    # class forgetting of class 1 on a 3-class problem
    for method, accs in {"mnemonic": (90.0, 2.0, 80.0), "retrain": (96.0, 0.0, 94.0)}.items():
        for seed in (0, 1):
            rows = [
                (1, "after", "test", f"class_{c}_accuracy", a - seed * 2.0 * (c != 1))
                for c, a in enumerate(accs)
            ]
            _write_run(out, f"{method}-c1-s{seed}", method, seed, "class=1", rows)
    for method, (mia_l, mia_e) in {"nabla_tau": (0.52, 0.55), "retrain": (0.5, 0.51)}.items():
        for seed in (0, 1):
            rows = [
                (1, "after", "forget", "accuracy", 97.0 + seed),
                (1, "after", "retain", "accuracy", 99.0 - seed),
                (1, "after", "test", "accuracy", 95.0 + seed),
                (1, "after", "forget", "mia_loss", mia_l + 0.02 * seed),
                (1, "after", "forget", "mia_entropy", mia_e - 0.02 * seed),
            ]
            _write_run(out, f"{method}-f-s{seed}", method, seed, "frac=0.1", rows)
    rows = [
        (req, "after", split, "accuracy", base - 10 * req)
        for req in (1, 2)
        for split, base in [("forget", 30.0), ("forget_request", 25.0), ("retain", 99.0)]
    ]
    rows += [(req, "after", "test", "accuracy", 95.0 - req) for req in (1, 2)]
    _write_run(out, "neggrad-cont-s0", "neggrad", 0, "k=8", rows, k=8, scenario="continual")
    return out


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return load(make_records(tmp_path_factory.mktemp("tables")))


def test_rendered_tables_match_golden(records, tmp_path):
    metrics, runs = records
    paths = write_tables(metrics, runs, tmp_path)
    names = sorted(p.name for p in paths)
    for table in ["l2ul", "continual", "mnemonic", "nablatau", "leaderboard"]:
        assert {f"{table}.md", f"{table}.tex", f"{table}.csv"} <= set(names), table
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for old in GOLDEN.iterdir():
            old.unlink()
        for p in paths:
            (GOLDEN / p.name).write_text(p.read_text())
    assert sorted(p.name for p in GOLDEN.iterdir()) == names, "run with UPDATE_GOLDEN=1"
    for p in paths:
        assert p.read_text() == (GOLDEN / p.name).read_text(), f"{p.name} differs from golden"


def test_l2ul_table_numbers(records):
    metrics, _ = records
    t = l2ul_table(metrics).set_index(["k", "method"])
    row = t.loc[(8, "neggrad")]
    assert row["D_r acc"] == pytest.approx((40.0 + 38.0) / 2)  # seeds 0 and 1: 40 and 38
    assert row["steps"] == 55 and row["n"] == 2
    assert row["D_r acc_std"] == pytest.approx(2**0.5)
    assert "scrub" not in t.index.get_level_values("method")  # failed: not in the table


def test_a_r_and_e_f_known_answer(records):
    metrics, _ = records
    per_run = mnemonic_per_run(metrics).set_index(["method", "seed"])
    # forget class 1; remaining classes 0 and 2 at 90 and 80 (seed 0), 88 and 78 (seed 1)
    assert per_run.loc[("mnemonic", 0), "A_R"] == pytest.approx(85.0)
    assert per_run.loc[("mnemonic", 1), "A_R"] == pytest.approx(83.0)
    assert per_run.loc[("mnemonic", 0), "E_F"] == pytest.approx(98.0)
    t = mnemonic_table(metrics, load_published()).set_index("method")
    assert t.loc["mnemonic", "A_R"] == pytest.approx(84.0)
    assert t.loc["retrain", "E_F"] == pytest.approx(100.0)


def test_published_numbers_join_and_delta():
    pub = load_published()
    assert set(pub["source"].str.contains("Table")) == {True}
    cifar = pub[(pub["dataset"] == "cifar10") & (pub["table"] == "2")].set_index("method")
    assert cifar.loc["mnemonic", "value"] == pytest.approx(94.4)
    assert cifar.loc["mnemonic", "std"] == pytest.approx(0.1)
    assert len(pub[(pub["table"] == "5") & (pub["dataset"] == "cifar10")]) == 8  # 4 t_mix x 2
    # a CIFAR-10 class-0 mnemonic run at A_R 94.0, E_F 100 sits 0.4 below the paper's A_R
    rows = [
        {
            "run_id": "r",
            "method": "mnemonic",
            "dataset": "cifar10",
            "arch": "resnet18_cifar",
            "seed": 0,
            "forget": "class=0",
            "request": 1,
            "stage": "after",
            "split": "test",
            "metric": f"class_{c}_accuracy",
            "value": 0.0 if c == 0 else 94.0,
        }
        for c in range(10)
    ]
    t = mnemonic_table(pd.DataFrame(rows), pub).iloc[0]
    assert t["A_R paper"] == pytest.approx(94.4) and t["ΔA_R"] == pytest.approx(-0.4)
    assert t["E_F paper"] == pytest.approx(100.0) and t["ΔE_F"] == pytest.approx(0.0)


def test_best_per_column_bolding():
    df = pd.DataFrame(
        {
            "method": ["a", "b", "c", "retrain"],
            "acc": [90.04, 90.0, 80.0, 99.0],
            "acc_std": [1.0, 2.0, 3.0, 0.0],
            "gap": [3.0, 1.0, 2.0, 0.0],
        }
    )
    tex = to_latex(df, "cap", "tab:x", {"acc": True, "gap": False}, reference="retrain")
    lines = tex.splitlines()
    row = {ln.split(" & ")[0]: ln for ln in lines if " & " in ln}
    # 90.04 and 90.0 tie at one decimal: both bold; retrain's 99.0 is never a candidate
    assert r"\textbf{\boldmath$90.0 \pm 1.0$}" in row["a"]
    assert r"\textbf{\boldmath$90.0 \pm 2.0$}" in row["b"]
    assert r"\textbf{" not in row["c"] and r"\textbf{" not in row["retrain"]
    assert r"\textbf{1.0}" in row["b"]
    assert [ln for ln in lines if ln in (r"\toprule", r"\midrule", r"\bottomrule")] == [
        r"\toprule",
        r"\midrule",
        r"\bottomrule",
    ]
    md = to_markdown(df, higher_is_better={"acc": True})
    assert "| retrain | **99.0 ± 0.0** |" in md  # without a reference, the max wins


def test_failed_runs_are_listed(records, tmp_path):
    metrics, runs = records
    missing = pd.DataFrame([{"run_id": "ghost", "status": None, "error": "", "method": "ssd"}])
    write_tables(metrics, pd.concat([runs, missing], ignore_index=True), tmp_path)
    text = (tmp_path / "runs.md").read_text()
    assert "| scrub-k8-s0 | scrub | 0 | failed | ValueError: lr \\| too big |" in text
    assert "| ghost | ssd |  | missing |  |" in text
    assert "1 failed" in text and "1 missing" in text


def test_absent_data_skips_tables(tmp_path):
    out = tmp_path / "recs"
    _write_run(out, "a", "neggrad", 0, "k=8", [(1, "after", "forget", "accuracy", 0.0)], k=8)
    metrics, runs = load(out)
    names = {p.name for p in write_tables(metrics, runs, tmp_path / "t")}
    assert names == {"l2ul.md", "l2ul.tex", "l2ul.csv", "runs.md"}
    assert leaderboard(metrics).empty and nablatau_table(metrics).empty


def test_l2ul_table_confidence_intervals_and_cap_hits(records):
    """95 % t-interval half-widths of D_r / test accuracy over seeds and the count of runs that
    stopped at the cap, per (k, method): known answers on the fixture (2 seeds 2 points apart:
    std sqrt(2), half-width t_0.975(1) * sqrt(2) / sqrt(2) = 12.706)."""
    from reports.tables import l2ul_table

    metrics, _ = records
    table = l2ul_table(metrics).set_index(["k", "method"])
    assert list(table.columns[-3:]) == ["test CI95", "cap hits", "n"]
    for k in (8, 32):
        assert table.loc[(k, "neggrad"), "D_r CI95"] == pytest.approx(12.7062, abs=1e-3)
        assert table.loc[(k, "neggrad"), "test CI95"] == pytest.approx(12.7062, abs=1e-3)
        assert table.loc[(k, "adv_mas"), "cap hits"] == 1
        assert table.loc[(k, "neggrad"), "cap hits"] == 0
