"""``reproduction.md``: a frozen comparison of our runs with published tables, generated from the
run records and kept apart from the leaderboard (which may later hold tuned numbers).

Per published table that has runs in the records (SalUn Table 1, the Mnemonic-code tables):
what was run (runs, settings, seeds, code version, hardware, precision, data, arch and
pretraining, from the records' meta lines), our numbers beside theirs with the deltas, and
every known deviation. Deviations come from ``reports/published/reproduction.json``: per
table, ``checks`` (a protocol fact the runs are compared with: dataset, arch, validation share,
pretraining epochs and schedule, precision, trials per row, SalUn's mask mode; listed when ours
differ) and ``deviations`` (known differences, each listed always or ``when`` a run matches all
its facts).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from reports import salun
from reports.html import hardware_str
from reports.tables import STD, compact, mnemonic_per_run, mnemonic_table, to_markdown

PROTOCOLS = Path(__file__).with_name("published") / "reproduction.json"
FILENAME = "reproduction.md"


def load_protocols(path: Path | str = PROTOCOLS) -> dict:
    """Per published table: title, source, protocol, checks and deviations."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _pretraining(checkpoint: str, epochs, schedule) -> str | None:
    if checkpoint:
        return f"checkpoint {checkpoint[:19]}"
    parts = [f"{epochs} epochs" if epochs else None, schedule]
    return ", ".join(p for p in parts if p) or None


def run_facts(meta: Iterable[dict]) -> dict[str, dict]:
    """run_id -> the facts of its meta line that a reproduction states (missing ones None)."""
    out: dict[str, dict] = {}
    for m in meta:
        rid = m.get("run_id")
        spec = m.get("spec") if isinstance(m.get("spec"), dict) else {}
        if not rid:
            continue
        data = spec.get("data") if isinstance(spec.get("data"), dict) else {}
        recipe = spec.get("recipe") if isinstance(spec.get("recipe"), dict) else {}
        hp = m.get("hparams_resolved") if isinstance(m.get("hparams_resolved"), dict) else None
        ckpt = spec.get("checkpoint") or ""
        epochs = None if ckpt else recipe.get("epochs")
        schedule = None if ckpt else recipe.get("schedule")
        mask = None
        if spec.get("method") == "salun" and hp is not None:
            mask = hp.get("mask_mode", "hard")  # older records: the mask was always hard
        out[rid] = {
            "suite": spec.get("suite") or None,
            "method": spec.get("method"),
            "dataset": data.get("name"),
            "arch": spec.get("arch"),
            "seed": spec.get("seed"),
            "val_fraction": data.get("val_fraction"),
            "pretrain_epochs": epochs,
            "schedule": schedule,
            "pretraining": _pretraining(ckpt, epochs, schedule),
            "precision": (m.get("runtime") or {}).get("precision"),
            "code_version": m.get("code_version"),
            "hardware": hardware_str(m.get("hardware")) if m.get("hardware") else None,
            "mask_mode": mask,
        }
    return out


def _counted(values: Iterable) -> str:
    c = Counter(str(v) for v in values if v is not None)
    if not c:
        return "unknown"
    if len(c) == 1:
        return next(iter(c))
    return "; ".join(f"{v} ({n} runs)" for v, n in c.most_common())


def _seeds(per_run: pd.DataFrame, keys: list[str]) -> str:
    seeds = sorted({int(s) for s in per_run["seed"].dropna()})
    counts = per_run.groupby(keys)["seed"].nunique()
    lo, hi = int(counts.min()), int(counts.max())
    per = f"{lo}" if lo == hi else f"{lo} to {hi}"
    return f"{', '.join(map(str, seeds))} ({per} per row)"


