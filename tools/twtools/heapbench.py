"""`twomes heap`: the smallest MicroPython heap that walks the whole `twomes sim` story, in both ways a
virtual board can hold the app.

A benchmark, not a test: it prints figures. Each probe runs the complete story (portal, activation,
update, reboot, confirm, upload, button, re-provisioning) on a fresh virtual board with
`micropython -X heapsize=N` and reports whether every step passed and, if not, which step failed.

Modes (`--code`): `romfs`, as the app ships - a ROMFS image in the board's "romfs" partition, its
bytecode and constants run in place from flash, outside the heap - and `mpy`, .mpy files in /lib that
MicroPython loads into the heap. For each mode it prints the smallest passing heap (bisected on a grid)
and the least free heap the device logged in each state (after a collection): at the reference heap
(`--at`, the virtual board's default) for both modes side by side, and at each mode's smallest heap.
What is and is not charged to the heap in each mode: docs/heap.md.

`--floor` measures something else: the heap the code alone holds (each phase's modules imported on a
fresh board, nothing run, after a collection), module by module: the floor under which no state of
that phase can go, whatever its working memory, and what it leaves of a heap `--target`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twtools.vboard.runner import CODE_MODES, MPY_HEAP, VirtualBoard

_STATE = re.compile(r"\] state: (\w+).*\(free heap (\d+)\)$")
_BOOT = re.compile(r"\] boot: twomes firmware \S+-sim\.(\d+)$")
# A board's main.py that prints the qstr pool (micropython.qstr_info(): n_pool pools, n_qstr names)
# after every state change, then starts the app as main.py does: how the tests watch the qstr pool's
# edge (docs/heap.md, "The qstr pool"). The probe itself adds 3 names.
QSTR_MAIN = """
import micropython
import twomes.app

_set = twomes.app.App.set_state


def _state(self, state, message=""):
    _set(self, state, message)
    micropython.qstr_info()


twomes.app.App.set_state = _state
twomes.app.main()
"""
_POOL = re.compile(r"n_pool=(\d+), n_qstr=(\d+)")


def qstr_pools(lines: list[str]) -> list[tuple[int, int, str, int]]:
    """(names, pools, state, free heap) of every pool line QSTR_MAIN printed, with the state whose line
    came before it and the free heap that line says (after a collection; 0 before any state)."""
    seen, state, free = [], "boot", 0
    for line in lines:
        m = _STATE.search(line)
        if m:
            state, free = m.group(1), int(m.group(2))
        m = _POOL.search(line)
        if m:
            seen.append((int(m.group(2)), int(m.group(1)), state, free))
    return seen


# The story's versions: 1 is what the board was shipped with (its code as --code says), 2 the bundle
# it installs (in the form the board installs: a ROMFS image in romfs mode, .mpy overlays in mpy mode).


def collect(out: str, lows: dict[str, int]) -> None:
    """The least free heap per state and version ("portal v1") that the story's console shows."""
    version = "1"
    for line in out.splitlines():
        boot = _BOOT.search(line)
        if boot:
            version = boot.group(1)
            continue
        m = _STATE.search(line)
        if m:
            key = f"{m.group(1)} v{version}"
            lows[key] = min(lows.get(key, 1 << 30), int(m.group(2)))


