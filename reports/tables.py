"""Paper-style tables from run records: pure pandas builders, then plain-text renderers.

Builders (``l2ul_table``, ``continual_table``, ``mnemonic_table``, ``nablatau_table``,
``leaderboard``; ``salun_table`` in ``reports.salun``) take the tidy ``metrics`` frame of
``reports.aggregate.load`` and return wide frames of numbers, one row per table row: a column
``X`` holds the mean over seeds, ``X_std`` its standard deviation and ``n`` the number of runs.
Renderers (``to_markdown``, ``to_latex``, ``to_csv``) turn any such frame into text and never
compute anything but rounding and the best value of a column. ``write_tables`` writes every
table that has data, plus ``runs.md`` listing every run that did not finish. Markdown and
LaTeX are written here (no tabulate / jinja2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from reports.aggregate import AVG_GAP_TERMS, TUNED_SUFFIX, avg_gap
from reports.frames import STD, final_rows, order_rows, per_run_to_stats, pick  # noqa: F401

#: columns that identify rows (rendered left-aligned as text; dropped when constant)
ID_COLS = ["suite", "dataset", "arch", "forget", "k", "frac", "forget_class", "request", "method"]
#: decimals per column (default 1: accuracies in %)
DIGITS = {"steps": 0, "seconds": 2, "MIA_L": 2, "MIA_E": 2, "Avg. Gap": 2, "cap hits": 0}
#: the Mnemonic-code paper's published numbers (tidy: one row per table, dataset, method,
#: class, t_mix and metric)
PUBLISHED_MNEMONIC = Path(__file__).with_name("published") / "mnemonic.csv"

_ACC = {
    ("after", "forget", "accuracy"): "D_f acc",
    ("after", "retain", "accuracy"): "D_r acc",
    ("after", "test", "accuracy"): "test acc",
}


# ---------------------------------------------------------------------------------------------
# builders (numbers only)


def _forget_kind(metrics: pd.DataFrame, prefix: str) -> pd.DataFrame:
    if metrics.empty or "forget" not in metrics:
        return metrics.iloc[0:0]
    return metrics[metrics["forget"].astype(str).str.startswith(prefix)]


def _scenario(metrics: pd.DataFrame, scenario: str) -> pd.DataFrame:
    if "scenario" not in metrics:
        return metrics if scenario == "single" else metrics.iloc[0:0]
    return metrics[metrics["scenario"].fillna("single") == scenario]


def l2ul_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """L2UL's table: per (dataset, arch, k, method) of single-request instance-wise runs, the
    D_f / D_r / test accuracy after unlearning and the steps taken (mean, std over seeds), the
    95 % t-interval half-widths of D_r and test accuracy (``D_r CI95``, ``test CI95``; empty
    for a single seed), the number of runs that stopped at the epoch cap (``cap hits``) and
    ``n``."""
    from scipy import stats

    m = final_rows(_scenario(_forget_kind(metrics, "k="), "single"))
    if m.empty:
        return pd.DataFrame()
    per_run = pick(
        m, {**_ACC, ("unlearn", "-", "steps"): "steps", ("unlearn", "-", "cap_hit"): "cap hits"}
    )
    per_run["k"] = per_run["forget"].str.slice(2).astype(int)
    cols = [c for c in ["D_f acc", "D_r acc", "test acc", "steps"] if c in per_run]
    keys = ["dataset", "arch", "k", "method"]
    out = per_run_to_stats(per_run, keys, cols)
    t = stats.t.ppf(0.975, (out["n"] - 1).clip(lower=1))
    for col, name in (("D_r acc", "D_r CI95"), ("test acc", "test CI95")):
        if col in out:
            out[name] = (t * out[col + STD] / out["n"].pow(0.5)).where(out["n"] > 1)
    if "cap hits" in per_run:
        caps = per_run.groupby(keys, dropna=False)["cap hits"].sum().rename("cap hits")
        out = out.merge(caps.reset_index(), on=keys, how="left")
    return out[[c for c in out.columns if c != "n"] + ["n"]]


def continual_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Continual unlearning: per (dataset, arch, forget, method, request) the accuracy on
    everything forgotten so far (``D_f acc``), on the current request alone (``request acc``,
    when recorded), on D_r and on test, mean and std over seeds."""
    m = _scenario(metrics, "continual") if not metrics.empty else metrics
    if m.empty:
        return pd.DataFrame()
    wanted = {**_ACC, ("after", "forget_request", "accuracy"): "request acc"}
    per_run = pick(m, wanted)
    cols = [c for c in ["D_f acc", "request acc", "D_r acc", "test acc"] if c in per_run]
    keys = ["dataset", "arch", "forget", "method", "request"]
    out = per_run_to_stats(per_run, keys, cols)
    return out


