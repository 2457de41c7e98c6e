"""Frame helpers shared by the report's tables (``reports.tables``, ``reports.salun``): the
last request of each run, one column per wanted metric, and mean / std per group."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

#: suffix of the standard-deviation column that belongs to a mean column
STD = "_std"


def final_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows of each run's last request (the state after all unlearning)."""
    last = metrics.groupby("run_id")["request"].transform("max")
    return metrics[metrics["request"] == last]


def order_rows(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Sort rows by keys, with the ``retrain`` reference last within its group."""
    if df.empty:
        return df.reset_index(drop=True)
    df = df.assign(_ref=(df["method"] == "retrain") if "method" in df else False)
    sort = [k for k in keys if k != "method"] + ["_ref"] + (["method"] if "method" in keys else [])
    return (
        df.sort_values(sort, kind="stable", key=_natural)
        .drop(columns="_ref")
        .reset_index(drop=True)
    )


def _natural_key(value: Any) -> tuple:
    """'k=8' before 'k=32', 'class=2' before 'class=10': text split into words and numbers."""
    parts = re.split(r"(\d+(?:\.\d+)?)", str(value))
    return tuple((0, float(x), "") if i % 2 else (1, 0.0, x) for i, x in enumerate(parts))


def _natural(col: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return col
    return pd.Series(col.map(_natural_key).tolist(), index=col.index, dtype=object)


def per_run_to_stats(per_run: pd.DataFrame, keys: list[str], cols: list[str]) -> pd.DataFrame:
    """One row per ``keys``: mean, std (``_std``) over runs for each of ``cols``, and ``n``."""
    g = per_run.groupby(keys, dropna=False, sort=False)
    mean, std = g[cols].mean(), g[cols].std()
    out = mean.copy()
    for c in cols:
        out[c + STD] = std[c]
    out = out[[x for c in cols for x in (c, c + STD)]]
    out["n"] = g["run_id"].nunique()
    return order_rows(out.reset_index(), keys)


def pick(metrics: pd.DataFrame, wanted: dict[tuple[str, str, str], str]) -> pd.DataFrame:
    """Per run (and request), one column per wanted (stage, split, metric)."""
    sel = [
        (a, b, c) in wanted
        for a, b, c in zip(metrics["stage"], metrics["split"], metrics["metric"])
    ]
    m = metrics[sel]
    m = m.assign(column=[wanted[(a, b, c)] for a, b, c in zip(m["stage"], m["split"], m["metric"])])
    idx = [
        c for c in ["run_id", "dataset", "arch", "method", "seed", "forget", "request"] if c in m
    ]
    wide = m.pivot_table(index=idx, columns="column", values="value", aggfunc="first")
    return wide.reindex(columns=[c for c in wanted.values() if c in wide.columns]).reset_index()
