"""The autouse network guard really blocks internet access (so no test can depend on it)."""

import socket

import pytest


def test_network_is_blocked():
    with pytest.raises(RuntimeError, match="reach the network"):
        socket.create_connection(("example.com", 80), timeout=1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(RuntimeError, match="reach the network"):
            s.connect(("93.184.216.34", 80))
    finally:
        s.close()


def test_unix_sockets_still_work(tmp_path):
    a, b = socket.socketpair()
    a.sendall(b"ok")
    assert b.recv(2) == b"ok"
    a.close()
    b.close()