def probe(kib: int, lows: dict[str, int] | None = None, code: str = "romfs") -> tuple[bool, str, float]:
    """Run the story with a `kib` KiB heap; `lows` gets the least free heap logged per state and
    version ("portal v1")."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "twtools.cli", "sim", "--heap", f"{kib}K", "--code", code],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    if lows is not None:
        collect(out, lows)
    m = re.search(r"FAILED at step (\d+/\d+) \((.*)\):$", out, re.M)
    note = (
        f"failed at step {m.group(1)}: {m.group(2)}"
        if m
        else ("passed" if proc.returncode == 0 else "failed")
    )
    return proc.returncode == 0, note, time.monotonic() - t0


def smallest(
    code: str, lo: int, hi: int, step: int, at: int, at_lows: dict[str, int]
) -> tuple[int | None, dict[str, int]]:
    """Bisect the smallest passing heap of mode `code` on the grid lo + k*step; the probe at `at`
    (the reference heap) fills `at_lows`. Returns (smallest or None, least free per state there)."""
    ok, note, secs = probe(at, at_lows, code)
    print(f"[{code}] heap {at:4d}K: {note} ({secs:.1f} s)", flush=True)
    lows = dict(at_lows)
    if ok:
        hi = at
    else:
        lo = max(lo, at)
        lows = {}
        ok, note, secs = probe(hi, lows, code)
        print(f"[{code}] heap {hi:4d}K: {note} ({secs:.1f} s)", flush=True)
        if not ok:
            return None, {}
    while hi - lo > step:
        mid = lo + ((hi - lo) // 2 // step) * step
        if mid <= lo:
            mid = lo + step
        mid_lows: dict[str, int] = {}
        ok, note, secs = probe(mid, mid_lows, code)
        print(f"[{code}] heap {mid:4d}K: {note} ({secs:.1f} s)", flush=True)
        if ok:
            hi, lows = mid, mid_lows
        else:
            lo = mid
    return hi, lows


# The code alone (`--floor`): per phase, the modules it holds at its peak, in the order the app imports
# them (the order decides which module's row pays for a dict's or the qstr pool's growth; this one gives
# the app's own total, within ~0.2K). `twomes.hw`'s row includes the package `twomes`. Setup mode: the
# app and twomes.ap but Improv (loaded when a frame comes); the online phase: the app, the phase, the
# running state and the firmware check at its signature check (the update state's module is let go
# there, docs/heap.md). Both phases read and write through asyncio's streams.
_APP = ("asyncio", "twomes.hw", "twomes.store", "twomes.wifi", "twomes.errors", "twomes.log", "twomes.app")
FLOOR_PHASES = (
    (
        "setup mode",
        (
            *_APP,
            "asyncio.stream",
            "twomes.ap.creds",
            "twomes.ap.dns",
            "twomes.ap.httpd",
            "twomes.ap.api",
            "twomes.ap.pages",
            "twomes.ap.form",
            "twomes.ap.portal",
            "twomes.ap.controller",
        ),
    ),
    (
        "online phase (running, a firmware check's signature check)",
        (
            *_APP,
            "asyncio.stream",
            "twomes.online.http",
            "twomes.online.server",
            "twomes.online.phase",
            "twomes.online.running",
            "twomes.update.check",
            "twomes.update.signing",
            "twomes.update.ed25519",
        ),
    ),
)
# A board's main.py that imports the given modules one by one and prints the heap in use (after a
# collection) and the qstr pool after each: the first line is the port, the simulation, boot.py and
# this probe (its own code, compiled from source, a few hundred bytes).
FLOOR_MAIN = """
import gc, micropython
def _at(what):
    gc.collect()
    print("floor:", what, gc.mem_alloc())
    micropython.qstr_info()
_at("-")
for _m in %r:
    __import__(_m)
    _at(_m)
