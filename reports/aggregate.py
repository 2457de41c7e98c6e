"""Pure pandas aggregation of run records (no rendering here)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bench.records import iter_records

KEYS = ["suite", "dataset", "arch", "method", "forget", "scenario"]


def load(
    out: Path | str, run_ids: Iterable[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(metrics, runs)``: tidy metric rows of finished runs, and one row per run with its
    status (``done`` / ``failed``) and error. Failed runs are listed, never dropped."""
    wanted = set(run_ids) if run_ids is not None else None
    metric_rows, status = [], {}
    meta: dict[str, dict] = {}
    for r in iter_records(out):
        rid = r.get("run_id")
        if wanted is not None and rid not in wanted:
            continue
        if r.get("type") == "metric":
            metric_rows.append(r)
        elif r.get("type") == "meta":
            meta[rid] = r
        elif "status" in r:
            status[rid] = r
    metrics = pd.DataFrame(metric_rows)
    if not metrics.empty:
        done = {rid for rid, s in status.items() if s.get("status") == "done"}
        metrics = metrics[metrics["run_id"].isin(done)].reset_index(drop=True)
    runs = pd.DataFrame(
        [
            {
                "run_id": rid,
                "status": s.get("status"),
                "error": s.get("error", ""),
                "method": meta.get(rid, {}).get("spec", {}).get("method"),
                "seed": meta.get(rid, {}).get("spec", {}).get("seed"),
            }
            for rid, s in status.items()
        ]
    )
    return metrics, runs


def seed_stats(metrics: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
    """Mean, std, n and 95 % t-interval half-width over seeds for every (keys, stage, split,
    metric) of the final request."""
    from scipy import stats

    if metrics.empty:
        return pd.DataFrame()
    keys = [k for k in (keys or KEYS) if k in metrics.columns]
    last = metrics[metrics["request"] == metrics.groupby("run_id")["request"].transform("max")]
    last = pd.concat([last, metrics[metrics["stage"] == "before"]]).drop_duplicates()
    g = last.groupby(keys + ["stage", "split", "metric"], dropna=False)["value"]
    out = g.agg(["mean", "std", "count"]).reset_index().rename(columns={"count": "n"})
    t = stats.t.ppf(0.975, (out["n"] - 1).clip(lower=1))
    out["ci95"] = (t * out["std"] / out["n"].pow(0.5)).where(out["n"] > 1)
    return out


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The headline table: per (dataset, arch, method, forget) the after-unlearning accuracy
    on D_f / D_r / test, steps and seconds, as mean and std columns over seeds."""
    st = seed_stats(metrics)
    if st.empty:
        return st
    wanted = {
        ("after", "forget", "accuracy"): "D_f acc",
        ("after", "retain", "accuracy"): "D_r acc",
        ("after", "test", "accuracy"): "test acc",
        ("unlearn", "-", "steps"): "steps",
        ("unlearn", "-", "wall_seconds"): "seconds",
    }
    st = st[[(a, b, c) in wanted for a, b, c in zip(st["stage"], st["split"], st["metric"])]]
    st = st.assign(
        column=[wanted[(a, b, c)] for a, b, c in zip(st["stage"], st["split"], st["metric"])]
    )
    keys = [k for k in KEYS if k in st.columns and k not in ("suite", "scenario")]
    wide = st.pivot_table(
        index=keys, columns="column", values=["mean", "std", "n"], aggfunc="first", dropna=False
    )
    return wide


def format_mean_std(wide: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """``mean ± std`` strings for display (rendering helper for the CLI summary)."""
    if wide.empty:
        return wide
    cols = [
        c
        for c in ["D_f acc", "D_r acc", "test acc", "steps", "seconds"]
        if c in wide["mean"].columns
    ]
    out = pd.DataFrame(index=wide.index)
    for c in cols:
        d = 2 if c == "seconds" else (0 if c == "steps" else digits)
        m = wide["mean"][c]
        s = wide["std"][c].fillna(0) if "std" in wide.columns.get_level_values(0) else m * 0
        out[c] = [f"{a:.{d}f} ± {b:.{d}f}" for a, b in zip(m, s)]
    out["n"] = wide["n"][cols[0]].astype(int)
    return out
