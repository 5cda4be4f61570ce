"""`twomes heap`: the smallest MicroPython heap that walks the whole `twomes sim` story.

A benchmark, not a test: it prints figures. Each probe runs the complete story (portal, activation,
update, reboot, confirm, upload, button, re-provisioning) on a fresh virtual board with
`micropython -X heapsize=N` and reports whether every step passed and, if not, which step failed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time


def probe(kib: int) -> tuple[bool, str, float]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "twtools.cli", "sim", "--quiet", "--heap", f"{kib}K"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    m = re.search(r"FAILED at step (\d+/\d+) \((.*)\):$", out, re.M)
    note = (
        f"failed at step {m.group(1)}: {m.group(2)}"
        if m
        else ("passed" if proc.returncode == 0 else "failed")
    )
    return proc.returncode == 0, note, time.monotonic() - t0


def run(args: argparse.Namespace) -> int:
    lo, hi, step = args.low, args.high, args.step
    ok_hi, note, secs = probe(hi)
    print(f"heap {hi:4d}K: {note} ({secs:.1f} s)", flush=True)
    if not ok_hi:
        print(f"the story does not pass even with {hi}K")
        return 1
    # smallest passing size, on the grid lo + k*step
    while hi - lo > step:
        mid = lo + ((hi - lo) // 2 // step) * step
        if mid <= lo:
            mid = lo + step
        ok, note, secs = probe(mid)
        print(f"heap {mid:4d}K: {note} ({secs:.1f} s)", flush=True)
        if ok:
            hi = mid
        else:
            lo = mid
    print(f"\nsmallest heap for the whole story: {hi}K (-X heapsize, 64-bit unix port; grid {step}K)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "heap",
        help="benchmark: the smallest heap that walks the whole sim story",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--low", type=int, default=64, help="known or assumed failing size, KiB")
    p.add_argument("--high", type=int, default=160, help="size expected to pass, KiB")
    p.add_argument("--step", type=int, default=4, help="grid, KiB")
    p.set_defaults(func=run)