def load_published(path: Path | str = PUBLISHED_MNEMONIC) -> pd.DataFrame:
    """The published numbers as a tidy frame (see ``reports/published/mnemonic.csv``)."""
    return pd.read_csv(path, dtype={"table": str})


def mnemonic_per_run(metrics: pd.DataFrame) -> pd.DataFrame:
    """A_R and E_F of every class-forgetting run (final request): A_R = mean over the remaining
    classes c of ``class_<c>_accuracy`` on test, E_F = 100 - the forgotten class's test
    accuracy (Yamashita et al. 2024)."""
    m = final_rows(_forget_kind(metrics, "class="))
    m = m[(m["stage"] == "after") & (m["split"] == "test")]
    m = m[m["metric"].astype(str).str.fullmatch(r"class_\d+_accuracy")]
    if m.empty:
        return pd.DataFrame()
    m = m.assign(
        cls=m["metric"].str.extract(r"class_(\d+)_accuracy", expand=False).astype(int),
        forget_class=m["forget"].str.slice(6).str.split(",").str[0].astype(int),
    )
    keys = ["run_id", "dataset", "arch", "method", "seed", "forget_class"]
    forgotten = m["cls"] == m["forget_class"]
    a_r = m[~forgotten].groupby(keys)["value"].mean().rename("A_R")
    e_f = (100.0 - m[forgotten].groupby(keys)["value"].mean()).rename("E_F")
    return pd.concat([a_r, e_f], axis=1).reset_index()


def mnemonic_table(
    metrics: pd.DataFrame,
    published: pd.DataFrame | None = None,
    tables: Iterable[str] = ("2", "3", "7"),
) -> pd.DataFrame:
    """Per (dataset, arch, method, forget class): A_R and E_F (mean, std, n) beside the
    published value of the same dataset, method and class (``A_R paper``, ``E_F paper``) and
    the difference ours - paper (``ΔA_R``, ``ΔE_F``); NaN where the paper has no number.
    ``tables`` picks the paper tables to compare with (Table 5 is the t_mix sweep)."""
    per_run = mnemonic_per_run(metrics)
    if per_run.empty:
        return pd.DataFrame()
    keys = ["dataset", "arch", "method", "forget_class"]
    out = per_run_to_stats(per_run, keys, ["A_R", "E_F"])
    if published is None:
        published = load_published()
    pub = published[published["table"].astype(str).isin(set(tables))]
    pub = pub.pivot_table(
        index=["dataset", "method", "forget_class"], columns="metric", values="value"
    )
    pub = pub.reindex(columns=["A_R", "E_F"]).add_suffix(" paper").reset_index()
    out = out.merge(pub, on=["dataset", "method", "forget_class"], how="left")
    for c in ["A_R", "E_F"]:
        out[f"Δ{c}"] = out[c] - out[f"{c} paper"]
    return out


def nablatau_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """∇τ's table: per (dataset, arch, forget fraction, method) D_f / D_r / test accuracy and
    the loss and entropy U-MIA on D_f vs test (MIA_L, MIA_E; 0.5 = indistinguishable)."""
    m = final_rows(_scenario(_forget_kind(metrics, "frac="), "single"))
    if m.empty:
        return pd.DataFrame()
    wanted = {
        **_ACC,
        ("after", "forget", "mia_loss"): "MIA_L",
        ("after", "forget", "mia_entropy"): "MIA_E",
    }
    per_run = pick(m, wanted)
    per_run["frac"] = per_run["forget"].str.slice(5).astype(float)
    cols = [c for c in wanted.values() if c in per_run]
    return per_run_to_stats(per_run, ["dataset", "arch", "frac", "method"], cols)


