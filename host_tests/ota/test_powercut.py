"""A short slice of `twomes powercut` (the full run is `make powercut`): 10 cut points per installer,
spread over the whole update, on two virtual boards in parallel against a real reference server; with
the app in ROMFS (as it ships) and as .mpy files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from twtools.powercut import KINDS, run
from twtools.vboard.runner import CODE_MODES


@pytest.mark.parametrize("code", CODE_MODES)
def test_power_cuts_during_updates_always_recover(tmp_path: Path, code: str) -> None:
    t0 = time.monotonic()
    lines: list[str] = []
    installers = run(KINDS, limit=10, jobs=2, work=tmp_path, log=lines.append, code=code)
    for kind in KINDS:
        inst = installers[kind]
        assert len(inst.plan) >= 200, f"{kind}: only {len(inst.plan)} durable writes in the update"
        boots = {b for b, _, _ in inst.plan}
        assert boots == {1, 2, 3}, (
            boots
        )  # old version: finds the update; its update boot; the new one confirms
        cut = [r for r in inst.results if not r.missed]
        failed = [(r.cut, r.why) for r in cut if not r.ok]
        assert len(cut) == 10 and not failed, "\n".join(lines)
        assert {r.first for r in cut} == {inst.old, inst.new}  # cuts fell on both sides of the switch
    assert time.monotonic() - t0 < 90
