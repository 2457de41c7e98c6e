"""Methods from another installed package, through the ``unlearning_bench.methods`` entry
point group: a tiny package is built and installed (into a temporary target) by the test."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

from bench.core.registry import load_entry_point_methods
from bench.unlearning.method import METHODS


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    METHODS.list()  # builtin methods loaded before the plugin exists
    src = tmp_path / "src"
    (src / "ub_plugin_demo").mkdir(parents=True)
    (src / "ub_plugin_demo" / "__init__.py").write_text(
        textwrap.dedent('''
        from dataclasses import dataclass
        from bench.unlearning.method import register_method

        @dataclass(frozen=True)
        class HP:
            scale: float = 0.0

        @register_method("plugin_zero_head", hparams=HP)
        def zero_head(model, data, hp, ctx):
            """Scale the last layer's weights (a toy 'method' from another package)."""
            import torch
            with torch.no_grad():
                list(model.parameters())[-2].mul_(hp.scale)
            return model
    ''')
    )
    (src / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "ub-plugin-demo"
        version = "0.0.1"
        [project.entry-points."unlearning_bench.methods"]
        demo = "ub_plugin_demo"
        [tool.setuptools]
        packages = ["ub_plugin_demo"]
    """)
    )
    target = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    monkeypatch.syspath_prepend(str(target))
    importlib.invalidate_caches()
    yield "plugin_zero_head"
    METHODS.remove("plugin_zero_head")
    sys.modules.pop("ub_plugin_demo", None)


def test_entry_point_plugin_registers_and_runs(installed_plugin, env):
    from bench.protocol.stages import execute
    from tests.helpers import tiny_spec

    assert installed_plugin not in METHODS.list()
    added = load_entry_point_methods(METHODS)
    assert installed_plugin in added
    assert installed_plugin in METHODS.list()
    spec = tiny_spec(installed_plugin, k=8)
    assert execute(spec, env) == "done"
