"""``python -m reports.build RESULTS_DIR [--out DIR]``: tables, figures and one self-contained
``index.html`` from the run records under RESULTS_DIR (default out: RESULTS_DIR/report).

Tables come from :mod:`reports.tables` when it is importable (else the report holds figures
only, with a one-line warning); ``reproduction.md`` (our runs beside published tables) from
:mod:`reports.reproduction` when some published table has runs; figures from
:mod:`reports.figures`; the page from :mod:`reports.html`. A missing or empty results dir is
one clear error line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: the reproduction page (``reports.reproduction``): its own section of index.html, not a table
REPRODUCTION = "reproduction.md"


def build(results_dir: Path | str, out: Path | str | None = None) -> list[Path]:
    """Render everything for ``results_dir`` into ``out``; returns the written paths with
    ``index.html`` last. Raises ``ValueError`` for a missing or empty results dir."""
    from bench.core.errors import BenchError
    from bench.protocol.plan import planned_runs
    from reports import figures, html
    from reports.aggregate import load, with_planned

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ValueError(f"results dir {results_dir} does not exist: pass the --out of a bench run")
    if not any(results_dir.rglob("records/*.jsonl")):
        raise ValueError(
            f"no run records under {results_dir} (expected records/<run_id>.jsonl): "
            "run a suite first, e.g. python -m bench.run --suite smoke --out " + str(results_dir)
        )
    out = Path(out) if out is not None else results_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    metrics, runs = load(results_dir)
    meta = html.read_meta(results_dir)
    planned, plan_problem = None, None
    try:  # the last launch's plan: its runs without a valid done record are listed in runs.md
        plan = planned_runs(results_dir)
    except BenchError as exc:
        plan_problem = str(exc)
        print(f"warning: {plan_problem}", file=sys.stderr)
    else:
        if plan is not None:
            planned = len({r["run_id"] for r in plan})
            runs = with_planned(runs, plan)

    written: list[Path] = []
    try:
        from reports.tables import write_tables
        from reports.tuning import summaries as tuning_summaries
    except ImportError as e:
        print(f"warning: no tables (reports.tables unavailable: {e})", file=sys.stderr)
    else:
        try:
            written += [
                Path(p)
                for p in write_tables(
                    metrics,
                    runs,
                    out,
                    planned=planned,
                    plan_problem=plan_problem,
                    meta=meta,
                    studies=tuning_summaries(results_dir),
                )
            ]
        except Exception as e:  # noqa: BLE001 - figures still render without tables
            print(f"warning: tables failed: {type(e).__name__}: {e}", file=sys.stderr)
    (out / REPRODUCTION).unlink(missing_ok=True)  # never a stale page from older records
    pages = []
    try:  # our runs beside published tables: its own page and section, not a table
        from reports.reproduction import write_reproduction

        page = write_reproduction(metrics, meta, out)
    except Exception as e:  # noqa: BLE001 - the rest of the report still renders
        print(f"warning: reproduction page failed: {type(e).__name__}: {e}", file=sys.stderr)
    else:
        if page is not None:
            written.append(page)
            pages.append(("Reproduction", page))

    try:  # default vs tuned (python -m bench.tune): its own page and figure
        from reports.tuning import write_tuning

        written += write_tuning(results_dir, out, metrics)
    except Exception as e:  # noqa: BLE001 - the rest of the report still renders
        print(f"warning: tuning page failed: {type(e).__name__}: {e}", file=sys.stderr)

    figs = figures.all_figures(metrics, results_dir, out / "figures")
    for _, paths in figs:
        written += paths

    tables_md = sorted(({p.resolve() for p in out.glob("*.md")} | {
        p.resolve() for p in written if p.suffix == ".md" and p.exists()
    }) - {(out / REPRODUCTION).resolve()})  # fmt: skip
    others = sorted(
        {p.resolve() for p in written if p.suffix in (".tex", ".csv", ".pdf") and p.exists()}
    )
    index = html.render(results_dir, runs, figs, tables_md, out / "index.html", meta=meta,
                        other_files=others, pages=pages)  # fmt: skip
    return [*dict.fromkeys(written), index]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m reports.build",
        description="Render tables, figures and a self-contained index.html from run records.",
    )
    ap.add_argument("results_dir", type=Path, help="a bench output root (holds records/)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (RESULTS_DIR/report)")
    args = ap.parse_args(argv)
    try:
        paths = build(args.results_dir, args.out)
    except (ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
