"""Pure pandas aggregation of run records (no rendering here)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bench.core.records import iter_record_files

KEYS = ["suite", "dataset", "arch", "method", "forget", "scenario"]
#: label suffix of the method of a tuned run (``bench.tune``: rows with a ``tuned`` study)
TUNED_SUFFIX = " (tuned)"


def load(
    out: Path | str, run_ids: Iterable[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(metrics, runs)``: tidy metric rows of finished runs, and one row per run with its
    status (``done`` / ``failed`` / ``damaged``: a record file that is not whole, whose rows
    are left out) and error. Failed and damaged runs are listed, never dropped."""
    wanted = set(run_ids) if run_ids is not None else None
    metric_rows: list[dict] = []
    runs: dict[str, dict] = {}
    for path, state, reason, rows in iter_record_files(out):
        last = rows[-1] if rows and state in ("done", "failed") else {}
        rid = last.get("run_id") or path.stem
        if wanted is not None and rid not in wanted:
            continue
        meta = next((r for r in rows if r.get("type") == "meta"), {})
        spec = meta.get("spec") if isinstance(meta.get("spec"), dict) else {}
        if state == "done":
            metric_rows.extend(r for r in rows if r.get("type") == "metric")
        runs[rid] = {
            "run_id": rid,
            "status": state,
            "error": last.get("error", "")
            if state == "failed"
            else f"{path}: {reason}"
            if reason
            else "",
            "method": spec.get("method"),
            "seed": spec.get("seed"),
        }
    metrics = pd.DataFrame(metric_rows)
    if "tuned" in metrics.columns:  # tuned runs: their own rows in every table, beside defaults
        tuned = metrics["tuned"].fillna("").astype(str) != ""
        metrics.loc[tuned, "method"] = metrics.loc[tuned, "method"] + TUNED_SUFFIX
    return metrics, pd.DataFrame(list(runs.values()))


def with_planned(runs: pd.DataFrame, planned: list[dict] | None) -> pd.DataFrame:
    """``runs`` plus a ``missing`` row for every run of ``planned``
    (``bench.protocol.plan.planned_runs``)
    that has no record."""
    if not planned:
        return runs
    have = set(runs["run_id"]) if not runs.empty else set()
    extra = []
    for r in planned:
        if r["run_id"] in have:
            continue
        have.add(r["run_id"])
        spec = r.get("spec") or {}
        extra.append(
            {
                "run_id": r["run_id"],
                "status": "missing",
                "error": "planned in plan.json; no record",
                "method": spec.get("method"),
                "seed": spec.get("seed"),
            }
        )
    return pd.concat([runs, pd.DataFrame(extra)], ignore_index=True) if extra else runs


