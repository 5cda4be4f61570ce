"""Fixtures for the reference-server tests: a real server subprocess per module, driven over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from server_helpers import Twomes, check_framing

from twtools.server.testing import ReferenceServer


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: ReferenceServer) -> Iterator[httpx.Client]:
    """Raw HTTP to the server (no auth header); checks Content-Length framing on every response."""
    with httpx.Client(
        base_url=server.url, timeout=60.0, trust_env=False, event_hooks={"response": [check_framing]}
    ) as client:
        yield client


@pytest.fixture(scope="module")
def tw(server: ReferenceServer, http: httpx.Client) -> Twomes:
    return Twomes(server, http)
