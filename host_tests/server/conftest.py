"""Fixtures for the reference-server tests: a real server subprocess per module, driven over real HTTP."""

from __future__ import annotations

import logging
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


@pytest.fixture(autouse=True)
def _server_log_reaches_caplog() -> Iterator[None]:
    """The server's logger as a fresh process has it, for each test: an earlier test in the same
    pytest process may have run the CLI's logging setup (its own handler, no propagation, a level) or
    a library's ``dictConfig`` (which disables the loggers that exist), and caplog would see nothing."""
    logger = logging.getLogger("twtools.server")
    saved = (logger.disabled, logger.propagate, logger.level, list(logger.handlers))
    logger.disabled, logger.propagate, logger.handlers[:] = False, True, []
    logger.setLevel(logging.NOTSET)
    try:
        yield
    finally:
        logger.disabled, logger.propagate, logger.handlers[:] = saved[0], saved[1], saved[3]
        logger.setLevel(saved[2])
