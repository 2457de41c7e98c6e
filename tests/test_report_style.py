"""One colour and marker per method in every figure (:mod:`reports.style`), and family facets
when a panel would hold more than :data:`reports.style.MAX_LINES` methods."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from bench.unlearning.method import METHODS
from reports import figures, style

#: methods shipped in ``methods/`` (entry-point plugins installed in the environment excluded)
BUILTIN = [m for m in METHODS.list() if METHODS.get(m).__module__.startswith("methods.")]


@pytest.mark.parametrize("method", BUILTIN)
def test_every_builtin_method_is_declared(method):
    assert style.style(method).declared, (
        f"method {method!r} has no declared style: add it to one family of _DECLARED in "
        f"reports/style.py with a colour of that family's hues and a marker unused there"
    )


def test_styles_are_unique_and_families_as_declared():
    names = [*METHODS.list(), "my_plugin", "another_plugin"]
    pairs = [(style.style(m).colour, style.style(m).marker) for m in names]
    assert len(set(pairs)) == len(pairs)
    assert len({s.colour for s in style.STYLES.values()}) == len(style.STYLES)
    for fam in style.FAMILIES:
        markers = [s.marker for s in style.STYLES.values() if s.family == fam]
        assert len(set(markers)) == len(markers), fam
    expect = {
        "retrain/FT": {"retrain", "finetune", "nabla_tau_ft"},
        "L2UL family": {"neggrad", "random_labels", "adv_only", "mas_only", "adv_mas"},
        "SalUn table": {"ga", "rl", "iu", "boundary_expanding", "boundary_shrink", "salun"},
        "others": {"scrub", "ssd", "bad_teacher", "mnemonic", "nabla_tau"},
    }
    for fam, members in expect.items():
        assert {m for m in members if style.family(m) == fam} == members, fam
    assert style.style("retrain").colour == "#000000"
    assert style.order(["salun", "my_plugin", "neggrad", "retrain", "neggrad"]) == [
        "retrain", "neggrad", "salun", "my_plugin",
    ]  # fmt: skip


def test_unknown_method_gets_a_deterministic_fallback():
    s = style.style("my_plugin")
    assert s.family == "others" and not s.declared and s == style.style("my_plugin")
    assert (s.colour, s.marker) not in {(d.colour, d.marker) for d in style.STYLES.values()}
    code = "from reports.style import style; s = style('my_plugin'); print(s.colour, s.marker)"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()  # fmt: skip
    assert out == [s.colour, s.marker]


def test_tuned_variant_keeps_its_method_look_hollow():
    from reports.aggregate import TUNED_SUFFIX

    base, tuned = style.style("salun"), style.style("salun" + TUNED_SUFFIX)
    assert (tuned.family, tuned.colour, tuned.marker) == (base.family, base.colour, base.marker)
    assert tuned.kw()["mfc"] == "white" != base.kw()["mfc"] and tuned.ls == "--" != base.ls
    assert style.order(["salun" + TUNED_SUFFIX, "ga", "salun"]) == ["ga", "salun", "salun (tuned)"]


def test_facets_split_by_family_over_max_lines():
    assert style.facets(["retrain", "ga", "neggrad"]) == [(None, ["retrain", "neggrad", "ga"])]
    many = ["retrain", "finetune", "neggrad", "adv_mas", "ga", "rl", "salun", "scrub", "ssd"]
    assert [t for t, _ in style.facets(many)] == list(style.FAMILIES)
    plugins = [f"plugin_{i}" for i in range(10)]
    parts = style.facets(plugins)
    assert [t for t, _ in parts] == ["others (1/2)", "others (2/2)"]
    assert [len(ms) for _, ms in parts] == [5, 5]


def _frame(methods: list[str], forgets=("k=4",)) -> pd.DataFrame:
    """After-unlearning accuracies, wall time and a short trace, 2 seeds per method."""
    rows = []
    for i, m in enumerate(methods):
        for fg in forgets:
            for seed in (0, 1):
                base = {"run_id": f"{m}-{fg}-{seed}", "method": m, "seed": seed, "forget": fg,
                        "scenario": "single", "dataset": "digits", "arch": "smallcnn",
                        "request": 1}  # fmt: skip
                for split, v in [("forget", 5 * i + seed), ("test", 90 - i - seed)]:
                    rows.append({**base, "stage": "after", "split": split,
                                 "metric": "accuracy", "value": float(v)})  # fmt: skip
                rows.append({**base, "stage": "unlearn", "split": "-",
                             "metric": "wall_seconds", "value": 1.0 + i})  # fmt: skip
                for step in range(0, 12, 3):
                    rows.append({**base, "stage": "trace", "split": "forget", "step": step,
                                 "metric": "objective_unmet",
                                 "value": max(0.0, 100.0 - (i + 1) * 10.0 * step)})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def saved(monkeypatch):
    """The figures passed to ``figures._save``, by file stem, kept (with their artists) and
    not written: writing is tested in test_report_figures.py."""
    got = {}

    def keep(fig, out_dir, stem):
        got[stem] = fig
        figures._plt().close(fig)
        return []

    monkeypatch.setattr(figures, "_save", keep)
    return got


def _drawn(fig) -> dict[str, set]:
    """method -> {(colour, marker)} over the figure's method-tagged lines."""
    from matplotlib.colors import to_hex

    out: dict[str, set] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_gid():
                out.setdefault(line.get_gid(), set()).add(
                    (to_hex(line.get_color()), line.get_marker())
                )
    return out


