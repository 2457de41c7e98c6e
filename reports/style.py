"""One look per method, shared by every figure: family, colour and marker.

Methods are grouped into four families, each drawn in its own band of hues, so that a reader
can tell the family of a point from its colour and the method within the family from its shade
and marker:

* ``retrain/FT``  black, greys and browns: retraining and fine-tuning on D_r (retrain is black,
  with a star, the target every other method is compared to);
* ``L2UL family`` blues and purples: the baselines and ablations of Cha et al., AAAI 2024;
* ``SalUn table`` reds, oranges and pinks: the rows of SalUn's Table 1 (Fan et al., ICLR 2024);
* ``others``      greens, teals and olives: everything else.

Within a family markers differ, and no two declared methods share a (colour, marker) pair. A
method not declared here (a plugin registered by entry point, or one added since) falls into
``others`` with a pair hashed from its name (SHA-256, so the same in every process) out of the
pairs no declared method uses. A labelled variant ``<method> (<variant>)``, such as the
``salun (tuned)`` of :data:`reports.aggregate.TUNED_SUFFIX`, keeps its method's colour and
marker, drawn hollow and, as a line, dashed. Figures split a panel into one facet per family
when it would hold more than :data:`MAX_LINES` methods (:func:`facets`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

#: family names in drawing (and facet, and legend) order
FAMILIES = ("retrain/FT", "L2UL family", "SalUn table", "others")

#: a panel holding more methods than this is split into one facet per family
MAX_LINES = 8

#: the reference method: black, drawn in every facet of a trade-off figure
REFERENCE = "retrain"


@dataclass(frozen=True)
class Style:
    """How one method is drawn: ``family`` (one of :data:`FAMILIES`), a hex ``colour`` and a
    matplotlib ``marker``; ``declared`` is False for the hashed fallback of unknown names;
    ``variant`` names a labelled variant (``tuned``), drawn hollow and dashed."""

    family: str
    colour: str
    marker: str
    declared: bool = True
    variant: str = ""

    @property
    def ls(self) -> str:
        """Line style: solid, dashed for a variant."""
        return "--" if self.variant else "-"

    def kw(self) -> dict:
        """Keyword arguments for ``plot``/``errorbar``/``Line2D``: colour, marker, its edge
        and face (white for a variant)."""
        face = "white" if self.variant else self.colour
        return {"color": self.colour, "marker": self.marker, "mec": _edge(self.colour),
                "mew": 1.0 if self.variant else 0.6, "mfc": face}  # fmt: skip


# (method, colour, marker) per family; markers are distinct within a family, colours everywhere
_DECLARED: dict[str, list[tuple[str, str, str]]] = {
    "retrain/FT": [
        ("retrain", "#000000", "*"),
        ("finetune", "#7a7a7a", "o"),
        ("nabla_tau_ft", "#8c564b", "s"),
        ("cf_k", "#c49a6c", "D"),
        ("eu_k", "#4f3a2b", "^"),
    ],
    "L2UL family": [
        ("neggrad", "#1f4e9c", "o"),
        ("random_labels", "#5aa0dc", "s"),
        ("adv_only", "#7b5cc4", "^"),
        ("mas_only", "#a9c8f0", "v"),
        ("adv_mas", "#3b1a78", "D"),
    ],
    "SalUn table": [
        ("ga", "#d62728", "o"),
        ("rl", "#ff7f0e", "s"),
        ("iu", "#7f0000", "D"),
        ("boundary_expanding", "#f4a582", "^"),
        ("boundary_shrink", "#e377c2", "v"),
        ("l1_sparse", "#b35806", "P"),
        ("salun", "#c51b7d", "X"),
    ],
    "others": [
        ("scrub", "#2ca02c", "o"),
        ("ssd", "#00582a", "s"),
        ("bad_teacher", "#8fd18a", "D"),
        ("amnesiac", "#bcbd22", "^"),
        ("unsir", "#17becf", "v"),
        ("fisher", "#00787a", "P"),
        ("mnemonic", "#7fcdbb", "X"),
        ("nabla_tau", "#5b7a1a", "h"),
    ],
}

#: method -> Style for every declared method
STYLES: dict[str, Style] = {
    name: Style(family, colour, marker)
    for family, rows in _DECLARED.items()
    for name, colour, marker in rows
}

#: colours and markers the fallback draws from: greens and olives of the "others" band that no
#: declared method uses, so an unknown method never looks like a declared one
_FALLBACK_COLOURS = ["#41ab5d", "#a1d99b", "#006d5b", "#9a9a2e", "#66c2a4", "#3e5f1d", "#1b9e77"]
_MARKERS = "osD^vPXh<>pd8H"
_FALLBACK_PAIRS = [(c, m) for m in _MARKERS for c in _FALLBACK_COLOURS]


def _edge(colour: str) -> str:
    """A darker edge for markers, so light colours stay visible on white."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#{:02x}{:02x}{:02x}".format(*(int(v * 0.55) for v in (r, g, b)))