def leaderboard(
    metrics: pd.DataFrame, reference: str = "retrain", studies: list[dict] | None = None
) -> pd.DataFrame:
    """Methods x metrics per (dataset, arch, forget): UA, RA, TA and MIA-Efficacy (in %, mean
    over seeds), the gap of each to the paired ``reference`` run (``<term> gap``) and the
    Avg. Gap (mean, std, n). Empty without reference runs. With tuned runs (``bench.tune``;
    ``studies``: its summaries, ``reports.tuning.summaries``) a ``hyperparameters`` column
    says which rows are paper defaults and what each tuned row's search spent."""
    if metrics.empty:
        return pd.DataFrame()
    gaps = avg_gap(metrics, reference)
    if not gaps.empty:
        gaps = gaps[gaps["terms"] > 0]  # runs that recorded none of the four terms
    if gaps.empty:
        return pd.DataFrame()
    final = final_rows(metrics)
    final = final[final["stage"] == "after"]
    values = {}
    for term, (split, metric, scale) in AVG_GAP_TERMS.items():
        sel = final[(final["split"] == split) & (final["metric"] == metric)]
        v = sel.drop_duplicates("run_id").set_index("run_id")["value"] * scale
        values[term] = 100.0 - v if term == "UA" else v
    per_run = gaps.rename(columns={t: f"{t} gap" for t in AVG_GAP_TERMS})
    per_run = per_run.rename(columns={"avg_gap": "Avg. Gap"})
    per_run = per_run.join(pd.DataFrame(values), on="run_id")
    terms = [t for t in AVG_GAP_TERMS if per_run[t].notna().any()]
    keys = ["dataset", "arch", "forget", "method"]
    g = per_run.groupby(keys, sort=False)
    out = g[terms + [f"{t} gap" for t in terms]].mean()
    out["Avg. Gap"] = g["Avg. Gap"].mean()
    out["Avg. Gap" + STD] = g["Avg. Gap"].std()
    out["n"] = g["run_id"].nunique()
    out = out.reset_index()
    if out["method"].str.endswith(TUNED_SUFFIX).any():
        out["hyperparameters"] = [
            _tuning_label(m, f, studies or []) for m, f in zip(out["method"], out["forget"])
        ]
    return order_rows(out, keys)


def _tuning_label(method: str, forget: str, studies: list[dict]) -> str:
    """``defaults`` or ``tuned: <trials> trials, <device-s> s`` (the study's spend)."""
    if not method.endswith(TUNED_SUFFIX):
        return "defaults"
    base = method[: -len(TUNED_SUFFIX)]
    spent = [s for s in studies if s.get("method") == base and s.get("forget") == forget]
    if not spent:
        return "tuned"
    return "tuned: " + "; ".join(f"{s['trials']} trials, {s['seconds']:.0f} s" for s in spent)


#: which way is better, per column, for the tables ``write_tables`` renders
DIRECTIONS = {
    "l2ul": {"D_r acc": True, "test acc": True, "steps": False},
    "continual": {"D_r acc": True, "test acc": True},
    "mnemonic": {"A_R": True, "E_F": True},
    "nablatau": {"D_r acc": True, "test acc": True},
    "salun": {"Avg. Gap": False},
    "leaderboard": {
        **{f"{t} gap": False for t in AVG_GAP_TERMS},
        "Avg. Gap": False,
    },
}


# ---------------------------------------------------------------------------------------------
# renderers (text only)


def _digits(col: str, digits: dict[str, int] | None) -> int:
    d = {**DIGITS, **(digits or {})}
    if col in d:
        return d[col]
    base = col[: -len(" gap")] if col.endswith(" gap") else col
    return d.get(base, 1)


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _columns(df: pd.DataFrame) -> list[str]:
    """Displayed columns: every column but the ``_std`` partners of a mean column."""
    return [c for c in df.columns if not (c.endswith(STD) and c[: -len(STD)] in df.columns)]


def _best(
    df: pd.DataFrame,
    higher_is_better: dict[str, bool] | None,
    digits: dict[str, int] | None,
    group_by: list[str] | None,
    reference: str | None = None,
) -> set[tuple[int, str]]:
    """(row position, column) of the best value per column (per group), compared after
    rounding to the displayed digits so that displayed ties are all marked. Rows of the
    ``reference`` method (retraining) are not candidates."""
    marks: set[tuple[int, str]] = set()
    is_ref = (
        (df["method"] == reference).reset_index(drop=True)
        if reference is not None and "method" in df.columns
        else pd.Series(False, index=range(len(df)))
    )
    groups = [c for c in (group_by or []) if c in df.columns]
    for col, higher in (higher_is_better or {}).items():
        if col not in df.columns:
            continue
        vals = pd.to_numeric(df[col], errors="coerce").round(_digits(col, digits))
        vals = vals.reset_index(drop=True).mask(is_ref)
        keys = list(zip(*(df[g] for g in groups))) if groups else [()] * len(df)
        by_group: dict[tuple, list[int]] = {}
        for i, key in enumerate(keys):
            by_group.setdefault(key, []).append(i)
        for idx in by_group.values():
            sub = vals.loc[idx].dropna()
            if sub.empty:
                continue
            best = sub.max() if higher else sub.min()
            marks |= {(int(i), col) for i in sub.index[sub == best]}
    return marks


