"""SalUn's Table 1 (Fan et al., ICLR 2024) beside our runs: the published numbers, stored with
their source in ``reports/published/salun.csv``, and the builder of the ``salun`` table.

The table holds, per forget setting (random 10 %, 50 %, class-wise) and method, UA, RA, TA and
MIA-Efficacy (the ``mia_svc`` row: the SVC MIA's ``confidence`` feature on D_f, x 100, as the
reference README defines the table's MIA), the Avg. Gap to our Retrain and the unlearning
time, mean and std over seeds, beside the published value and the delta ours - paper.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from reports.aggregate import AVG_GAP_TERMS, avg_gap
from reports.frames import STD, final_rows, per_run_to_stats, pick

#: SalUn Table 1 and the l1-sparse paper's dense Retrain row (tidy: one row per paper,
#: setting, method and metric, with source and the hard / soft target flag)
PUBLISHED_SALUN = Path(__file__).with_name("published") / "salun.csv"
#: UA, RA, TA, MIA-Efficacy (in %)
TERMS = list(AVG_GAP_TERMS)
#: the table's row names -> registered methods
PAPER_METHODS = {
    "Retrain": "retrain",
    "FT": "finetune",
    "RL": "rl",
    "GA": "ga",
    "IU": "iu",
    "BE": "boundary_expanding",
    "BS": "boundary_shrink",
    "l1-sparse": "l1_sparse",
    "SalUn": "salun",
}
TABLE_METHODS = tuple(PAPER_METHODS.values())
#: records of suites whose name starts so always enter the table
SUITE_PREFIX = "salun"
GAP, GAP_MEANS = "Avg. Gap", "Gap of means"
#: two decimals, as the paper prints them
DIGITS = {c: 2 for t in [*TERMS, GAP] for c in (t, f"{t} paper", f"Δ{t}", GAP_MEANS, "seconds")}


def load_published_salun(path: Path | str = PUBLISHED_SALUN, paper: str | None = "salun"):
    """The published numbers as a tidy frame; ``paper`` keeps one paper's rows (``salun``,
    ``l1_sparse``; ``None``: all)."""
    df = pd.read_csv(path, dtype={"table": str})
    return df if paper is None else df[df["paper"] == paper].reset_index(drop=True)


def select(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows of the table's runs: single-request runs in the (dataset, arch, forget) groups
    that hold a ``salun*`` suite's runs, or a random-fraction run of one of the table's methods
    other than ``retrain``; within them, every method of a ``salun*`` suite and the table's
    methods of any suite (retrain included: it is the reference)."""
    if metrics.empty or not {"forget", "method", "dataset", "arch"} <= set(metrics.columns):
        return metrics.iloc[0:0]
    m = metrics
    if "scenario" in m:
        m = m[m["scenario"].fillna("single") == "single"]
    suite = m["suite"].fillna("").astype(str) if "suite" in m else pd.Series("", index=m.index)
    in_suite = suite.str.startswith(SUITE_PREFIX)
    ours = m["method"].isin(TABLE_METHODS)
    frac = m["forget"].astype(str).str.startswith("frac=") & ours & (m["method"] != "retrain")
    key = list(zip(m["dataset"], m["arch"], m["forget"]))
    groups = {k for k, s, f in zip(key, in_suite, frac) if s or f}
    in_group = pd.Series([k in groups for k in key], index=m.index)
    return m[in_group & (in_suite | ours)]


def hparam_variants(meta: Iterable[dict]) -> dict[str, str]:
    """run_id -> a label of the hyperparameters (``hparams_resolved`` of the meta line, else
    the spec's overrides) that set the run apart from other runs of the same method, dataset,
    arch and forget set, e.g. ``mask_mode=reference_2024``; ``""`` where all such runs agree.
    Keys missing from some runs' records (older code) are not compared."""
    groups: dict[tuple, dict[str, dict]] = {}
    for m in meta:
        spec = m.get("spec") if isinstance(m.get("spec"), dict) else {}
        hp = m.get("hparams_resolved") or spec.get("hparams") or {}
        if not m.get("run_id") or not isinstance(hp, dict):
            continue
        data = spec.get("data") if isinstance(spec.get("data"), dict) else {}
        key = (
            spec.get("method"),
            data.get("name"),
            spec.get("arch"),
            json.dumps(spec.get("forget"), sort_keys=True, default=str),
        )
        groups.setdefault(key, {})[m["run_id"]] = hp
    out: dict[str, str] = {}
    for runs in groups.values():
        shared = set.intersection(*(set(hp) for hp in runs.values()))
        differ = sorted(
            k for k in shared if len({json.dumps(hp[k], default=str) for hp in runs.values()}) > 1
        )
        for rid, hp in runs.items():
            out[rid] = ", ".join(f"{k}={hp[k]}" for k in differ)
    return out