def _facts_of(per_run: pd.DataFrame, facts: dict[str, dict]) -> list[dict]:
    """The facts of each run of ``per_run``; method, dataset, arch and seed from its metric
    rows where the meta line lacks them."""
    out = []
    for row in per_run.drop_duplicates("run_id").itertuples(index=False):
        f = dict(facts.get(row.run_id, {}))
        for k in ("method", "dataset", "arch", "seed"):
            if f.get(k) is None and hasattr(row, k):
                f[k] = getattr(row, k)
        out.append(f)
    return out


def what_was_run(per_run: pd.DataFrame, facts: dict[str, dict], keys: list[str]) -> list[str]:
    """Bullet lines: runs, methods, settings, seeds, code version, hardware, precision, data."""
    f = _facts_of(per_run, facts)
    settings = ", ".join(sorted({str(x) for x in per_run[keys[0]]}))
    lines = [
        f"- runs: {per_run['run_id'].nunique()} ({', '.join(sorted(set(per_run['method'])))}); "
        f"settings: {settings}",
        f"- seeds: {_seeds(per_run, keys)}",
        f"- code version: {_counted(x.get('code_version') for x in f)}",
        f"- hardware: {_counted(x.get('hardware') for x in f)}",
        f"- precision: {_counted(x.get('precision') for x in f)}",
        "- data, arch, pretraining: "
        + _counted(
            ", ".join(
                str(v)
                for v in (
                    x.get("dataset"),
                    None if x.get("val_fraction") is None else f"val_fraction {x['val_fraction']}",
                    x.get("arch"),
                    None if x.get("pretraining") is None else f"pretraining {x['pretraining']}",
                )
                if v is not None
            )
            for x in f
        ),
        f"- suites: {_counted(x.get('suite') for x in f)}",
    ]
    masks = [x.get("mask_mode") for x in f if x.get("mask_mode")]
    if masks:
        lines.append(f"- SalUn mask_mode: {_counted(masks)}")
    return lines


def deviations(
    protocol: dict, per_run: pd.DataFrame, facts: dict[str, dict], keys: list[str]
) -> list[str]:
    """Bullet lines: every check whose value differs from the published one (ours with their
    run counts), then the known deviations that apply."""
    f = _facts_of(per_run, facts)
    lines = []
    for name, check in protocol.get("checks", {}).items():
        published = check.get("published", [])
        if name == "trials":
            ours = per_run.groupby(keys)["seed"].nunique().tolist()
        else:
            ours = [x.get(name) for x in f if x.get(name) is not None]
        off = [v for v in ours if v not in published]
        if off:
            got = _counted(f"{v} per row" if name == "trials" else v for v in ours)
            want = ", ".join(map(str, published))
            note = f" ({check['note']})" if check.get("note") else ""
            lines.append(f"- **{name}**: ours {got}; published {want}{note}")
    for d in protocol.get("deviations", []):
        when = d.get("when") or {}
        if not when or any(all(x.get(k) == v for k, v in when.items()) for x in f):
            lines.append(f"- {d['text']}")
    return lines or ["- none known"]


# ---------------------------------------------------------------------------------------------
# per published table: (per-run frame with run_id/method/seed and the setting key, comparison)


def _salun(metrics: pd.DataFrame, meta: list[dict]) -> tuple[pd.DataFrame, list[str], list[str]]:
    variants = salun.hparam_variants(meta)
    table = salun.salun_table(metrics, variants=variants)
    if table.empty:
        return pd.DataFrame(), [], []
    table = table[table["target"] != ""].reset_index(drop=True)  # rows with a published value
    per_run = salun.salun_per_run(metrics, variants)
    pairs = set(zip(table["forget"], table["method"]))
    per_run = per_run[[p in pairs for p in zip(per_run["forget"], per_run["method"])]]
    if per_run.empty:
        return pd.DataFrame(), [], []
    show = [c for c in table.columns if not c.startswith("seconds")]
    body = [to_markdown(compact(table[show]), digits=salun.DIGITS)]
    body += _second_retrain(table)
    return per_run, ["forget", "method"], body