def _panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_lines()]


def test_same_style_in_every_figure(saved, tmp_path):
    methods = ["retrain", "finetune", "neggrad", "salun", "my_plugin"]
    m = _frame(methods)
    figures.tradeoff_figure(m, tmp_path)
    figures.trace_figure(m, tmp_path)
    figures.runtime_figure(m, tmp_path)
    trade, trace = _drawn(saved["tradeoff"]), _drawn(saved["traces"])
    assert set(trade) == set(trace) == set(methods)
    for name in methods:
        s = style.style(name)
        assert trade[name] == trace[name] == {(s.colour, s.marker)}, name
    bars = saved["runtime"].axes[0].patches
    labels = [t.get_text() for t in saved["runtime"].axes[0].get_yticklabels()]
    from matplotlib.colors import to_hex

    assert [to_hex(b.get_facecolor()) for b in bars] == [style.style(x).colour for x in labels]
    assert len(_panels(saved["tradeoff"])) == 1  # 5 methods: one panel
    leg = [t.get_text() for t in saved["tradeoff"].axes[0].get_legend().get_texts()]
    assert leg == ["retrain/FT", "retrain", "finetune", "L2UL family", "neggrad",
                   "SalUn table", "salun", "others", "my_plugin"]  # fmt: skip


def test_more_than_max_lines_is_faceted_by_family(saved, tmp_path):
    methods = ["retrain", "finetune", "neggrad", "random_labels", "adv_mas", "ga", "rl",
               "salun", "scrub", "ssd"]  # fmt: skip
    assert len(methods) > style.MAX_LINES
    m = _frame(methods, forgets=("k=4", "k=8"))
    figures.tradeoff_figure(m, tmp_path)
    figures.trace_figure(m, tmp_path)
    for stem in ("tradeoff", "traces"):
        fig = saved[stem]
        panels = _panels(fig)
        assert len(panels) == 2 * len(style.FAMILIES), stem  # forget settings x families
        titles = [ax.get_title() for ax in panels if ax.get_title()]
        assert titles == list(style.FAMILIES), stem
        # no panel holds more than MAX_LINES methods, each family only in its column
        for ax in panels:
            drawn = {ln.get_gid() for ln in ax.get_lines() if ln.get_gid()}
            assert len(drawn) <= style.MAX_LINES
            assert len({style.family(x) for x in drawn} - {"retrain/FT"}) <= 1
        # one legend per family column, every method once
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert len(legends) == len(style.FAMILIES)
        listed = [t.get_text() for leg in legends for t in leg.get_texts()]
        assert set(methods) <= set(listed)
    # the trade-off repeats the retrain target in every column
    trade = [ax for ax in _panels(saved["tradeoff"])]
    assert all("retrain" in {ln.get_gid() for ln in ax.get_lines()} for ax in trade)
