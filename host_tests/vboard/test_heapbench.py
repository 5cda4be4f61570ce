"""`twomes heap` reads the device's console of a story run: the least free heap per state, apart for the
version the board was shipped with and the one it installed."""

from __future__ import annotations

import pytest

from twtools import REPO
from twtools.heapbench import FLOOR_PHASES, collect, floor_rows

OUT = """
    device | [   0.000] boot: twomes firmware 1.0.0-sim.1
    device | [   0.003] state: portal - waiting for Wi-Fi settings (free heap 22112)
    device | [   3.093] state: joining - testing Home network (free heap 19264)
    device | [   0.003] state: portal - waiting for Wi-Fi settings (free heap 22500)
[sim 10/13] Version 1.0.0-sim.2 runs, confirms itself, and only then is kept
    device | [   0.000] boot: twomes firmware 1.0.0-sim.2
    device | [   0.003] state: portal - waiting for Wi-Fi settings (free heap 8800)
    device | [   0.004] portal: state: portal (free heap 1) is not a state line of the app
"""


def test_least_free_heap_per_state_and_version() -> None:
    lows: dict[str, int] = {"portal v1": 30000}
    collect(OUT, lows)
    assert lows == {"portal v1": 22112, "joining v1": 19264, "portal v2": 8800}


FLOOR_OUT = [
    "floor: - 10368",
    "qstr pool: n_pool=4, n_qstr=196, n_str_data_bytes=1773, n_total_bytes=5325",
    "floor: twomes.app 28480",
    "[   0.001] a console line in between",
    "qstr pool: n_pool=5, n_qstr=360, n_str_data_bytes=3223, n_total_bytes=10359",
    "floor: done",
]


def test_floor_reads_the_heap_and_names_after_each_import() -> None:
    assert floor_rows(FLOOR_OUT) == [("-", 10368, 196, 4), ("twomes.app", 28480, 360, 5)]
    with pytest.raises(ValueError, match="no qstr pool line"):
        floor_rows(FLOOR_OUT[:1] + FLOOR_OUT[2:3])


def test_floor_phases_name_modules_of_the_device() -> None:
    # a module renamed or moved must not silently drop out of the floor's figures
    for _, modules in FLOOR_PHASES:
        for name in modules:
            if name.split(".")[0] != "asyncio":
                assert (REPO / "device" / (name.replace(".", "/") + ".py")).is_file(), name
