"""One portal-only virtual board shared by the tests of this folder (booting one takes a moment)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vportal import start_board  # noqa: E402

from twtools.vboard.runner import VirtualBoard  # noqa: E402


@pytest.fixture(scope="session")
def portal_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualBoard]:
    vb = start_board(tmp_path_factory.mktemp("portal-board"))
    try:
        yield vb
    finally:
        vb.stop()
