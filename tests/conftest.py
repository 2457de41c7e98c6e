"""Shared fixtures: a network guard (autouse), tiny data, a temporary results root."""

from __future__ import annotations

import socket

import pytest
import torch

from bench.protocol import Env


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


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture
def env(tmp_path) -> Env:
    """A CPU environment writing under a temporary output root."""
    return Env(out=tmp_path / "results", cache=tmp_path / "cache", device=torch.device("cpu"))
