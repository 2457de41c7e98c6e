"""Figures (PNG + PDF) from the tidy metrics frame of :func:`reports.aggregate.load`.

Every function takes the metrics frame (and, for artifact figures, the results dir), writes its
figures under ``out_dir`` and returns the written paths, or ``[]`` when its data are absent, so
a report over any suite renders whatever that suite recorded:

* :func:`confusion_figures` pre- vs post-unlearning confusion on D_f (L2UL Fig. 2);
* :func:`tsne_figures` t-SNE of D_f / D_r embeddings before and after (L2UL Fig. 3);
* :func:`cka_figure` layer-wise CKA heatmap, methods x layers, D_f and D_r (L2UL Fig. 4);
* :func:`tradeoff_figure` D_f accuracy vs test accuracy after unlearning;
* :func:`runtime_figure` unlearning seconds per method (log scale) and RTE vs retrain;
* :func:`continual_figure` accuracy over continual unlearning requests.

Rendering only: numbers come from :mod:`reports.aggregate`. Each method has one colour and
marker in every figure, and a panel that would hold more than eight methods is split into one
column per family (:mod:`reports.style`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from reports import style

#: the after-unlearning splits plotted, with their paper names
SPLIT_NAMES = {"forget": "D_f", "retain": "D_r", "test": "test", "forget_request": "D_f (request)"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(name)).strip("_") or "x"


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    plt = _plt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = out_dir / f"{stem}.{ext}"
        fig.savefig(p, dpi=120 if ext == "png" else None, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths


def final_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows of each run's last request (the state a single-request table reports)."""
    last = metrics["request"] == metrics.groupby("run_id")["request"].transform("max")
    return metrics[last]


def _first_seed_runs(metrics: pd.DataFrame) -> pd.DataFrame:
    """One run per (dataset, arch, method, forget, scenario): the one with the lowest seed."""
    keys = [k for k in ["dataset", "arch", "method", "forget", "scenario"] if k in metrics]
    runs = metrics.drop_duplicates("run_id")[keys + ["run_id", "seed"]]
    return runs.sort_values(keys + ["seed", "run_id"]).drop_duplicates(keys)


def _run_label(row: pd.Series, vary: list[str]) -> str:
    parts = [str(row["method"])] + [str(row[k]) for k in vary]
    return " | ".join(parts)


def _varying(frame: pd.DataFrame, keys: list[str]) -> list[str]:
    return [k for k in keys if k in frame and frame[k].nunique(dropna=False) > 1]


def _artifact(results_dir: Path, run_id: str, name: str) -> Path | None:
    """``artifacts/<run_id>/<name>.npz`` (request 1), or the last request's ``<name>-rN.npz``."""
    folder = Path(results_dir) / "artifacts" / str(run_id)
    if not folder.is_dir():
        return None
    found = sorted(
        folder.glob(f"{name}-r*.npz"),
        key=lambda p: int(m.group(1)) if (m := re.search(r"-r(\d+)$", p.stem)) else 0,
    )
    if found:
        return found[-1]
    plain = folder / f"{name}.npz"
    return plain if plain.is_file() else None


# ---------------------------------------------------------------------------------------------
# L2UL Fig. 2: confusion


def confusion_figures(metrics: pd.DataFrame, results_dir: Path | str, out_dir: Path | str):
    """One heatmap per method (first seed) of ``artifacts/<run_id>/confusion.npz``: rows are
    the original model's predictions on D_f, columns the unlearned model's."""
    if metrics.empty:
        return []
    plt = _plt()
    runs = _first_seed_runs(metrics)
    vary = _varying(runs, ["dataset", "arch", "forget", "scenario"])
    paths: list[Path] = []
    for _, row in runs.iterrows():
        f = _artifact(Path(results_dir), row["run_id"], "confusion")
        if f is None:
            continue
        with np.load(f) as z:
            if "matrix" not in z:
                continue
            m = np.asarray(z["matrix"], dtype=float)
        n = m.shape[0]
        fig, ax = plt.subplots(figsize=(0.45 * n + 2.2, 0.45 * n + 1.6))
        im = ax.imshow(m, cmap="Blues", vmin=0)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if m[i, j]:
                        dark = m[i, j] > 0.6 * m.max()
                        ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if dark else "black")  # fmt: skip
            ax.set_xticks(range(n))
            ax.set_yticks(range(n))
        ax.set_xlabel("prediction after unlearning")
        ax.set_ylabel("prediction before unlearning")
        label = _run_label(row, vary)
        ax.set_title(f"D_f confusion: {label} (seed {row['seed']})", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        stem = "confusion_" + _safe("_".join([str(row["method"])] + [str(row[k]) for k in vary]))
        paths += _save(fig, Path(out_dir), stem)
    return paths


# ---------------------------------------------------------------------------------------------
# L2UL Fig. 3: t-SNE


def _tsne(x: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = len(x)
    if n < 4:
        return np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - x.shape[1]))))
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    return TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto"
    ).fit_transform(x)


