"""The reference code behind a method or metric, as data: repository, commit, file, and the known
deviations of the harness from it.

Registration carries it (``@register_method(..., references=(Reference(...),),
deviations=(...,))``); ``python -m bench.run --list methods -v`` prints it, and the fidelity
table of ``docs/methods.md`` is generated from it (``reports.fidelity``), so that the prose and
the registry cannot disagree. A method with no public reference code says so with
``no_reference="why"``.

A ``Reference`` names what the harness restates: ``conformance`` is the test in
``tests/conformance/`` that restates the reference at that commit, step by step on a tiny case in
float64. A docstring may claim "no deviation" only where such a test backs it
(``tests/test_fidelity_registry.py`` checks that).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench.core.errors import BenchError


@dataclass(frozen=True)
class Reference:
    """One reference implementation at one commit.

    ``repo`` is ``owner/name`` on GitHub; ``commit`` the commit the harness follows (at least 7
    hex digits); ``file`` the file(s) restated, with the function where that helps
    (``"RL.py"``, ``"src/forget_random_strategies.py: ssd_tuning"``); ``role`` what this
    reference is for when a method has several (``"table-time loop (Table 1)"``, ``"HEAD loop"``);
    ``conformance`` the test that restates it (``"tests/conformance/test_x.py"``, optionally with
    ``::test_name``), empty where none exists yet."""

    repo: str
    commit: str
    file: str
    role: str = ""
    conformance: str = ""

    def __post_init__(self) -> None:
        if self.repo.count("/") != 1 or " " in self.repo:
            raise BenchError(f"Reference repo must be owner/name (got {self.repo!r})")
        c = self.commit
        if not (7 <= len(c) <= 40 and all(ch in "0123456789abcdef" for ch in c)):
            raise BenchError(f"Reference commit must be 7-40 lowercase hex digits (got {c!r})")

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}/tree/{self.commit}"

    def short(self) -> str:
        """``owner/name@abcdef1:file``."""
        return f"{self.repo}@{self.commit[:7]}:{self.file}"


def references_of(meta: dict[str, Any]) -> tuple[Reference, ...]:
    """The :class:`Reference` records of a registry entry's metadata (``references=``)."""
    refs = meta.get("references") or ()
    if isinstance(refs, Reference):
        refs = (refs,)
    return tuple(r for r in refs if isinstance(r, Reference))


def deviations_of(meta: dict[str, Any]) -> tuple[str, ...]:
    devs = meta.get("deviations") or ()
    if isinstance(devs, str):
        devs = (devs,)
    return tuple(str(d) for d in devs)


def describe(meta: dict[str, Any], indent: str = "    ") -> list[str]:
    """The lines that ``--list methods -v`` prints under a method: its references, then its
    deviations (or why it has no reference)."""
    lines = []
    for ref in references_of(meta):
        role = f" ({ref.role})" if ref.role else ""
        test = f"  [conformance: {ref.conformance}]" if ref.conformance else ""
        lines.append(f"{indent}reference{role}: {ref.short()}{test}")
    if not references_of(meta):
        why = meta.get("no_reference") or "not recorded"
        lines.append(f"{indent}reference: none ({why})")
    devs = deviations_of(meta)
    lines.extend(f"{indent}deviation: {d}" for d in devs)
    if references_of(meta) and not devs:
        lines.append(f"{indent}deviation: none known")
    return lines


def check_references(refs: Iterable[Any]) -> tuple[Reference, ...]:
    """``references=`` as given at registration, checked: a Reference or an iterable of them."""
    if isinstance(refs, Reference):
        return (refs,)
    out = tuple(refs)
    bad = [r for r in out if not isinstance(r, Reference)]
    if bad:
        raise BenchError(
            f"references= takes bench.core.reference.Reference records (got {bad[0]!r})"
        )
    return out