def _cell(df: pd.DataFrame, i: int, col: str, digits: dict[str, int] | None) -> tuple[str, str]:
    """(mean, std) as text for numeric cells ('' std when there is none); (text, None-ish)."""
    v = df[col].iloc[i]
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–", ""
    if not _is_num(v) and not hasattr(v, "dtype"):
        return str(v), ""
    if col in ID_COLS or col == "n":
        fv = float(v)
        return (str(int(fv)) if fv.is_integer() else f"{fv:g}"), ""
    d = _digits(col, digits)
    mean = f"{float(v):.{d}f}"
    std = ""
    if col + STD in df.columns:
        s = df[col + STD].iloc[i]
        if s is not None and not (isinstance(s, float) and math.isnan(s)):
            std = f"{float(s):.{d}f}"
    return mean, std


def compact(df: pd.DataFrame, cols: Iterable[str] = ("suite", "dataset", "arch")) -> pd.DataFrame:
    """Drop identifying columns that hold a single value (they belong in the caption)."""
    drop = [c for c in cols if c in df.columns and df[c].nunique(dropna=False) <= 1]
    return df.drop(columns=drop)


def to_markdown(
    df: pd.DataFrame,
    digits: dict[str, int] | None = None,
    higher_is_better: dict[str, bool] | None = None,
    group_by: list[str] | None = None,
    reference: str | None = None,
) -> str:
    """A GitHub Markdown table: ``mean ± std`` cells, numbers right-aligned, best per column
    (where ``higher_is_better`` gives a direction; ``reference`` rows excluded) in bold."""
    cols = _columns(df)
    best = _best(df, higher_is_better, digits, group_by, reference)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and c not in ID_COLS for c in cols]
    lines = [
        "| " + " | ".join(_md_escape(c) for c in cols) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    for i in range(len(df)):
        cells = []
        for c in cols:
            m, s = _cell(df, i, c, digits)
            text = f"{m} ± {s}" if s else m
            cells.append(f"**{text}**" if (i, c) in best else _md_escape(text))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "–": "--",
}


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def to_latex(
    df: pd.DataFrame,
    caption: str,
    label: str,
    higher_is_better: dict[str, bool] | None = None,
    digits: dict[str, int] | None = None,
    group_by: list[str] | None = None,
    reference: str | None = None,
) -> str:
    """A booktabs ``table`` (\\toprule / \\midrule / \\bottomrule): ``$m \\pm s$`` cells, text
    columns left- and numbers right-aligned, the best value per column (per ``group_by`` group)
    in ``\\textbf{}`` for the columns named in ``higher_is_better`` (``reference`` rows are
    never marked)."""
    cols = _columns(df)
    best = _best(df, higher_is_better, digits, group_by, reference)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and c not in ID_COLS for c in cols]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex_escape(caption)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{" + "".join("r" if n else "l" for n in numeric) + "}",
        r"\toprule",
        " & ".join(tex_escape(c) for c in cols) + r" \\",
        r"\midrule",
    ]
    for i in range(len(df)):
        cells = []
        for c, num in zip(cols, numeric):
            m, s = _cell(df, i, c, digits)
            if s:
                text = f"${m} \\pm {s}$"
            elif num and m != "–":
                text = f"${m}$" if m.startswith("-") else m
            else:
                text = tex_escape(m)
            if (i, c) in best:
                text = (
                    rf"\textbf{{\boldmath{text}}}"
                    if text.startswith("$")
                    else rf"\textbf{{{text}}}"
                )
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(df: pd.DataFrame, path: Path | str) -> Path:
    """The unformatted numbers (means and ``_std`` columns), 6 significant digits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, float_format="%.6g", lineterminator="\n")
    return path


# ---------------------------------------------------------------------------------------------
# everything at once


def runs_markdown(
    runs: pd.DataFrame, planned: int | None = None, plan_problem: str | None = None
) -> str:
    """Counts per status and a table of every run that is not ``done`` (failed, damaged,
    missing) with its error, so that no run is silently dropped from the tables. ``planned``:
    the number of runs of plan.json (whose runs without a record ``runs`` lists as missing);
    ``None`` when there is no plan to compare with (``plan_problem``: why it was unreadable)."""
    note = []
    if plan_problem:
        note = ["", f"Warning: {plan_problem}; planned runs without a record cannot be listed."]
    if runs is None or runs.empty:
        return "\n".join(["# Runs", "", "No run records.", *note]) + "\n"
    status = runs["status"].fillna("missing").astype(str)
    counts = status.value_counts().sort_index()
    lines = ["# Runs", "", f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    lines += note
    bad = runs[status != "done"].assign(status=status[status != "done"])
    if bad.empty:
        if planned is not None:
            lines += [
                "",
                f"Every planned run finished ({planned} in plan.json, all recorded done).",
            ]
        else:
            lines += [
                "",
                "Every recorded run finished (no plan.json to compare with: runs that never "
                "wrote a record cannot be listed).",
            ]
        return "\n".join(lines) + "\n"
    bad = bad.sort_values(["status", "run_id"])
    cols = [c for c in ["run_id", "method", "seed", "status", "error"] if c in bad]
    table = bad[cols].astype(object).where(bad[cols].notna(), "")
    if "seed" in table:
        table["seed"] = [str(int(s)) if _is_num(s) else str(s) for s in table["seed"]]
    lines += ["", "Runs not in the tables (status != done):", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(_md_escape(str(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"


_CAPTIONS = {
    "l2ul": "Instance-wise unlearning (L2UL protocol): accuracy (%) after unlearning and steps, "
    "mean ± std over seeds.",
    "continual": "Continual unlearning: accuracy (%) on everything forgotten so far, D_r and "
    "test after each request, mean ± std over seeds.",
    "mnemonic": "Class forgetting: A_R (mean test accuracy over the remaining classes, %) and "
    "E_F (test error on the forgotten class, %), beside the published numbers.",
    "nablatau": "Random-subset forgetting: accuracy (%) and loss / entropy U-MIA "
    "(0.5 = indistinguishable from test data), mean ± std over seeds.",
    "salun": "SalUn Table 1 protocol: UA, RA, TA, MIA-Efficacy (%), Avg. Gap to our retrain "
    "and unlearning seconds, mean ± std over seeds, beside the published CIFAR-10 / ResNet-18 "
    "numbers (Fan et al., ICLR 2024) and the deltas; target: hard = the paper's Retrain, soft = "
    "its other rows.",
    "leaderboard": "UA, RA, TA, MIA-Efficacy (%) and their gap to retraining; Avg. Gap, "
    "mean ± std over seeds.",
}
_GROUPS = {
    "l2ul": ["k"],
    "continual": ["forget", "request"],
    "mnemonic": ["forget_class"],
    "nablatau": ["frac"],
    "salun": ["forget"],
    "leaderboard": ["forget"],
}


def build_all(
    metrics: pd.DataFrame,
    published: pd.DataFrame | None = None,
    meta: list[dict] | None = None,
    studies: list[dict] | None = None,
) -> dict:
    """Every table builder's frame, by name (empty frames for absent data). ``meta``: the
    records' meta lines (``reports.html.read_meta``), which tell apart runs of one method
    under different hyperparameters in the ``salun`` table; ``studies``: the tuning studies'
    summaries, for the leaderboard's tuned rows."""
    from reports.salun import hparam_variants, salun_table

    if metrics.empty:
        return {name: pd.DataFrame() for name in _CAPTIONS}
    return {
        "l2ul": l2ul_table(metrics),
        "continual": continual_table(metrics),
        "mnemonic": mnemonic_table(metrics, published),
        "nablatau": nablatau_table(metrics),
        "salun": salun_table(metrics, variants=hparam_variants(meta or [])),
        "leaderboard": leaderboard(metrics, studies=studies),
    }