def tsne_figures(
    metrics: pd.DataFrame,
    results_dir: Path | str,
    out_dir: Path | str,
    max_retain: int = 300,
    seed: int = 0,
):
    """Per method (first seed), t-SNE of the penultimate features of D_f and a D_r sample,
    original model (left) vs unlearned model (right), from ``embeddings.npz``. Before and after
    are embedded jointly so both panels share coordinates; colour = class, D_f drawn as
    crosses."""
    if metrics.empty:
        return []
    plt = _plt()
    runs = _first_seed_runs(metrics)
    vary = _varying(runs, ["dataset", "arch", "forget", "scenario"])
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    for _, row in runs.iterrows():
        f = _artifact(Path(results_dir), row["run_id"], "embeddings")
        if f is None:
            continue
        with np.load(f) as z:
            need = ["forget_original", "forget_unlearned", "forget_labels"]
            if any(k not in z for k in need):
                continue
            parts = {k: np.asarray(z[k]) for k in z.files}
        fo, fu, fl = (parts[k] for k in need)
        ro = parts.get("retain_original", np.zeros((0, fo.shape[1])))
        ru = parts.get("retain_unlearned", np.zeros((0, fo.shape[1])))
        rl = parts.get("retain_labels", np.zeros(0, dtype=int))
        if len(ro) > max_retain:
            keep = np.sort(rng.choice(len(ro), max_retain, replace=False))
            ro, ru, rl = ro[keep], ru[keep], rl[keep]
        nf, nr = len(fo), len(ro)
        if nf + nr == 0:
            continue
        x = np.concatenate([fo, ro, fu, ru]).reshape(2 * (nf + nr), -1).astype(np.float64)
        y = _tsne(x, seed)
        before, after = y[: nf + nr], y[nf + nr :]
        labels = np.concatenate([fl, rl]).astype(int)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
        for ax, pts, title in [(axes[0], before, "original"), (axes[1], after, "unlearned")]:
            sc = ax.scatter(pts[nf:, 0], pts[nf:, 1], c=labels[nf:], cmap="tab10", s=8,
                            alpha=0.5, vmin=0, vmax=9, label="D_r")  # fmt: skip
            ax.scatter(pts[:nf, 0], pts[:nf, 1], c=labels[:nf], cmap="tab10", s=40,
                       marker="X", edgecolors="black", linewidths=0.6, vmin=0, vmax=9,
                       label="D_f")  # fmt: skip
            ax.set_title(f"{title} model", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
        leg = axes[1].legend(loc="best", fontsize=8)
        for h in leg.legend_handles:
            h.set_facecolor("lightgrey")
        fig.colorbar(sc, ax=axes, fraction=0.03, pad=0.02, label="class")
        fig.suptitle(f"t-SNE of embeddings: {_run_label(row, vary)} (seed {row['seed']})")
        stem = "tsne_" + _safe("_".join([str(row["method"])] + [str(row[k]) for k in vary]))
        paths += _save(fig, Path(out_dir), stem)
    return paths


# ---------------------------------------------------------------------------------------------
# L2UL Fig. 4: layer-wise CKA


def cka_figure(metrics: pd.DataFrame, out_dir: Path | str):
    """Heatmap of mean CKA (over seeds) between original and unlearned features, methods x
    layers, one panel each for D_f and D_r; layers in recorded (network) order."""
    if metrics.empty:
        return []
    rows = metrics[metrics["metric"].str.startswith("cka_") & (metrics["stage"] == "after")]
    rows = final_rows(metrics).loc[lambda d: d.index.isin(rows.index)]
    rows = rows[rows["split"].isin(["forget", "retain"])]
    if rows.empty:
        return []
    plt = _plt()
    layers = list(dict.fromkeys(rows["metric"]))
    vary = _varying(rows, ["dataset", "arch", "forget", "scenario"])
    rows = rows.assign(label=[_run_label(r, vary) for _, r in rows.iterrows()])
    labels = list(dict.fromkeys(rows["label"]))
    splits = [s for s in ["forget", "retain"] if s in set(rows["split"])]
    fig, axes = plt.subplots(
        1, len(splits), figsize=(1.1 * len(layers) * len(splits) + 4, 0.4 * len(labels) + 1.8),
        squeeze=False,
    )  # fmt: skip
    lo = float(min(rows["value"].min(), 0.99))
    for ax, split in zip(axes[0], splits):
        mean = (
            rows[rows["split"] == split]
            .groupby(["label", "metric"])["value"]
            .mean()
            .unstack()
            .reindex(index=labels, columns=layers)
        )
        im = ax.imshow(mean.to_numpy(dtype=float), cmap="viridis", vmin=lo, vmax=1.0,
                       aspect="auto")  # fmt: skip
        for i in range(mean.shape[0]):
            for j in range(mean.shape[1]):
                v = mean.iat[i, j]
                if pd.notna(v):
                    ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7,
                            color="white" if v < (lo + 1) / 2 else "black")  # fmt: skip
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels([c.removeprefix("cka_") for c in layers], rotation=45, ha="right")
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels)
        ax.set_title(f"CKA(original, unlearned) on {SPLIT_NAMES[split]}", fontsize=10)
        ax.set_xlabel("layer")
    fig.colorbar(im, ax=list(axes[0]), fraction=0.03, pad=0.02)
    return _save(fig, Path(out_dir), "cka_layers")


