"""`twomes powercut`: pull the plug on virtual boards at every durable write of a firmware update.

For each installer (app bundle, ESP32 app image) a virtual board running version 1 - activated, on
Wi-Fi, confirmed - gets a target version 2 from a real reference server on 127.0.0.1. A calibration
run records every durable write of the whole update, across its reboots (``VBOARD_TRACE``: flash
program/erase, otadata, each key of an NVS commit, every file the app creates, writes, renames or
removes; see ``vboard/hw/vcut.py``). Then, for each of those writes, a fresh copy of the board is
started with ``VBOARD_CUT=<boot>:<n>``: the board's hardware process kills itself (SIGKILL) at exactly
that write - flash writes and erases are left torn, half done - and the device process dies with it.
The board is powered on again and must:

* come back running version 1 or version 2 (the first boot after the cut says which),
* still be activated with the same session token (no new activation line, no re-activation),
* end up running version 2, confirmed to the server (``installed_version``).

Two boards (two device identities) share the cut points between them, one per core. Prints
``cuts=N recovered=M`` per installer and in total; the exit code is 0 only if every cut recovered.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twtools import DEVICE_DIR, keys
from twtools.build import build_bundle, build_romfs, read_version
from twtools.vboard.images import build_sim_image
from twtools.vboard.runner import CODE_MODES, DEFAULT_CODE, VirtualBoard

KINDS = ("bundle", "image")
NET = {"ssid": "Powercut lab", "password": "unplug me often", "rssi": -50, "channel": 6, "join_ms": 30}
MACS = ("24:6F:28:C0:7C:01", "24:6F:28:C0:7C:02", "24:6F:28:C0:7C:03", "24:6F:28:C0:7C:04")
CONFIG = {
    "retry_base_s": 1,
    "retry_max_s": 5,
    "http_timeout_s": 5,
    "heartbeat_s": 3600,
    "fw_check_s": 3600,
    "confirm_boots": 3,
}
BALLAST_KB = 160  # the bundle's stand-in for the rest of a field app (see Lab.app_with_ballast)
RUN_TIMEOUT = 120.0  # one cut run: to the cut, then back up on the target version


def _blob(text: str) -> list[str]:
    return ["blob", text.encode().hex()]


def device_name(mac: str) -> str:
    return "TWOMES-" + "".join(mac.split(":")[3:]).upper()


@dataclass
class Identity:
    mac: str
    name: str
    template: Path
    session: str = ""


@dataclass
class Result:
    cut: tuple[int, int, str]
    ok: bool
    missed: bool = False  # the cut point was never reached (the write sequence differed)
    first: str = ""  # version of the first boot after the cut
    why: str = ""
    seconds: float = 0.0
    tail: list[str] = field(default_factory=list)


class Broken(Exception):
    """An invariant does not hold after the cut."""


@dataclass
class Installer:
    kind: str
    old: str
    new: str
    release_id: int
    plan: list[tuple[int, int, str]] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)


class Lab:
    """A reference server, releases, and board templates (one per identity) to copy for every run."""

    def __init__(
        self,
        work: Path,
        server: Any,
        heap: str = "128K",
        log: Callable[[str], None] = print,
        code: str = DEFAULT_CODE,
    ):
        self.work = work
        self.server = server
        self.heap = heap
        self.code = code  # how version 1 is installed: "romfs" (shipping) or "mpy" (.mpy files)
        self.log = log
        # the lab fleet's release key, made offline as an operator would (`twomes keys new`): the
        # boards trust it, every release is signed with it
        self.key_file = work / "keys" / "release.key"
        pub = (
            keys.public_hex(keys.load_key(self.key_file))
            if self.key_file.exists()
            else keys.new_key(self.key_file)
        )
        self.config = {"server_url": server.url, "release_keys": [pub], **CONFIG}
        base = read_version()
        self.old = f"{base}-pc.1"
        self.installers: dict[str, Installer] = {}
        self.identities: list[Identity] = []

    # ---- setup ----------------------------------------------------------------------------------
    def publish(self, kinds: tuple[str, ...]) -> None:
        for kind in kinds:
            new = f"{read_version()}-pc.2-{kind}"
            src = self.app_with_ballast() if kind == "bundle" else DEVICE_DIR
            rel = self.release(kind, new, src)
            self.installers[kind] = Installer(kind, self.old, new, int(rel["id"]))
            self.log(f"[powercut] {kind} {new}: {rel['size']} bytes, release {rel['id']}")

    def release(self, kind: str, version: str, src: Path = DEVICE_DIR, **kw: Any) -> dict[str, Any]:
        """Build a bundle or a virtual-board image of `src` stamped `version` and publish it. A bundle
        has the form the lab's boards install: a ROMFS image when they run the app from their "romfs"
        partition, .mpy overlays otherwise (`romfs=` says otherwise)."""
        path = self.work / f"{version}.{kind}"
        if kind == "bundle":
            romfs = kw.pop("romfs", self.code == "romfs")
            (build_romfs if romfs else build_bundle)(path, version, src)
        else:
            build_sim_image(path, version, src, **kw)
        manifest, signature = self.sign(path, kind, version)
        return dict(self.server.client.publish(path, version, kind, manifest=manifest, signature=signature))

    def sign(self, path: Path, kind: str, version: str, counter: int = 1) -> tuple[str, str]:
        """(manifest, signature) of a release file, signed with the lab's key (`twomes release --key`)."""
        return keys.sign_file(keys.load_key(self.key_file), path, "Generic-Test", kind, version, counter)

    def app_with_ballast(self) -> Path:
        """device/ plus a module of BALLAST_KB constant bytes (never imported): the bundle gets the size
        of a whole field app (portal pages, drivers), not just this repository's 33 KB of code."""
        src = self.work / "src-ballast"
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(DEVICE_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
        rows = [f"    {bytes((i * 7 + j) % 256 for j in range(64))!r}\n" for i in range(BALLAST_KB * 16)]
        (src / "twomes" / "ballast.py").write_text(
            "# size stand-in, never imported\nDATA = (\n" + "".join(rows) + ")\n"
        )
        return src

    def board(self, state: Path, mac: str, **kw: Any) -> VirtualBoard:
        kw = {"heap": self.heap, "code": self.code, **kw}
        return VirtualBoard(state, mac=mac, config=dict(self.config), **kw)

    def make_identity(self, mac: str) -> Identity:
        """A board with version 1 installed, Wi-Fi settings in NVS, registered, attached, activated by
        itself and confirmed: the state every cut run starts from."""
        name = device_name(mac)
        ident = Identity(mac, name, self.work / f"template-{name}")
        shutil.rmtree(ident.template, ignore_errors=True)
        board = self.board(ident.template, mac, air=[NET])
        board.install_app(version=self.old)
        token = "".join(str((int(c, 16) * 7 + i) % 10) for i, c in enumerate(mac.replace(":", "") * 2))[:16]
        nvs = {
            "twomes": {
                "act_token": _blob(token),
                "ap_secret": _blob("powercut-ap-secret-" + name),
                "wifi_ssid": _blob(NET["ssid"]),
                "wifi_pass": _blob(NET["password"]),
            }
        }
        (ident.template / "nvs.json").write_text(json.dumps(nvs))
        client = self.server.client
        client.register_device({"name": name, "device_type": "Generic-Test", "activation_token": token})
        client.attach(name)
        try:
            board.start()
            board.wait_for(rf"state: running - firmware {re.escape(self.old)}", 60)
        finally:
            board.stop()
        session = board.nvs().get("twomes", {}).get("session")
        if not session:
            raise RuntimeError(f"{name}: no session token after activation")
        ident.session = bytes.fromhex(session[1]).decode()
        for junk in ("led", "ap.json", "button"):
            (ident.template / junk).unlink(missing_ok=True)
        self.identities.append(ident)
        return ident

    def fresh(self, ident: Identity, tag: str, **kw: Any) -> VirtualBoard:
        """A board started from a copy of the identity's template (not started yet)."""
        return self.board(self._copy(ident, tag), ident.mac, **kw)

    def target(self, inst: Installer) -> None:
        for ident in self.identities:
            self.server.client.set_device_target(ident.name, inst.release_id)

    # ---- runs -----------------------------------------------------------------------------------
    def _copy(self, ident: Identity, tag: str) -> Path:
        run = self.work / f"run-{ident.name}-{tag}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(ident.template, run)
        return run

    def calibrate(self, inst: Installer, ident: Identity) -> list[tuple[int, int, str]]:
        """The update without cuts, every durable write traced: the cut plan."""
        run = self._copy(ident, f"{inst.kind}-calibration")
        board = self.board(run, ident.mac)
        board.env = {"VBOARD_TRACE": "1"}
        try:
            board.start()
            board.wait_for(rf"state: running - firmware {re.escape(inst.new)}", RUN_TIMEOUT)
        finally:
            board.stop()
            (self.work / f"calibration-{inst.kind}.log").write_text("\n".join(board.lines) + "\n")
        trace = (run / "cut.trace").read_text()
        (self.work / f"calibration-{inst.kind}.trace").write_text(trace)
        plan = []
        for line in trace.splitlines():
            b, n, what = line.split(" ", 2)
            plan.append((int(b), int(n), what))
        shutil.rmtree(run, ignore_errors=True)
        return plan

    def cut_run(self, inst: Installer, ident: Identity, cut: tuple[int, int, str]) -> Result:
        boot, n, _ = cut
        run = self._copy(ident, f"{inst.kind}-{boot}-{n}")
        board = self.board(run, ident.mac)
        done = rf"state: running - firmware {re.escape(inst.new)}"

        def reach() -> bool:
            return "power cut" in board.wait_for(rf"\[vboard: power cut at|{done}", RUN_TIMEOUT).group(0)

        def judge(mark: int, cut_nvs: dict[str, Any]) -> str:
            first = board.wait_for(r"boot: twomes firmware (\S+)", 30, start=mark).group(1)
            if first not in (inst.old, inst.new):
                raise Broken(f"came back running {first}")
            board.wait_for(done, RUN_TIMEOUT, start=mark)
            after = board.lines[mark:]
            if any(ln.startswith('{"name":') or "activate: activated" in ln for ln in after):
                raise Broken("the device activated again (its session was lost)")
            session = board.nvs().get("twomes", {}).get("session")
            if not session or bytes.fromhex(session[1]).decode() != ident.session:
                raise Broken("the session token in NVS changed")
            dev = self.server.client.device(ident.name)
            if dev.get("installed_version") != inst.new:
                raise Broken(f"the server has installed_version {dev.get('installed_version')}")
            return first

        return cut_and_judge(cut, run, board, reach, judge)


def cut_and_judge(
    cut: tuple[int, int, str],
    run: Path,
    board: VirtualBoard,
    reach: Callable[[], bool],
    judge: Callable[[int, dict[str, Any]], str],
    off: Callable[[], None] | None = None,
    unplug: Callable[[VirtualBoard], None] = VirtualBoard.stop,
) -> Result:
    """One power cut, judged: `board` (not started; its state a fresh copy in `run`, removed at the end)
    starts with the cut armed, dies at it and is powered on again.

    reach(): what leads to the cut's write; waits for the board to report the cut, False if the run
    went on without reaching it (the write sequence differed: a missed cut, not a failure).
    off(): with the power off, before it comes back (the hand lets go of the button).
    judge(mark, cut_nvs): with the power back (console lines from `mark`; NVS as the cut left it):
    raises Broken (or times out) if an invariant does not hold, else returns what the board came back
    as (Result.first). unplug(board): the board off for good, at the end."""
    t0 = time.monotonic()
    res = Result(cut, False)
    try:
        board.env = {"VBOARD_CUT": f"{cut[0]}:{cut[1]}"}
        board.start()
        if not reach():
            res.missed = True
            res.why = "the cut point was not reached"
            return res
        deadline = time.monotonic() + 15
        while board.running and time.monotonic() < deadline:
            time.sleep(0.02)
        if board.running:
            res.why = "the board did not die at the cut"
            return res
        if board._supervisor:
            board._supervisor.join(10)
        if off is not None:
            off()
        cut_nvs = board.nvs()
        board.env = {}
        mark = board.mark()
        board.power_on()
        res.first = judge(mark, cut_nvs)
        res.ok = True
        return res
    except (Broken, TimeoutError, RuntimeError, OSError) as e:
        res.why = str(e).splitlines()[0]
        return res
    finally:
        unplug(board)
        res.seconds = time.monotonic() - t0
        if not res.ok:
            res.tail = board.lines[-40:]
        shutil.rmtree(run, ignore_errors=True)


def guarded(cut: tuple[int, int, str], cut_run: Callable[[], Result]) -> Result:
    """`cut_run()` (a run of `cut`), with the harness's own failure counted as this cut's failure, not a lost cut."""
    try:
        return cut_run()
    except Exception as e:  # noqa: BLE001 - the harness's own failure is this cut's failure, not a lost cut
        return Result(cut, False, why=f"harness error: {type(e).__name__}: {e}")


def log_cut(log: Callable[[str], None], name: str, res: Result, verbose: bool, came: str) -> None:
    """A failed cut with the device's last lines; with `verbose`, every cut (`came`: how the first
    of a recovered one is said)."""
    boot, n, what = res.cut
    if not res.ok and not res.missed:
        log(f"[powercut] {name} FAILED at boot {boot} write {n} ({what}): {res.why}")
        for line in res.tail:
            log(f"    device | {line}")
    elif verbose:
        state = "not reached" if res.missed else f"{came} {res.first}, recovered"
        log(f"[powercut] {name} cut {boot}:{n} {what}: {state} ({res.seconds:.1f} s)")


def tally(results: list[Result]) -> tuple[int, int, int]:
    """(cut points reached, of those recovered from, cut points not reached)."""
    reached = [r for r in results if not r.missed]
    return len(reached), len([r for r in reached if r.ok]), len(results) - len(reached)


def summary(results: list[Result]) -> str:
    n, m, missed = tally(results)
    return f"cuts={n} recovered={m}" + (f" (not reached: {missed})" if missed else "")


def pick(plan: list[tuple[int, int, str]], limit: int | None) -> list[tuple[int, int, str]]:
    """All cut points, or `limit` of them spread evenly over the update (first and last included)."""
    if limit is None or limit >= len(plan):
        return list(plan)
    if limit <= 1:
        return plan[:limit]
    step = (len(plan) - 1) / (limit - 1)
    return [plan[round(i * step)] for i in range(limit)]


def run(
    kinds: tuple[str, ...] = KINDS,
    limit: int | None = None,
    jobs: int = 2,
    heap: str = "128K",
    work: Path | None = None,
    log: Callable[[str], None] = print,
    verbose: bool = False,
    code: str = DEFAULT_CODE,
) -> dict[str, Installer]:
    """The whole harness; returns the installers with their plans and results."""
    from twtools.server.testing import ReferenceServer

    own = work is None
    work = Path(tempfile.mkdtemp(prefix="twomes-powercut-")) if work is None else work
    work.mkdir(parents=True, exist_ok=True)
    try:
        with ReferenceServer(work / "server", access_log=False) as server:
            lab = Lab(work, server, heap, log, code)
            lab.publish(kinds)
            for i in range(max(1, jobs)):
                ident = lab.make_identity(MACS[i % len(MACS)])
                log(f"[powercut] board {ident.name}: version {lab.old}, activated")
            for kind in kinds:
                inst = lab.installers[kind]
                lab.target(inst)
                t0 = time.monotonic()
                inst.plan = lab.calibrate(inst, lab.identities[0])
                chosen = pick(inst.plan, limit)
                boots = len({b for b, _, _ in inst.plan})
                log(
                    f"[powercut] {kind}: {len(inst.plan)} durable writes over {boots} boots in the update; "
                    f"cutting at {len(chosen)} of them"
                )
                _run_cuts(lab, inst, chosen, log, verbose)
                log(f"[powercut] {kind}: {summary(inst.results)} in {time.monotonic() - t0:.0f} s")
            return lab.installers
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def _run_cuts(
    lab: Lab, inst: Installer, chosen: list[tuple[int, int, str]], log: Callable[[str], None], verbose: bool
) -> None:
    lock = threading.Lock()

    def cut(c: tuple[int, int, str]) -> Callable[[int], None]:
        def task(w: int) -> None:
            ident = lab.identities[w]
            res = guarded(c, lambda: lab.cut_run(inst, ident, c))
            with lock:
                inst.results.append(res)
                log_cut(log, inst.kind, res, verbose, "back as")

        return task

    pool(len(lab.identities), [cut(c) for c in chosen])
    inst.results.sort(key=lambda r: (r.cut[0], r.cut[1]))


def pool(jobs: int, tasks: list[Callable[[int], None]]) -> None:
    """Run tasks on `jobs` threads; a task gets the worker's number (its board identity)."""
    lock = threading.Lock()
    queue = list(tasks)

    def worker(i: int) -> None:
        while True:
            with lock:
                if not queue:
                    return
                task = queue.pop(0)
            task(i)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(jobs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def main(args: argparse.Namespace) -> int:
    if getattr(args, "flows", "updates") != "updates":  # the other durable flows: twtools.powercut_flows
        from twtools.powercut_flows import main as flows_main

        return flows_main(args)
    kinds = KINDS if args.installer == "both" else (args.installer,)
    t0 = time.monotonic()
    installers = run(
        kinds,
        None if args.cuts == 0 else args.cuts,
        args.jobs,
        args.heap,
        Path(args.work) if args.work else None,
        verbose=args.verbose,
        code=args.code,
    )
    n, m, _ = tally([r for i in installers.values() for r in i.results])
    print(f"cuts={n} recovered={m} ({time.monotonic() - t0:.0f} s)", flush=True)
    return 0 if n == m and n > 0 else 1


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "powercut",
        help="cut the power of virtual boards at every durable write of an update (make powercut)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--flows",
        default="all",
        help="all (default), updates, or a comma list of: updates, first-boot, activation, wifi-portal, "
        "wifi-improv, rotation, forget-wifi, factory-reset, update-fails, update-unconfirmed "
        "(see twtools/powercut_flows.py)",
    )
    p.add_argument("--installer", choices=("bundle", "image", "both"), default="both")
    p.add_argument(
        "--cuts",
        type=int,
        default=0,
        help="cut points per installer/flow, spread evenly (default 0: all of them)",
    )
    p.add_argument("--jobs", type=int, default=2, help="boards in parallel (default 2: one per core)")
    p.add_argument("--heap", default="128K", help="MicroPython heap size of the boards")
    p.add_argument(
        "--code",
        choices=CODE_MODES,
        default=DEFAULT_CODE,
        help=f"how the boards hold version 1's code (default {DEFAULT_CODE}: ROMFS, as it ships)",
    )
    p.add_argument("--work", help="work directory (kept; default: a temporary one, removed)")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per cut")
    p.set_defaults(func=main)


if __name__ == "__main__":
    sys.exit(main(argparse.ArgumentParser().parse_args()))
