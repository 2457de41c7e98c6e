"""Shared fixtures of the conformance tests (each restates a reference in float64)."""

from __future__ import annotations

import pytest
import torch

from bench.data import splits


@pytest.fixture
def float64(monkeypatch):
    """float64 everywhere, the harness's data views included (they cast batches to float32).
    A test module opts in with ``pytestmark = pytest.mark.usefixtures("float64")``."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    monkeypatch.setattr(splits, "to_float", lambda x: x.double())
    yield
    torch.set_default_dtype(old)