# ---------------------------------------------------------------------------------------------
# trade-off, runtime, continual


def _grid(rows: list, groups: list[tuple[str | None, list]], panel=(3.8, 3.1)):
    """Axes for ``rows`` (forget settings, splits, ...) x facet ``groups`` (see
    :func:`reports.style.facets`): faceted, one row per row value and one column per family;
    unfaceted, the row values side by side in one row. Returns ``(fig, cells)`` with
    ``cells[(row_index, group_index)] = ax``; top panels are titled by family, and the row
    value is the title (unfaceted) or heads the row's first y label (faceted)."""
    plt = _plt()
    faceted = len(groups) > 1
    nr, nc = (len(rows), len(groups)) if faceted else (1, len(rows))
    size = (panel[0] * nc + 2.2, panel[1] * nr + 0.6)
    fig, axes = plt.subplots(nr, nc, figsize=size, squeeze=False, sharex=True, sharey=True)
    cells = {}
    for i, row in enumerate(rows):
        for j, (title, _) in enumerate(groups):
            ax = axes[i][j] if faceted else axes[0][i]
            cells[(i, j)] = ax
            if not faceted and row is not None:
                ax.set_title(str(row), fontsize=10)
            elif i == 0:
                ax.set_title(title, fontsize=10, fontweight="bold")
    return fig, cells


def _grid_labels(cells: dict, rows: list, faceted: bool, xlabel: str, ylabel: str) -> None:
    """Axis labels on the outer panels only; faceted, each row's y label names its row."""
    nr = max(i for i, _ in cells) + 1
    for (i, j), ax in cells.items():
        ax.grid(alpha=0.3)
        if not faceted or i == nr - 1:
            ax.set_xlabel(xlabel)
        if j == 0 and (faceted or i == 0):
            head = f"{rows[i]}\n" if faceted and len(rows) > 1 and rows[i] is not None else ""
            ax.set_ylabel(head + ylabel)


def _grid_legends(cells: dict, groups: list, items_of, **line_kw) -> None:
    """Unfaceted: one legend right of the last panel, family headings. Faceted: one legend
    under each family's column (below its x label)."""
    if len(groups) == 1:
        ax = cells[max(cells)]
        style.legend(ax, items_of(groups[0][1]), loc="center left", bbox_to_anchor=(1.02, 0.5),
                     line_kw=line_kw)  # fmt: skip
        return
    from matplotlib.transforms import ScaledTranslation

    nr = max(i for i, _ in cells) + 1
    for j, (_, members) in enumerate(groups):
        items, ax = items_of(members), cells[(nr - 1, j)]
        below = ax.transAxes + ScaledTranslation(0, -0.6, ax.figure.dpi_scale_trans)  # inches
        style.legend(ax, items, headings=False, loc="upper center", bbox_to_anchor=(0.5, 0),
                     bbox_transform=below, ncol=2 if len(items) > 3 else 1,
                     line_kw=line_kw)  # fmt: skip