#: ``<method> (<variant>)``, e.g. ``salun (tuned)``
_VARIANT = re.compile(r"^(?P<base>\S+) \((?P<variant>[^()]+)\)$")


def _split(name: str) -> tuple[str, str]:
    """``(method, variant)`` of a label; variant ``""`` for a plain method name."""
    m = _VARIANT.match(name)
    return (m["base"], m["variant"]) if m else (name, "")


def style(method: str) -> Style:
    """The style of ``method``: declared, a variant of a method (its method's style, hollow),
    or a deterministic fallback in ``others``."""
    name = str(method)
    if name in STYLES:
        return STYLES[name]
    base, variant = _split(name)
    if variant:
        return dataclasses.replace(style(base), variant=variant)
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    colour, marker = _FALLBACK_PAIRS[h % len(_FALLBACK_PAIRS)]
    return Style("others", colour, marker, declared=False)


def family(method: str) -> str:
    return style(method).family


def order(methods: Iterable[str]) -> list[str]:
    """Distinct ``methods`` in family order, declared order within a family, unknown names
    last (alphabetically), so legends and facets list methods alike in every figure."""
    rank = {name: i for i, name in enumerate(STYLES)}

    def key(m: str):
        base, variant = _split(m)
        return (FAMILIES.index(family(m)), rank.get(base, len(rank)), base, variant)

    return sorted(dict.fromkeys(str(m) for m in methods), key=key)


def facets(methods: Iterable[str], max_lines: int = MAX_LINES) -> list[tuple[str | None, list]]:
    """``[(title, methods)]``: one untitled facet when at most ``max_lines`` methods, else one
    per family present (a family over ``max_lines`` split into numbered parts of even size)."""
    ms = order(methods)
    if len(ms) <= max_lines:
        return [(None, ms)]
    out: list[tuple[str | None, list]] = []
    for fam in FAMILIES:
        members = [m for m in ms if family(m) == fam]
        n = -(-len(members) // max_lines)  # parts
        parts = [members[len(members) * i // n : len(members) * (i + 1) // n] for i in range(n)]
        for i, part in enumerate(parts):
            out.append((fam if len(parts) == 1 else f"{fam} ({i + 1}/{len(parts)})", part))
    return out


def legend_handles(items: Iterable, headings: bool = True, **line_kw) -> list:
    """Legend handles in :func:`order` of their methods. An item is a method name or a tuple
    ``(method, label, kw)`` (several labels per method, e.g. one per forget setting, with
    extra line keywords); with ``headings``, each family starts with an unmarked entry carrying
    the family name (made bold by :func:`legend`)."""
    from matplotlib.lines import Line2D

    entries = [(i, None, {}) if isinstance(i, str) else tuple(i) for i in items]
    rank = {m: k for k, m in enumerate(order(e[0] for e in entries))}
    entries = sorted(entries, key=lambda e: rank[str(e[0])])  # stable within a method
    handles, last = [], None
    for method, label, kw in entries:
        s = style(method)
        if headings and s.family != last:
            handles.append(Line2D([], [], ls="", marker="", label=s.family))
            last = s.family
        kws = {"ls": "", "ms": 7, **s.kw(), **line_kw, **kw}
        handles.append(Line2D([], [], label=str(method if label is None else label), **kws))
    return handles


def legend(target, items: Iterable, headings: bool = True, line_kw: dict | None = None, **kw):
    """A legend of ``items`` (see :func:`legend_handles`) on ``target`` (an Axes or a Figure),
    family headings in bold, no frame."""
    handles = legend_handles(items, headings=headings, **(line_kw or {}))
    leg = target.legend(handles=handles, **{"fontsize": 7, "frameon": False, **kw})
    for text in leg.get_texts():
        if text.get_text() in FAMILIES:
            text.set_fontweight("bold")
    return leg
