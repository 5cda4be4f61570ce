"""Fixtures for the host-level OTA tests: one reference server per module and a powercut Lab on it
(board templates: version 1 installed, on Wi-Fi, registered, attached, activated, confirmed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from twtools.powercut import Lab
from twtools.server.testing import ReferenceServer
from twtools.vboard.runner import DEFAULT_HEAP


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    work: Path = tmp_path_factory.mktemp("ota-lab")
    with ReferenceServer(work / "server", access_log=False) as server:
        # the device's heap budget: no cut points are armed here, so nothing but the app is in its heap
        yield Lab(work, server, heap=DEFAULT_HEAP, log=lambda line: None)