def _method_facets(methods: list[str], reference: bool) -> list[tuple[str | None, list]]:
    """Facets of ``methods``; with ``reference`` (retrain drawn in every panel) a facet that
    would hold only the reference is dropped."""
    groups = style.facets(methods)
    if reference and len(groups) > 1:
        kept = [g for g in groups if set(g[1]) - {style.REFERENCE}]
        groups = kept or groups
    return groups


def tradeoff_figure(metrics: pd.DataFrame, out_dir: Path | str):
    """Scatter of D_f accuracy (x) vs test accuracy (y) after unlearning, one point per method
    (mean over seeds, error bars = std), one panel per forget setting; methods keep their
    :mod:`reports.style` colour and marker. Over :data:`reports.style.MAX_LINES` methods, one
    column of panels per family, each with the retrain target and, in grey, the other
    families' points for context."""
    if metrics.empty:
        return []
    fin = final_rows(metrics)
    fin = fin[(fin["stage"] == "after") & (fin["metric"] == "accuracy")]
    fin = fin[fin["split"].isin(["forget", "test"])]
    if fin.empty:
        return []
    keys = [k for k in ["dataset", "arch", "method", "forget", "scenario"] if k in fin]
    # the split "forget" would clash with the key column "forget": rename the splits
    fin = fin.assign(split=fin["split"].map({"forget": "D_f", "test": "test"}))
    wide = fin.pivot_table(index=keys + ["seed"], columns="split", values="value", aggfunc="mean")
    if not {"D_f", "test"} <= set(wide.columns):
        return []
    wide = wide.dropna(subset=["D_f", "test"])
    if wide.empty:
        return []
    st = wide.groupby(keys).agg(["mean", "std"]).reset_index()
    st.columns = [a if not b else f"{a}_{b}" for a, b in st.columns]
    vary = _varying(wide.reset_index(), ["dataset", "arch", "scenario"])
    methods = style.order(st["method"])
    forgets = list(dict.fromkeys(st["forget"])) if "forget" in st else [None]
    groups = _method_facets(methods, reference=True)
    faceted = len(groups) > 1
    fig, cells = _grid(forgets, groups)
    for (i, j), ax in cells.items():
        sub = st if forgets == [None] else st[st["forget"] == forgets[i]]
        members = set(groups[j][1]) | {style.REFERENCE}
        for _, r in sub.iterrows():
            m, x, y = r["method"], r["D_f_mean"], r["test_mean"]
            if m not in members:  # another family's point: grey context, behind
                ax.plot(x, y, "o", color="#d0d0d0", ms=4, zorder=1)
                continue
            s = style.style(m)
            bars = ax.errorbar(
                x, y, xerr=np.nan_to_num(r["D_f_std"]), yerr=np.nan_to_num(r["test_std"]),
                ls="", ms=11 if m == style.REFERENCE else 7, capsize=2, elinewidth=0.8,
                ecolor=s.colour, zorder=4 if m == style.REFERENCE else 3, **s.kw(),
            )  # fmt: skip
            bars[0].set_gid(m)  # the method of each point, for tests and SVG readers
    _grid_labels(cells, forgets, faceted, "D_f accuracy (%, lower = forgotten)",
                 "test accuracy (%)")  # fmt: skip
    _grid_legends(cells, groups, lambda ms: ms if style.REFERENCE in ms or not faceted
                  else [style.REFERENCE] + ms)  # fmt: skip
    title = "forgetting vs utility after unlearning"
    if vary:
        title += " (" + ", ".join(vary) + " pooled)"
    if faceted:
        title += "; one column per family, retrain in every panel, other families in grey"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, Path(out_dir), "tradeoff")