def seed_stats(metrics: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
    """Mean, std, n and 95 % t-interval half-width over seeds for every (keys, stage, split,
    metric) of the final request."""
    from scipy import stats

    if metrics.empty:
        return pd.DataFrame()
    keys = [k for k in (keys or KEYS) if k in metrics.columns]
    metrics = metrics[metrics["stage"] != "trace"]  # traces are per step, not per run
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
    # dropna=False keeps all-NaN columns, but also makes up index combinations no run has
    # (a method skipped for a forget kind): drop those rows
    return wide[wide["mean"].notna().any(axis=1)]


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


# ---------------------------------------------------------------------------------------------
# cross-run metrics: gap to the retrained model, Avg. Gap, RTE

#: a run is paired with the ``retrain`` run of the same cause of data and randomness
PAIR_KEYS = ["dataset", "arch", "forget", "seed", "scenario", "request"]

#: the four terms of Avg. Gap (Jia et al. 2023; Fan et al. 2024), in percentage points:
#: (split, metric, scale to %); UA = 100 - accuracy(D_f) has the same gap as accuracy(D_f)
AVG_GAP_TERMS = {
    "UA": ("forget", "accuracy", 1.0),
    "RA": ("retain", "accuracy", 1.0),
    "TA": ("test", "accuracy", 1.0),
    "MIA-Efficacy": ("forget", "mia_svc", 100.0),
}


def _final_after(metrics: pd.DataFrame) -> pd.DataFrame:
    last = metrics["request"] == metrics.groupby("run_id")["request"].transform("max")
    return metrics[last & metrics["stage"].isin(["after", "unlearn"])]


def retrain_gaps(metrics: pd.DataFrame, reference: str = "retrain") -> pd.DataFrame:
    """Every after-unlearning metric of every run beside the same metric of the ``reference``
    run with the same dataset, arch, forget set, seed, scenario and request: columns
    ``value``, ``retrain`` and ``gap`` = |value - retrain|. Runs without a reference are
    left out (a suite without ``retrain`` has no gaps)."""
    if metrics.empty:
        return pd.DataFrame()
    after = _final_after(metrics)
    after = after[after["stage"] == "after"]
    keys = [k for k in PAIR_KEYS if k in after.columns] + ["split", "metric"]
    ref = after[after["method"] == reference][keys + ["value"]].rename(columns={"value": "retrain"})
    if ref.empty:
        return pd.DataFrame()
    out = after.merge(ref.drop_duplicates(keys), on=keys, how="inner")
    return out.assign(gap=(out["value"] - out["retrain"]).abs())


def avg_gap(metrics: pd.DataFrame, reference: str = "retrain") -> pd.DataFrame:
    """Avg. Gap per run: the mean over {UA, RA, TA, MIA-Efficacy} of |m - m_retrain| in
    percentage points (MIA-Efficacy = ``mia_svc`` x 100). Runs missing a term get NaN for it and
    their Avg. Gap is over the terms present (column ``terms`` says how many). One row per run:
    keys, seed, the four gaps and ``avg_gap``; the reference itself scores 0."""
    gaps = retrain_gaps(metrics, reference)
    if gaps.empty:
        return pd.DataFrame()
    cols = {}
    for term, (split, metric, scale) in AVG_GAP_TERMS.items():
        sel = gaps[(gaps["split"] == split) & (gaps["metric"] == metric)]
        cols[term] = sel.set_index("run_id")["gap"] * scale
    wide = pd.DataFrame(cols)
    ids = gaps.drop_duplicates("run_id").set_index("run_id")
    keys = [k for k in ["dataset", "arch", "method", "forget", "scenario", "seed"] if k in ids]
    wide = ids[keys].join(wide)
    terms = list(AVG_GAP_TERMS)
    wide["terms"] = wide[terms].notna().sum(axis=1)
    wide["avg_gap"] = wide[terms].mean(axis=1, skipna=True)
    return wide.reset_index()


def rte(metrics: pd.DataFrame, reference: str = "retrain") -> pd.DataFrame:
    """Run-time efficiency per run: unlearning wall seconds, the reference's seconds on the same
    pairing keys, the speed-up ``T_retrain / T_method`` (DeepUnlearn's RTE) and peak memory
    (MB). Compare only runs made on the same hardware (records carry it in their meta line)."""
    if metrics.empty:
        return pd.DataFrame()
    u = _final_after(metrics)
    u = u[u["stage"] == "unlearn"]
    keys = [k for k in PAIR_KEYS if k in u.columns]
    secs = u[u["metric"] == "wall_seconds"]
    # continual runs: total time over all requests
    total = metrics[(metrics["stage"] == "unlearn") & (metrics["metric"] == "wall_seconds")]
    total = total.groupby("run_id")["value"].sum().rename("seconds")
    runs = secs.drop_duplicates("run_id").set_index("run_id")[keys + ["method"]].join(total)
    peak = u[u["metric"] == "peak_memory_mb"].groupby("run_id")["value"].max()
    runs["peak_memory_mb"] = peak
    ref = runs[runs["method"] == reference][keys + ["seconds"]].rename(
        columns={"seconds": "retrain_seconds"}
    )
    out = runs.reset_index().merge(ref.drop_duplicates(keys), on=keys, how="left")
    out["rte"] = out["retrain_seconds"] / out["seconds"]
    return out
