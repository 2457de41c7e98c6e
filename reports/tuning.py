"""Default vs tuned (``python -m bench.tune``): the table, the best-value-vs-trials figure and
Optuna's parameter importances, from the run records and ``OUT/tune/<study>.json|journal``.

Tuned runs are marked in their records (``tuned``: the study's name); ``reports.aggregate.load``
labels their method ``<method> (tuned)`` so that every table keeps them apart from the paper
default rows, and the reproduction page leaves them out. Pure pandas builders
(:func:`tuning_table`), then renderers (:func:`tuning_markdown`, :func:`best_value_figure`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from reports import style
from reports.aggregate import AVG_GAP_TERMS, TUNED_SUFFIX, avg_gap, load

FILENAME = "tuning.md"
FIGURE = "tuning_best_value"


def summaries(results_dir: Path | str) -> list[dict]:
    """The study summaries ``bench.tune`` wrote (``OUT/tune/*.json``), sorted by name."""
    root = Path(results_dir) / "tune"
    out = []
    for path in sorted(root.glob("*.json")) if root.is_dir() else ():
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(summary, dict) and "study" in summary:  # not e.g. slurm-workers.json
            out.append(summary)
    return out


def tuning_table(metrics: pd.DataFrame, studies: list[dict]) -> pd.DataFrame:
    """Per (forget, method): Avg. Gap to retrain (and its terms UA/RA/TA/MIA-Efficacy, means
    over the evaluation seeds) at the paper defaults and tuned, the budget spent (trials,
    device-seconds), the objective, and each method's Avg. Gap rank among the tuned methods
    by default and tuned. Empty without tuned runs."""
    if metrics.empty or "method" not in metrics:
        return pd.DataFrame()
    gaps = avg_gap(metrics)
    if gaps.empty:
        return pd.DataFrame()
    gaps = gaps.assign(
        variant=gaps["method"].str.endswith(TUNED_SUFFIX).map({True: "tuned", False: "default"}),
        base=gaps["method"].str.removesuffix(TUNED_SUFFIX),
    )
    tuned_methods = set(gaps.loc[gaps["variant"] == "tuned", "base"])
    if not tuned_methods:
        return pd.DataFrame()
    gaps = gaps[gaps["base"].isin(tuned_methods)]
    final = metrics[(metrics["stage"] == "after")]
    mean = gaps.groupby(["forget", "base", "variant"])[["avg_gap", *AVG_GAP_TERMS]].mean()
    n = gaps.groupby(["forget", "base", "variant"])["run_id"].nunique()
    wide = mean["avg_gap"].unstack("variant")
    out = pd.DataFrame(
        {
            "forget": [f for f, _ in wide.index],
            "method": [m for _, m in wide.index],
            "Avg. Gap default": wide.get("default").to_numpy()
            if "default" in wide
            else float("nan"),
            "Avg. Gap tuned": wide.get("tuned").to_numpy() if "tuned" in wide else float("nan"),
        }
    )
    ta = final[(final["split"] == "test") & (final["metric"] == "accuracy")]
    ta = ta.assign(base=ta["method"].str.removesuffix(TUNED_SUFFIX))
    ta = ta.assign(variant=ta["method"].str.endswith(TUNED_SUFFIX).map({True: "t", False: "d"}))
    ta = ta.groupby(["forget", "base", "variant"])["value"].mean().unstack("variant")
    fa = final[(final["split"] == "forget") & (final["metric"] == "accuracy")]
    fa = fa.assign(base=fa["method"].str.removesuffix(TUNED_SUFFIX))
    fa = fa.assign(variant=fa["method"].str.endswith(TUNED_SUFFIX).map({True: "t", False: "d"}))
    fa = fa.groupby(["forget", "base", "variant"])["value"].mean().unstack("variant")
    for label, frame in (("UA", fa), ("TA", ta)):
        for v, name in (("d", "default"), ("t", "tuned")):
            col = frame.get(v)
            vals = [
                col.get((f, m), float("nan")) if col is not None else float("nan")
                for f, m in zip(out["forget"], out["method"])
            ]
            out[f"{label} {name}"] = [100 - x for x in vals] if label == "UA" else vals
    out["n"] = [int(n.get((f, m, "tuned"), 0)) for f, m in zip(out["forget"], out["method"])]
    by = {(s["method"], s["forget"]): s for s in studies}
    out["trials"] = [by.get((m, f), {}).get("trials") for f, m in zip(out["forget"], out["method"])]
    out["device-s"] = [
        by.get((m, f), {}).get("seconds") for f, m in zip(out["forget"], out["method"])
    ]
    out["objective"] = [
        by.get((m, f), {}).get("objective", "") for f, m in zip(out["forget"], out["method"])
    ]
    out["rank default"] = out.groupby("forget")["Avg. Gap default"].rank(method="min")
    out["rank tuned"] = out.groupby("forget")["Avg. Gap tuned"].rank(method="min")
    return out.sort_values(["forget", "Avg. Gap tuned"]).reset_index(drop=True)


def importances(results_dir: Path | str, study: str) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) of a study; ``{}`` where Optuna gives none
    (fewer than two completed trials, one parameter, no spread)."""
    try:
        import optuna

        from bench.tuning.study import load_study

        s = load_study(Path(results_dir) / "tune", study)
        return {k: float(v) for k, v in optuna.importance.get_param_importances(s).items()}
    except Exception:  # noqa: BLE001 - importances are optional decoration
        return {}


def best_curves(results_dir: Path | str, studies: list[dict]) -> pd.DataFrame:
    """Best objective value so far against trial number (and cumulative device-seconds) per
    study, from its journal: columns study, method, forget, trial, seconds, best."""
    from optuna.trial import TrialState

    from bench.tuning.study import SECONDS, load_study

    rows = []
    for s in studies:
        try:
            study = load_study(Path(results_dir) / "tune", s["study"])
        except Exception:  # noqa: BLE001 - a missing journal: no curve
            continue
        best, secs = float("inf"), 0.0
        trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
        for i, t in enumerate(sorted(trials, key=lambda t: t.number)):
            secs += float(t.user_attrs.get(SECONDS, 0.0))
            if t.state == TrialState.COMPLETE:
                best = min(best, float(t.value))
            rows.append(
                {"study": s["study"], "method": s["method"], "forget": s["forget"],
                 "trial": i + 1, "seconds": secs, "best": best}
            )  # fmt: skip
    return pd.DataFrame(rows)


def best_value_figure(curves: pd.DataFrame, out_dir: Path | str) -> list[Path]:
    """One panel per forget set: best objective value so far vs trials, one line per method
    (``tuning_best_value.png`` / ``.pdf``)."""
    if curves.empty:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    forgets = list(dict.fromkeys(curves["forget"]))
    fig, axes = plt.subplots(1, len(forgets), figsize=(5 * len(forgets), 3.6), squeeze=False)
    for ax, forget in zip(axes[0], forgets):
        sub = curves[curves["forget"] == forget]
        for method in style.order(sub["method"].unique()):
            c = sub[(sub["method"] == method) & (sub["best"] < float("inf"))]
            ax.plot(c["trial"], c["best"], ms=4, label=method, **style.style(method).kw())
        ax.set_title(f"forget {forget}")
        ax.set_xlabel("trials")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("best objective so far (lower is better)")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{FIGURE}.png", out_dir / f"{FIGURE}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=130)
    plt.close(fig)
    return paths


def tuning_markdown(results_dir: Path | str, metrics: pd.DataFrame | None = None) -> str | None:
    """The default-vs-tuned page, or ``None`` when ``results_dir`` holds no tuned runs."""
    from reports.tables import to_markdown

    studies = summaries(results_dir)
    if not studies:
        return None
    if metrics is None:
        metrics, _ = load(results_dir)
    table = tuning_table(metrics, studies)
    lines = ["# Default vs tuned hyperparameters", ""]
    objectives = sorted({s["objective"] for s in studies})
    budgets = sorted({json.dumps(s["budget"], sort_keys=True) for s in studies})
    lines += [
        f"Selection objective: {', '.join(objectives)} (the validation split, and forgetting "
        "scored on a validation forget set drawn from train apart from the evaluation forget "
        "sets (instances) or on the class's validation images (a class); the test split is "
        "never read during a search). Budget per study: "
        + "; ".join(_budget(json.loads(b)) for b in budgets)
        + ". Avg. Gap = mean |UA, RA, TA, MIA-Efficacy − retrain| on the evaluation seeds "
        "(lower is better); ranks among the tuned methods.",
        "",
    ]
    if not table.empty:
        digits = {"trials": 0, "device-s": 1, "n": 0, "rank default": 0, "rank tuned": 0}
        lines += [to_markdown(table, digits=digits), ""]
    lines += ["## Studies", ""]
    for s in studies:
        imp = importances(results_dir, s["study"])
        best = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(s["best_params"].items()))
        lines.append(
            f"- `{s['study']}`: {s['trials']} trials ({s['complete']} complete, {s['pruned']} "
            f"pruned, {s['failed']} failed), {s['seconds']:.1f} device-s; objective at the "
            f"defaults {_fmt(s['default_value'])}, best {_fmt(s['best_value'])} ({best})"
            + ("; importances: " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()) if imp else "")
        )
    return "\n".join(lines) + "\n"


def write_tuning(results_dir: Path | str, out_dir: Path | str, metrics=None) -> list[Path]:
    """``tuning.md`` and the figure into the report folder ``out_dir`` (nothing without
    studies)."""
    text = tuning_markdown(results_dir, metrics)
    if text is None:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / FILENAME
    page.write_text(text, encoding="utf-8")
    figs = best_value_figure(best_curves(results_dir, summaries(results_dir)), out_dir / "figures")
    return [page, *figs]


def _budget(b: dict) -> str:
    parts = []
    if b.get("trials") is not None:
        parts.append(f"{b['trials']} trials")
    if b.get("seconds") is not None:
        parts.append(f"{b['seconds']:g} device-seconds")
    return " and ".join(parts) or "?"


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)
