"""`twomes heap` reads the device's console of a story run: the least free heap per state, apart for the
version the board was shipped with and the one it installed."""

from __future__ import annotations

from twtools.heapbench import collect

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
