"""free_port(): under pytest-xdist a worker's ports come from a range of its own, below the kernel's
ephemeral range, and a port somebody holds is passed over."""

from __future__ import annotations

import socket

import pytest

from twtools import tcpport


def test_a_worker_takes_ports_from_its_own_range_and_passes_over_a_held_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    first = tcpport.free_port()
    assert 22000 <= first < 24000
    lo = socket.socket()
    try:
        nxt = 22000 + (first - 22000 + 1) % 2000
        lo.bind(("127.0.0.1", nxt))
        lo.listen()
        second = tcpport.free_port()
        assert second != nxt and 22000 <= second < 24000
        monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
        assert 20000 <= tcpport.free_port() < 22000  # another worker: another range
    finally:
        lo.close()


def test_outside_xdist_the_kernel_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    port = tcpport.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free indeed