def salun_per_run(metrics: pd.DataFrame, variants: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per run of :func:`select`: UA, RA, TA, MIA-Efficacy (%), ``Avg. Gap`` (to the
    retrain run of the same dataset, arch, forget set and seed; NaN without one), ``seconds``
    (unlearning wall time) and ``variant`` (:func:`hparam_variants`)."""
    m = final_rows(select(metrics))
    if m.empty:
        return pd.DataFrame()
    wanted = {("after", split, metric): t for t, (split, metric, _) in AVG_GAP_TERMS.items()}
    wanted[("unlearn", "-", "wall_seconds")] = "seconds"
    per_run = pick(m, wanted)
    for t, (_, _, scale) in AVG_GAP_TERMS.items():
        if t in per_run:
            per_run[t] = per_run[t] * scale
    if "UA" in per_run:
        per_run["UA"] = 100.0 - per_run["UA"]
    gaps = avg_gap(m)
    if not gaps.empty:
        gaps = gaps[gaps["terms"] > 0].set_index("run_id")["avg_gap"].rename(GAP)
        per_run = per_run.join(gaps, on="run_id")
    variants = variants or {}
    per_run["variant"] = [variants.get(r, "") for r in per_run["run_id"]]
    return per_run


def _gap_of_means(out: pd.DataFrame, terms: list[str]) -> pd.Series:
    """Per row, mean over ``terms`` of |row mean - the same setting's retrain mean| (the
    paper's Avg. Gap, computed from the table's means)."""
    keys = ["dataset", "arch", "forget"]
    ref = out[out["method"] == "retrain"].drop_duplicates(keys).set_index(keys)[terms]
    joined = out[keys].join(ref, on=keys)
    return (
        (out[terms] - joined[terms])
        .abs()
        .mean(axis=1, skipna=True)
        .where(joined[terms].notna().any(axis=1))
    )


def salun_table(
    metrics: pd.DataFrame,
    published: pd.DataFrame | None = None,
    variants: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Per (dataset, arch, forget, method[, variant]): UA, RA, TA, MIA-Efficacy, ``Avg. Gap``
    and ``seconds`` (mean, ``_std`` over seeds), ``Gap of means`` (the paper's way), the
    published value of the same setting and method (``<col> paper`` with ``_std``), the delta
    ``Δ<col>`` = ours - paper (the Avg. Gap's delta uses the gap of means), ``target``
    (``hard`` for the paper's Retrain, ``soft`` for its other rows, empty where the paper has
    no number) and ``n``. Published numbers are matched by forget label and method alone: they
    are CIFAR-10 / ResNet-18 numbers whatever the rows' data (reproduction.md lists the
    differences). Empty without runs of the table."""
    per_run = salun_per_run(metrics, variants)
    if per_run.empty:
        return pd.DataFrame()
    terms = [t for t in TERMS if t in per_run and per_run[t].notna().any()]
    cols = terms + [c for c in (GAP, "seconds") if c in per_run]
    keys = ["dataset", "arch", "forget", "method", "variant"]
    out = per_run_to_stats(per_run, keys, cols)
    out[GAP_MEANS] = _gap_of_means(out, terms) if terms else float("nan")
    pub = load_published_salun() if published is None else published
    idx = ["forget", "method"]
    value = pub.pivot_table(index=idx, columns="metric", values="value", aggfunc="first")
    std = pub.pivot_table(index=idx, columns="metric", values="std", aggfunc="first")
    flags = pub.drop_duplicates(idx).set_index(idx)["target"]
    out = out.join(flags, on=idx)
    for c in [*terms, GAP]:
        if c not in value:
            continue
        out = out.join(value[c].rename(f"{c} paper"), on=idx)
        if c in std:
            out = out.join(std[c].rename(f"{c} paper{STD}"), on=idx)
    for c in terms:
        if f"{c} paper" in out:
            out[f"Δ{c}"] = out[c] - out[f"{c} paper"]
    if f"{GAP} paper" in out:
        out[f"Δ{GAP}"] = out[GAP_MEANS] - out[f"{GAP} paper"]
    order = ["dataset", "arch", "forget", "method", "variant", "target"]
    for c in [*terms, GAP]:
        order += [c, c + STD]
        order += [GAP_MEANS] if c == GAP else []
        order += [f"{c} paper", f"{c} paper{STD}", f"Δ{c}"]
    order += ["seconds", "seconds" + STD, "n"]
    out = out[[c for c in order if c in out]]
    out["target"] = out["target"].fillna("")
    if not (out["variant"] != "").any():
        out = out.drop(columns="variant")
    return out.reset_index(drop=True)