def runtime_figure(metrics: pd.DataFrame, out_dir: Path | str):
    """Bars of unlearning wall seconds per method (mean ± std over runs, log scale) and, when
    ``retrain`` runs exist, a second panel with RTE = T_retrain / T_method (log scale); bars
    in each method's :mod:`reports.style` colour."""
    from reports.aggregate import rte

    if metrics.empty:
        return []
    r = rte(metrics)
    if r.empty or r["seconds"].dropna().empty:
        return []
    plt = _plt()
    secs = r.groupby("method")["seconds"].agg(["mean", "std"]).sort_values("mean")
    has_rte = r["rte"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_rte else 1, figsize=(12 if has_rte else 7, 0.3 *
                             len(secs) + 1.8), squeeze=False)  # fmt: skip

    def colours(names):
        return [style.style(m).colour for m in names]

    ax = axes[0][0]
    y = np.arange(len(secs))
    ax.barh(y, secs["mean"], xerr=secs["std"].fillna(0), color=colours(secs.index),
            edgecolor="black", linewidth=0.4, capsize=3, ecolor="#777777")  # fmt: skip
    ax.set_yticks(y)
    ax.set_yticklabels(secs.index)
    ax.set_xscale("log")
    ax.set_xlabel("unlearning wall time (s, log)")
    ax.set_title("runtime")
    ax.grid(axis="x", alpha=0.3, which="both")
    ax.set_axisbelow(True)
    if has_rte:
        ax2 = axes[0][1]
        e = r.dropna(subset=["rte"]).groupby("method")["rte"].mean()
        e = e.reindex([m for m in secs.index if m in e.index])
        y2 = np.arange(len(e))
        ax2.barh(y2, e.to_numpy(), color=colours(e.index), edgecolor="black", linewidth=0.4)
        ax2.axvline(1.0, color="black", lw=0.8, ls="--")
        ax2.set_yticks(y2)
        ax2.set_yticklabels(e.index)
        ax2.set_xscale("log")
        ax2.set_xlabel("RTE = T_retrain / T_method (log; > 1 is faster than retraining)")
        ax2.set_title("run-time efficiency")
        ax2.grid(axis="x", alpha=0.3, which="both")
        ax2.set_axisbelow(True)
    fig.tight_layout()
    return _save(fig, Path(out_dir), "runtime")


#: line styles telling apart the runs of one method that differ in another key (forget, ...)
_DASHES = ["-", "--", ":", "-."]


