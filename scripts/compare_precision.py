"""Compare two result folders of the same suite run in two precisions (or on two devices).

    python scripts/compare_precision.py FP32_OUT BF16_OUT [--max-acc-diff 3] [--max-step-diff 0.03]

Pairs runs by (method, dataset, arch, forget set, seed), prints test accuracy, D_f accuracy
and optimizer steps side by side, and exits 1 when a pair's test accuracy differs by more
than ``--max-acc-diff`` points, its steps by more than ``--max-step-diff`` (relative, at least
one step), or a run is missing on one side. Used by ``scripts/gpu-check.sh`` for bf16 vs fp32
on CUDA, and for the CPU check of docs/performance.md (``--precision bf16 --device cpu``).
"""

from __future__ import annotations

import argparse
import sys

from reports.aggregate import load

KEYS = ["method", "dataset", "arch", "forget", "seed"]
WANTED = {
    ("after", "test", "accuracy"): "test",
    ("after", "forget", "accuracy"): "D_f",
    ("unlearn", "-", "steps"): "steps",
}


def per_run(out: str):
    metrics, _ = load(out)
    if metrics.empty:
        raise SystemExit(f"error: no finished runs under {out}")
    m = metrics[metrics["request"] == metrics.groupby("run_id")["request"].transform("max")]
    sel = [(a, b, c) in WANTED for a, b, c in zip(m["stage"], m["split"], m["metric"])]
    m = m[sel].assign(
        column=[
            WANTED[(a, b, c)] for a, b, c in zip(m[sel]["stage"], m[sel]["split"], m[sel]["metric"])
        ]
    )
    return m.pivot_table(index=KEYS, columns="column", values="value", aggfunc="first")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--max-acc-diff", type=float, default=3.0)
    p.add_argument("--max-step-diff", type=float, default=0.03)
    args = p.parse_args(argv)
    a, b = per_run(args.a), per_run(args.b)
    joined = a.add_suffix(" A").join(b.add_suffix(" B"), how="outer")
    bad = 0
    head = "seed  test A  test B   Δtest   D_f A   D_f B  steps A  steps B"
    print(f"{'method':14s} {'forget':10s} {head}")
    for key, row in joined.iterrows():
        method, _, _, forget, seed = key
        ta, tb = row.get("test A"), row.get("test B")
        sa, sb = row.get("steps A"), row.get("steps B")
        missing = any(v != v for v in (ta, tb))  # NaN: missing on one side
        dt = (tb - ta) if not missing else float("nan")
        step_tol = max(1.0, args.max_step_diff * max(sa, sb)) if sa == sa and sb == sb else 0
        off = missing or abs(dt) > args.max_acc_diff or (sa == sa and abs(sb - sa) > step_tol)
        bad += off
        print(
            f"{method:14s} {forget:10s} {int(seed):4d} {ta:7.2f} {tb:7.2f} {dt:+7.2f} "
            f"{row.get('D_f A', float('nan')):7.2f} {row.get('D_f B', float('nan')):7.2f} "
            f"{sa:8.0f} {sb:8.0f}" + ("   <-- differs" if off else "")
        )
    n = len(joined)
    print(
        f"{n - bad} of {n} paired runs within {args.max_acc_diff:g} points of test accuracy "
        f"and {args.max_step_diff:.0%} of steps"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