print("floor: done")
"""
_FLOOR = re.compile(r"^floor: (\S+) (\d+)$")


def floor_rows(lines: list[str]) -> list[tuple[str, int, int, int]]:
    """(module, heap in use, names, qstr pools) of each `floor:` line FLOOR_MAIN printed, with the pool
    line after it; "-" is the start (no app code)."""
    rows: list[tuple[str, int, int, int]] = []
    for i, line in enumerate(lines):
        m = _FLOOR.match(line.strip())
        if not m:
            continue
        pool = next((_POOL.search(x) for x in lines[i + 1 : i + 3] if _POOL.search(x)), None)
        if pool is None:
            raise ValueError(f"no qstr pool line after {line!r}")
        rows.append((m.group(1), int(m.group(2)), int(pool.group(2)), int(pool.group(1))))
    return rows


def floor(code: str, modules: tuple[str, ...], work: Path) -> list[tuple[str, int, int, int]]:
    """Boot a fresh board of mode `code` whose main.py imports `modules` and report floor_rows()."""
    b = VirtualBoard(work, config={"server_url": "https://127.0.0.1:9"}, code=code, heap="256K")
    b.install_app()
    (b.fs / "main.py").write_text(FLOOR_MAIN % (modules,))
    with b:
        b.start()
        b.wait_for(r"^floor: done", 60)
    rows = floor_rows(b.lines)
    if [r[0] for r in rows] != ["-", *modules]:
        raise RuntimeError("the probe did not import every module:\n" + "\n".join(b.lines[-15:]))
    return rows


def run_floor(modes: tuple[str, ...], target: int, free: int) -> int:
    print(
        "the code alone: heap in use after a collection with a phase's modules imported on a fresh board, "
        "nothing run (64-bit unix port; a module's row includes the qstr pool its names opened)"
    )
    for code in modes:
        for phase, modules in FLOOR_PHASES:
            with tempfile.TemporaryDirectory(prefix="twomes-floor-") as tmp:
                rows = floor(code, modules, Path(tmp))
            print(f"\n[{code}] {phase}")
            prev = 0
            for name, used, names, pools in rows:
                what = "port, simulation, boot.py, probe" if name == "-" else "+ " + name
                print(f"  {what:36s} {used - prev:+7d} {used:7d} bytes  {names:4d} names, {pools} pools")
                prev = used
            left = target * 1024 - prev - free * 1024
            print(
                f"  at {target}K with {free}K free: {left:+d} bytes left for the phase's own objects "
                "(buffers, sockets, tasks, the boot's results)"
            )
    return 0


def _kib(text: str) -> int:
    return int(text.upper().removesuffix("K"))


def run(args: argparse.Namespace) -> int:
    modes = CODE_MODES if args.code == "both" else (args.code,)
    if args.floor:
        return run_floor(modes, _kib(args.target), args.free)
    at = _kib(args.at)
    found: dict[str, tuple[int | None, dict[str, int], dict[str, int]]] = {}
    for code in modes:
        at_lows: dict[str, int] = {}
        size, lows = smallest(code, args.low, args.high, args.step, at, at_lows)
        found[code] = (size, lows, at_lows)
    print(f"\nsmallest heap for the whole story (-X heapsize, 64-bit unix port; grid {args.step}K):")
    for code in modes:
        size = found[code][0]
        print(f"  {code:6s} {f'{size}K' if size else f'more than {args.high}K'}")
    states = sorted(
        {s for code in modes for s in found[code][2]},
        key=lambda s: (s.split()[1], min(found[c][2].get(s, 1 << 30) for c in modes)),
    )
    print(
        f"\nleast free heap per state at {at}K (bytes, after gc.collect; v1: the version the board was "
        "shipped with, v2: the bundle it installed; - : the story did not get there):"
    )
    print("  " + "state".ljust(16) + "".join(f"{c:>8s}" for c in modes))
    for state in states:
        row = "".join(f"{found[c][2].get(state, '-'):>8}" for c in modes)
        print(f"  {state:16s}{row}")
    for code in modes:
        size, lows, _ = found[code]
        if not size:
            continue
        print(f"\n[{code}] least free heap per state at its smallest heap, {size}K:")
        for state, free in sorted(lows.items(), key=lambda kv: kv[1]):
            print(f"  {state:16s} {free:6d}")
    return 0 if all(found[c][0] for c in modes) else 1


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "heap",
        help="benchmark: the smallest heap that walks the whole sim story (ROMFS and .mpy modes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--code", choices=(*CODE_MODES, "both"), default="both", help="which mode(s) to measure")
    p.add_argument(
        "--at",
        default=MPY_HEAP,
        help=f"reference heap for the per-state table, one both modes pass ({MPY_HEAP})",
    )
    p.add_argument("--low", type=int, default=24, help="known or assumed failing size, KiB")
    p.add_argument("--high", type=int, default=128, help="size expected to pass, KiB")
    p.add_argument("--step", type=int, default=4, help="grid, KiB")
    p.add_argument(
        "--floor", action="store_true", help="instead: the heap the code alone holds, per phase and module"
    )
    p.add_argument("--target", default="48K", help="--floor: the heap to compare the floor with (48K)")
    p.add_argument("--free", type=int, default=8, help="--floor: free heap every state must keep, KiB (8)")
    p.set_defaults(func=run)
