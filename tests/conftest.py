"""Shared fixtures: a network guard (autouse), tiny data, a temporary results root."""

from __future__ import annotations

import os
import socket

import pytest
import torch

from bench.protocol.stages import Env


class NetworkAccessError(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that opens an internet connection (Unix sockets stay allowed)."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise NetworkAccessError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    def refuse(*args, **kwargs):
        raise NetworkAccessError(f"test tried to reach the network: {args[:1]!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _session_threads():
    # module-scoped fixtures (pretraining) run before function-scoped ones: set it here too
    torch.set_num_threads(int(os.environ.get("BENCH_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _threads():
    # 2 by default (the CI machine); BENCH_TEST_THREADS=1 when several test runs share the cores
    # (oversubscribed torch threads slow every run down many times over)
    torch.set_num_threads(int(os.environ.get("BENCH_TEST_THREADS", "2")))


@pytest.fixture
def env(tmp_path) -> Env:
    """A CPU environment writing under a temporary output root."""
    return Env(out=tmp_path / "results", cache=tmp_path / "cache", device=torch.device("cpu"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A pretrained tiny model on the synthetic data, shared by a test module's method tests:
    ``(env, spec, bundle, carved, model)``."""
    from bench.data import carve, load_dataset
    from bench.protocol.stages import pretrained_model
    from tests.helpers import tiny_spec

    env = Env(out=tmp_path_factory.mktemp("out"), cache=tmp_path_factory.mktemp("cache"))
    spec = tiny_spec("neggrad", k=16)
    bundle = load_dataset("synthetic", env.locations)
    carved = carve(bundle, spec.data)
    model, _ = pretrained_model(spec, carved, env)
    return env, spec, bundle, carved, model
