"""The reference code as data (``bench.core.reference``): every built-in method names its reference
at
a commit, or says why it has none; every named conformance test exists; no docstring claims
"no deviation" without one; ``--list methods -v`` prints it; and the fidelity table of
docs/methods.md is the registry's (``reports.fidelity``)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core.errors import BenchError
from bench.core.reference import Reference, describe, references_of
from bench.unlearning.method import METHODS, register_method
from reports import fidelity

ROOT = Path(__file__).resolve().parents[1]


def builtin_methods() -> list[str]:
    return [n for n in METHODS.list() if METHODS.entry(n).obj.__module__.startswith("methods.")]


def test_reference_records_are_checked():
    with pytest.raises(BenchError, match="owner/name"):
        Reference("not-a-repo", "abcdef1", "x.py")
    with pytest.raises(BenchError, match="hex"):
        Reference("a/b", "HEAD", "x.py")
    ref = Reference("a/b", "abcdef1234", "x.py", role="table-time loop")
    assert ref.short() == "a/b@abcdef1:x.py"
    assert ref.url == "https://github.com/a/b/tree/abcdef1234"
    with pytest.raises(BenchError, match="Reference"):
        register_method("bogus_refs", references=("https://example.org",))(lambda *a: None)
    assert "bogus_refs" not in METHODS.list()


@pytest.mark.parametrize("name", builtin_methods())
def test_every_method_names_its_reference_or_why_it_has_none(name):
    meta = METHODS.entry(name).meta
    refs = references_of(meta)
    assert refs or meta.get("no_reference"), (
        f"{name}: register references=(Reference(...),) or no_reference='why'"
    )
    for ref in refs:
        if not ref.conformance:
            continue
        path, _, test = ref.conformance.partition("::")
        assert path.startswith("tests/conformance/"), ref.conformance
        assert (ROOT / path).is_file(), f"{name}: {path} does not exist"
        if test:
            tree = ast.parse((ROOT / path).read_text())
            names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert test in names, f"{name}: no {test} in {path}"


@pytest.mark.parametrize("name", builtin_methods())
def test_no_deviation_is_claimed_only_where_a_conformance_test_backs_it(name):
    entry = METHODS.entry(name)
    doc = (entry.obj.__doc__ or "") + (entry.meta["hparams"].__doc__ or "")
    claims = re.search(r"\bno (known )?deviations?\b", doc, flags=re.IGNORECASE)
    if claims:
        refs = references_of(entry.meta)
        assert any(r.conformance for r in refs), (
            f"{name}'s docstring claims no deviation, but no conformance test backs it"
        )


def test_describe_prints_references_and_deviations():
    meta = {
        "references": (Reference("a/b", "abcdef1", "f.py", conformance="tests/conformance/t.py"),),
        "deviations": ("one thing",),
    }
    lines = describe(meta)
    assert lines[0].strip().startswith("reference: a/b@abcdef1:f.py")
    assert "conformance: tests/conformance/t.py" in lines[0]
    assert lines[1].strip() == "deviation: one thing"
    assert describe({"no_reference": "why"})[0].strip() == "reference: none (why)"


def test_list_methods_verbose_shows_each_reference_commit():
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--list", "methods", "-v"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for name in builtin_methods():
        for ref in references_of(METHODS.entry(name).meta):
            assert f"{ref.repo}@{ref.commit[:7]}" in out.stdout, (name, ref)


def test_readme_fidelity_table_is_the_registrys():
    """The generated fidelity block of docs/methods.md is the registry's."""
    text = (ROOT / "docs" / "methods.md").read_text()
    current = fidelity.current_block(text)
    assert current is not None, "docs/methods.md lacks the generated fidelity block"
    assert current == fidelity.block(), (
        "docs/methods.md's fidelity table differs from the registry: run "
        "python -m reports.fidelity --write docs/methods.md"
    )
