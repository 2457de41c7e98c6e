"""Cross-run metrics of the aggregation layer on constructed records: gap to retrain,
Avg. Gap, RTE."""

from __future__ import annotations

import pandas as pd
import pytest

from reports.aggregate import avg_gap, retrain_gaps, rte


def _rows(method, seed, acc_f, acc_r, acc_t, mia, seconds, request=1, peak=100.0):
    base = dict(
        run_id=f"{method}-{seed}",
        suite="s",
        method=method,
        dataset="digits",
        arch="smallcnn",
        seed=seed,
        forget="k=8",
        scenario="single",
        request=request,
    )
    vals = [
        ("after", "forget", "accuracy", acc_f),
        ("after", "retain", "accuracy", acc_r),
        ("after", "test", "accuracy", acc_t),
        ("after", "forget", "mia_svc", mia),
        ("unlearn", "-", "wall_seconds", seconds),
        ("unlearn", "-", "peak_memory_mb", peak),
        ("before", "forget", "accuracy", 100.0),
    ]
    return [
        {**base, "stage": st, "split": sp, "metric": m, "value": v, "type": "metric"}
        for st, sp, m, v in vals
    ]


def _metrics():
    rows = []
    rows += _rows("retrain", 0, 90.0, 99.0, 95.0, 0.20, 40.0)
    rows += _rows("retrain", 1, 80.0, 98.0, 94.0, 0.30, 40.0)
    rows += _rows("neggrad", 0, 0.0, 79.0, 75.0, 0.60, 2.0)  # gaps 90, 20, 20, 40 -> 42.5
    rows += _rows("neggrad", 1, 80.0, 98.0, 94.0, 0.30, 4.0)  # identical to retrain -> 0
    rows += _rows("orphan", 5, 1.0, 2.0, 3.0, 0.1, 1.0)  # no retrain with seed 5
    return pd.DataFrame(rows)


def test_avg_gap_known_answers_and_retrain_to_itself_is_zero():
    g = avg_gap(_metrics()).set_index("run_id")
    assert g.loc["retrain-0", "avg_gap"] == 0.0 and g.loc["retrain-1", "avg_gap"] == 0.0
    assert g.loc["neggrad-0", "avg_gap"] == pytest.approx((90 + 20 + 20 + 40) / 4)
    assert g.loc["neggrad-0", "MIA-Efficacy"] == pytest.approx(40.0)
    assert g.loc["neggrad-1", "avg_gap"] == pytest.approx(0.0)
    assert "orphan-5" not in g.index
    assert (g["terms"] == 4).all()


def test_gaps_pair_by_seed_and_skip_before_rows():
    gaps = retrain_gaps(_metrics())
    assert set(gaps["stage"]) == {"after"}
    row = gaps[(gaps["run_id"] == "neggrad-0") & (gaps["split"] == "retain")].iloc[0]
    assert (row["value"], row["retrain"], row["gap"]) == (79.0, 99.0, 20.0)
    assert retrain_gaps(_metrics()[lambda d: d["method"] != "retrain"]).empty


def test_rte_is_retrain_time_over_method_time():
    r = rte(_metrics()).set_index("run_id")
    assert r.loc["neggrad-0", "rte"] == pytest.approx(20.0)
    assert r.loc["neggrad-1", "rte"] == pytest.approx(10.0)
    assert r.loc["retrain-0", "rte"] == pytest.approx(1.0)
    assert pd.isna(r.loc["orphan-5", "rte"])
    assert r.loc["neggrad-0", "peak_memory_mb"] == 100.0


def test_summary_skips_method_forget_pairs_that_did_not_run():
    from reports.aggregate import format_mean_std, summary_table

    m = _metrics()
    extra = pd.DataFrame(_rows("mnemonic", 0, 0.0, 99.0, 95.0, 0.2, 1.0)).assign(forget="class=0")
    table = format_mean_std(summary_table(pd.concat([m, extra], ignore_index=True)))
    index = set(
        table.index.get_level_values("method") + "/" + table.index.get_level_values("forget")
    )
    assert "mnemonic/class=0" in index and "mnemonic/k=8" not in index
    assert "retrain/class=0" not in index