def _second_retrain(table: pd.DataFrame) -> list[str]:
    """Our Retrain beside both published Retrain rows (SalUn's and the l1-sparse paper's)."""
    other = salun.load_published_salun(paper="l1_sparse")
    ours = table[table["method"] == "retrain"]
    ours = ours[ours["forget"].isin(set(other["forget"]))]
    if ours.empty:
        return []
    rows = []
    for _, r in ours.iterrows():
        row = {"forget": r["forget"], "source": "ours"}
        rows.append({**row, **{c: r.get(c) for t in salun.TERMS for c in (t, t + STD)}})
        for paper, label in (("salun", "SalUn Table 1"), ("l1_sparse", "Jia et al. 2023")):
            pub = salun.load_published_salun(paper=paper)
            pub = pub[(pub["forget"] == r["forget"]) & (pub["method"] == "retrain")]
            pub = pub.set_index("metric")
            vals = {t: pub["value"].get(t) for t in salun.TERMS}
            vals |= {t + STD: pub["std"].get(t) for t in salun.TERMS}
            rows.append({"forget": r["forget"], "source": label, **vals})
    frame = pd.DataFrame(rows)
    for c in frame.columns[2:]:
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return [
        "Retrain, ours beside both published Retrain rows (the l1-sparse paper's dense model "
        "is a second measurement of the same hard target):",
        to_markdown(frame, digits=salun.DIGITS),
    ]


def _mnemonic(metrics: pd.DataFrame, meta: list[dict]):
    table = mnemonic_table(metrics)
    if table.empty:
        return pd.DataFrame(), [], []
    table = table[table[["A_R paper", "E_F paper"]].notna().any(axis=1)]
    if table.empty:
        return pd.DataFrame(), [], []
    keys = ["dataset", "method", "forget_class"]
    per_run = mnemonic_per_run(metrics).merge(table[keys], on=keys)
    per_run = per_run.assign(
        setting=per_run["dataset"] + " class " + per_run["forget_class"].astype(str)
    )
    return per_run, ["setting", "method"], [to_markdown(compact(table))]


COMPARISONS: dict[str, Callable] = {"salun": _salun, "mnemonic": _mnemonic}


def reproduction_markdown(
    metrics: pd.DataFrame, meta: list[dict], protocols: dict | None = None
) -> str | None:
    """The page, or ``None`` when no published table has runs in the records."""
    protocols = load_protocols() if protocols is None else protocols
    if "tuned" in metrics.columns:  # tuned numbers never enter the reproduction tables
        metrics = metrics[metrics["tuned"].fillna("").astype(str) == ""]
    facts = run_facts(meta)
    sections = []
    for name, protocol in protocols.items():
        build = COMPARISONS.get(name)
        if build is None or metrics.empty:
            continue
        per_run, keys, body = build(metrics, meta)
        if per_run.empty:
            continue
        sections += [
            f"## {protocol['title']}",
            "",
            f"Source: {protocol['source']}",
            "",
            f"Published protocol: {protocol['protocol']}",
            "",
            "### What was run",
            "",
            *what_was_run(per_run, facts, keys),
            "",
            "### Ours and theirs (Δ = ours − published)",
            "",
            *[b.rstrip("\n") + "\n" for b in body],
            "### Deviations",
            "",
            *deviations(protocol, per_run, facts, keys),
            "",
        ]
    if not sections:
        return None
    head = [
        "# Reproduction",
        "",
        "Our runs beside published tables, generated from the run records by "
        "`python -m reports.build`: the protocol as run, with its deviations, never tuned "
        "numbers (those belong in the leaderboard).",
        "",
    ]
    return "\n".join(head + sections)


def write_reproduction(metrics: pd.DataFrame, meta: list[dict], out_dir: Path | str) -> Path | None:
    """Write ``reproduction.md`` into ``out_dir`` when some published table has runs."""
    text = reproduction_markdown(metrics, meta)
    if text is None:
        return None
    path = Path(out_dir) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
