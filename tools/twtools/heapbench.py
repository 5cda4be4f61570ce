"""`twomes heap`: the smallest MicroPython heap that walks the whole `twomes sim` story.

A benchmark, not a test: it prints figures. Each probe runs the complete story (portal, activation,
update, reboot, confirm, upload, button, re-provisioning) on a fresh virtual board with
`micropython -X heapsize=N` and reports whether every step passed and, if not, which step failed.
For the smallest passing heap it also prints the least free heap the device logged in each state
(after a collection): where the margin is.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

_STATE = re.compile(r"\] state: (\w+).*\(free heap (\d+)\)$", re.M)


def probe(kib: int, lows: dict[str, int] | None = None) -> tuple[bool, str, float]:
    """Run the story with a `kib` KiB heap; `lows` gets the least free heap logged per state."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "twtools.cli", "sim", "--heap", f"{kib}K"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    if lows is not None:
        for state, free in _STATE.findall(out):
            lows[state] = min(lows.get(state, 1 << 30), int(free))
    m = re.search(r"FAILED at step (\d+/\d+) \((.*)\):$", out, re.M)
    note = (
        f"failed at step {m.group(1)}: {m.group(2)}"
        if m
        else ("passed" if proc.returncode == 0 else "failed")
    )
    return proc.returncode == 0, note, time.monotonic() - t0


def run(args: argparse.Namespace) -> int:
    lo, hi, step = args.low, args.high, args.step
    lows: dict[str, int] = {}
    ok_hi, note, secs = probe(hi, lows)
    print(f"heap {hi:4d}K: {note} ({secs:.1f} s)", flush=True)
    if not ok_hi:
        print(f"the story does not pass even with {hi}K")
        return 1
    # smallest passing size, on the grid lo + k*step
    while hi - lo > step:
        mid = lo + ((hi - lo) // 2 // step) * step
        if mid <= lo:
            mid = lo + step
        mid_lows: dict[str, int] = {}
        ok, note, secs = probe(mid, mid_lows)
        print(f"heap {mid:4d}K: {note} ({secs:.1f} s)", flush=True)
        if ok:
            hi, lows = mid, mid_lows
        else:
            lo = mid
    print(f"\nsmallest heap for the whole story: {hi}K (-X heapsize, 64-bit unix port; grid {step}K)")
    print(f"least free heap per state at {hi}K (bytes, after gc.collect):")
    for state, free in sorted(lows.items(), key=lambda kv: kv[1]):
        print(f"  {state:12s} {free:6d}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "heap",
        help="benchmark: the smallest heap that walks the whole sim story",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--low", type=int, default=48, help="known or assumed failing size, KiB")
    p.add_argument("--high", type=int, default=96, help="size expected to pass, KiB")
    p.add_argument("--step", type=int, default=4, help="grid, KiB")
    p.set_defaults(func=run)