def _table_digits(name: str) -> dict[str, int] | None:
    if name == "salun":
        from reports.salun import DIGITS as SALUN_DIGITS

        return SALUN_DIGITS
    return None


def write_tables(
    metrics: pd.DataFrame,
    runs: pd.DataFrame,
    out_dir: Path | str,
    published: pd.DataFrame | None = None,
    planned: int | None = None,
    plan_problem: str | None = None,
    meta: list[dict] | None = None,
    studies: list[dict] | None = None,
) -> list[Path]:
    """Write ``<table>.md``, ``.tex`` and ``.csv`` for every table with data, and ``runs.md``
    (failed, damaged and missing runs with their errors; ``planned``, ``plan_problem``: see
    ``runs_markdown``; ``meta``, ``studies``: see ``build_all``). Returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, df in build_all(metrics, published, meta, studies).items():
        if df.empty:
            continue
        shown = compact(df)
        opts = dict(higher_is_better=DIRECTIONS[name], group_by=_GROUPS[name], reference="retrain")
        opts["digits"] = _table_digits(name)
        md, tex = out / f"{name}.md", out / f"{name}.tex"
        md.write_text(to_markdown(shown, **opts))
        tex.write_text(to_latex(shown, _CAPTIONS[name], f"tab:{name}", **opts))
        written += [md, tex, to_csv(df, out / f"{name}.csv")]
    path = out / "runs.md"
    path.write_text(runs_markdown(runs, planned, plan_problem))
    written.append(path)
    return written
