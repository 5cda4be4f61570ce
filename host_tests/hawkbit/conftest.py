"""Fixtures for the hawkBit DDI tests: a real gooseBit on 127.0.0.1 (its database made by its own
migrations before the first start, stopped after the module), a reference server for activation and
measurements, and a Lab whose boards take their updates from gooseBit (config updates = "hawkbit")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from twtools.goosebit import TENANT, GooseBit
from twtools.powercut import Lab
from twtools.server.testing import ReferenceServer


@pytest.fixture(scope="module")
def goosebit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GooseBit]:
    work: Path = tmp_path_factory.mktemp("goosebit")
    gb = GooseBit(work, poll="00:00:02", startup_timeout=90)
    gb.start()
    try:
        yield gb
    finally:
        gb.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, goosebit: GooseBit) -> Iterator[Lab]:
    work: Path = tmp_path_factory.mktemp("hawkbit-lab")
    with ReferenceServer(work / "server", access_log=False) as server:
        # 128K: the .mpy-overlay bundles and the images most tests here install run from the heap
        # (the .mpy mode's costs, docs/heap.md); the shipping form (a ROMFS bundle at 80K, near the
        # story's heap) has its own test
        lab = Lab(work, server, heap="128K", log=lambda line: None)
        lab.config.update(
            {"updates": "hawkbit", "ddi_url": goosebit.ddi_url, "ddi_tenant": TENANT, "allow_http": True}
        )
        yield lab