def continual_figure(metrics: pd.DataFrame, out_dir: Path | str):
    """Accuracy after each request of ``scenario == "continual"`` runs, mean over seeds, one
    line per method (and forget setting, by line style), one panel per split (D_f so far,
    D_r, test, current request); over :data:`reports.style.MAX_LINES` methods, one column
    per family and one row per split."""
    from matplotlib.ticker import MaxNLocator

    if metrics.empty or "scenario" not in metrics:
        return []
    c = metrics[(metrics["scenario"] == "continual") & (metrics["metric"] == "accuracy")]
    c = c[c["stage"].isin(["before", "after"]) & c["split"].isin(list(SPLIT_NAMES))]
    if c.empty or c["request"].nunique() < 2:
        return []
    splits = [s for s in SPLIT_NAMES if s in set(c["split"])]
    vary = _varying(c, ["dataset", "arch", "forget"])
    c = c.assign(label=[_run_label(r, vary) for _, r in c.iterrows()])
    variants = list(dict.fromkeys(c["label"].str.partition(" | ")[2]))
    dash = {v: _DASHES[i % len(_DASHES)] for i, v in enumerate(variants)}
    lines = c.drop_duplicates("label")[["label", "method"]].to_numpy().tolist()
    groups = style.facets(c["method"])
    faceted = len(groups) > 1
    fig, cells = _grid([SPLIT_NAMES[s] for s in splits], groups, panel=(3.8, 2.9))
    for (i, j), ax in cells.items():
        g = c[c["split"] == splits[i]].groupby(["label", "request"])["value"]
        g = g.agg(["mean", "std"])
        for lab, m in lines:
            if m not in groups[j][1] or lab not in g.index.get_level_values(0):
                continue
            s = g.loc[lab]
            bars = ax.errorbar(s.index, s["mean"], yerr=s["std"].fillna(0), ms=5, capsize=2,
                               ls=dash[lab.partition(" | ")[2]], lw=1.2, label=lab,
                               **style.style(m).kw())  # fmt: skip
            bars[0].set_gid(m)
        if not faceted:
            ax.set_title(f"{SPLIT_NAMES[splits[i]]} accuracy", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _grid_labels(cells, [SPLIT_NAMES[s] for s in splits], faceted, "request (0 = before)",
                 "accuracy (%)")  # fmt: skip
    _grid_legends(cells, groups, lambda ms: [(m, lab, {"ls": dash[lab.partition(" | ")[2]]})
                  for lab, m in lines if m in ms], lw=1.2)  # fmt: skip
    fig.tight_layout()
    return _save(fig, Path(out_dir), "continual")


#: traced quantities drawn by :func:`trace_figure`: (metric, split) -> (y label, file stem)
TRACES = {
    ("objective_unmet", "forget"): ("D_f not yet forgotten (%)", "traces"),
    ("accuracy", "forget"): ("D_f accuracy (%)", "traces_forget_accuracy"),
    ("accuracy", "test"): ("test accuracy (%)", "traces_test_accuracy"),
    ("mia_auc", "forget"): ("loss-MIA AUC, D_f vs test", "traces_mia"),
}


def trace_figure(
    metrics: pd.DataFrame,
    out_dir: Path | str,
    metric: str = "objective_unmet",
    split: str = "forget",
):
    """A traced quantity against optimizer steps during unlearning (``stage: "trace"`` rows,
    see ``bench.protocol.progress``): one thin line per run in its method's :mod:`reports.style`
    colour, with the method's marker every few steps, one panel per forget setting (first
    request); over :data:`reports.style.MAX_LINES` methods, one column per family and one row
    per forget setting. Steps on a log scale. The default, ``objective_unmet``, is the share
    of D_f not yet meeting the stop rule (for misclassification, the D_f accuracy)."""
    if metrics.empty or "step" not in metrics:
        return []
    ylabel, stem = TRACES.get((metric, split), (f"{metric} ({split})", f"traces_{metric}_{split}"))
    t = metrics[
        (metrics["stage"] == "trace") & (metrics["metric"] == metric) & (metrics["split"] == split)
    ]
    t = t[t["request"] == 1]
    if t.empty:
        return []
    forgets = sorted(set(t["forget"]), key=str)
    groups = style.facets(t["method"])
    fig, cells = _grid(forgets, groups)
    for (i, j), ax in cells.items():
        for m in groups[j][1]:
            runs = t[(t["forget"] == forgets[i]) & (t["method"] == m)]
            for _, r in runs.groupby("run_id"):
                r = r.sort_values("step")
                ax.plot(r["step"] + 1, r["value"], lw=1, alpha=0.85, ms=4, markevery=0.12,
                        gid=m, ls=style.style(m).ls, **style.style(m).kw())  # fmt: skip
        if metric == "mia_auc":
            ax.axhline(0.5, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log")
    _grid_labels(cells, forgets, len(groups) > 1, "optimizer steps + 1", ylabel)
    _grid_legends(cells, groups, lambda ms: [(m, m, {"ls": style.style(m).ls}) for m in ms],
                  lw=1)  # fmt: skip
    fig.tight_layout()
    return _save(fig, Path(out_dir), stem)


def _traces(metrics: pd.DataFrame, out_dir: Path) -> list[Path]:
    return [p for metric, split in TRACES for p in trace_figure(metrics, out_dir, metric, split)]


#: every figure, in report order: (title, function(metrics, results_dir, out_dir) -> paths)
FIGURES: list[tuple[str, Callable[..., list[Path]]]] = [
    ("Forgetting vs utility", lambda m, r, o: tradeoff_figure(m, o)),
    ("Runtime and RTE", lambda m, r, o: runtime_figure(m, o)),
    ("Forgetting, accuracy and MIA over unlearning progress", lambda m, r, o: _traces(m, o)),
    ("Continual requests", lambda m, r, o: continual_figure(m, o)),
    ("Layer-wise CKA (L2UL Fig. 4)", lambda m, r, o: cka_figure(m, o)),
    ("Confusion on D_f before vs after (L2UL Fig. 2)", confusion_figures),
    ("t-SNE of embeddings (L2UL Fig. 3)", tsne_figures),
]


def all_figures(
    metrics: pd.DataFrame, results_dir: Path | str, out_dir: Path | str
) -> list[tuple[str, list[Path]]]:
    """Every figure whose data are present: ``[(section title, paths)]``; a figure that raises
    is reported as a warning on stderr and skipped, so one bad artifact never sinks a report."""
    import sys

    done = []
    for title, fn in FIGURES:
        try:
            paths = fn(metrics, Path(results_dir), Path(out_dir))
        except Exception as e:  # noqa: BLE001 - a report renders what it can
            print(f"warning: figure '{title}' failed: {type(e).__name__}: {e}", file=sys.stderr)
            _plt().close("all")
            continue
        if paths:
            done.append((title, paths))
    return done
