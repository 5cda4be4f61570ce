"""Run a virtual board: the real boot.py/main.py and compiled device modules on the MicroPython unix
port, with simulated hardware and a state directory that survives reboots and power cuts.

Every boot is two processes: the hardware process (``hw/vhwd.py``: the simulated machine, network and
esp32 modules, flash, NVS and the bootloader, in a heap of its own) and the device process
(``hw/vboot.py`` with ``-X heapsize``: the firmware, with tiny proxies of those modules), connected
by two pipes. Both write to the board's console. ``machine.reset()`` ends the device process with a
reboot code (the hardware process follows) and the runner starts both again on the same state,
exactly like a reboot; ``power_cut()`` kills both at once (SIGKILL) and ``power_on()`` boots again.
After the app (Ctrl-C, or main.py ended) the console is MicroPython's REPL; Ctrl-D there is a soft
reset: the device process starts again without the bootloader (``console.py``, ``hw/vrepl.py``).
"""

from __future__ import annotations

import ast
import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twtools import REPO
from twtools.build import BOOT_MODULES, BUILD_DIR, build_romfs, compile_tree
from twtools.tcpport import free_port
from twtools.vboard.console import ReplWatch, SerialLine

HW_DIR = Path(__file__).resolve().parent / "hw"
REBOOT_EXIT = 93
# The MicroPython heap of a virtual board (-X heapsize): the project's budget, so `make sim` and the
# tests walk the whole story in it. Measured (docs/heap.md, `make heap`): with the app in ROMFS, as it
# ships (v1 deployed there, v2 installed as a ROMFS bundle), the whole story passes at 64K, and at 68K
# with at least 8K free after a collection in every state and under the hostile-client attacks; 92K
# leaves ~24K of margin (hawkBit's running-poll check, the tests' probes, a slow machine's backlog).
# 64-bit objects make a unix-port figure ~1.5-2x what the ESP32 needs.
DEFAULT_HEAP = "92K"
# The .mpy-files mode (development) loads the app's code into the heap and needs more (the whole story:
# 92K): its tests and tools say so (heap=MPY_HEAP; `twomes sim --code mpy` picks it when --heap is not
# given).
MPY_HEAP = "112K"
# The hardware process's heap: the simulation's own, not the device's (on the chip this is C and ROM).
HW_HEAP = "4M"
# How the app's code is on the board: "romfs", as it ships (a ROMFS image in the "romfs" partition,
# mounted at /rom, its bytecode run in place from flash, outside the heap), or "mpy" (.mpy files in
# /lib, loaded into the heap; for development). docs/heap.md.
CODE_MODES = ("romfs", "mpy")
DEFAULT_CODE = "romfs"
ROMFS_LABEL = "romfs"
# Largest environment string (MAX_ARG_STRLEN, 32 pages, with its NUL and name): the memory for the
# ROMFS mappings is reserved in pieces of this size (vboard/hw/vmap.py).
_ENV_PIECE = 131072 - 64
# The simulation's modules that run in the device process: in a ROMFS image of their own (firmware_rom),
# run in place from a mapping outside the heap, as the chip's C modules run from flash (docs/heap.md,
# "The simulation's share"). vboot.py and vmap.py (which makes the mapping) are the only ones loaded
# into the heap, vmap only while it runs.
FW_MODULES = ("vfw", "vproxy", "vpart", "vvfs", "vos", "vrepl")
# Processes of boards that run now: killed when the Python process exits, so no board (and no hardware
# process) outlives a test run or a tool that forgot stop().
_LIVE: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()


@atexit.register
def _kill_live() -> None:
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()


def cpu_ns(pid: int, threads: bool = False) -> int:
    """CPU time (ns) a process has used so far, also after it exited and before it is reaped (a
    zombie keeps its accounting): its main thread's run time from /proc/<pid>/schedstat (exact; a
    MicroPython unix-port process has one thread), or with `threads` (or without schedstat) utime +
    stime of /proc/<pid>/stat (all its threads, in clock ticks). 0 if the process is gone."""
    if not threads:
        try:
            return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0


def queued_ns(pid: int) -> int:
    """Time (ns) a process's main thread was ready to run but waiting for a CPU (/proc/<pid>/schedstat:
    a busy machine, not the program's own waits). 0 if unknown."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def hw_modules() -> Path:
    """The simulated hardware modules compiled to .mpy (on the chip they are C: no parsing in RAM)."""
    out = BUILD_DIR / "vboard-hw"
    compile_tree(out, src=HW_DIR)
    return out


def firmware_rom(hw: Path) -> Path:
    """The simulation's device-side modules (FW_MODULES, compiled in `hw`) as a ROMFS image: the device
    process maps it outside its heap and runs them in place (hw/vmap.py), as the chip runs its C
    modules from flash. Rewritten (atomically: boards may be starting) only when it changed."""
    from mpremote.romfs import VfsRomWriter

    fs = VfsRomWriter()
    for name in FW_MODULES:
        fs.mkfile(f"{name}.mpy", (hw / f"{name}.mpy").read_bytes())
    image: bytes = fs.finalise()
    dest = hw.parent / "vboard-fw.romfs"
    if not dest.exists() or dest.read_bytes() != image:
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_bytes(image)
        tmp.replace(dest)
    return dest


def partition_table(state: Path) -> list[list[Any]]:
    """The board's partition table: board.json's "partitions", or the simulation's default."""
    board_file = Path(state) / "board.json"
    if board_file.exists():
        table = json.loads(board_file.read_text()).get("partitions")
        if table:
            return list(table)
    tree = ast.parse((HW_DIR / "vflash.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DEFAULT_TABLE" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise RuntimeError("vflash.py has no DEFAULT_TABLE")


def _read_version(src: Path | None) -> str:
    from twtools.build import read_version

    return read_version(src) if src else read_version()


def _prune(d: Path) -> None:
    """Remove empty directories under d."""
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()


def micropython_bin() -> str:
    candidate = Path(sys.executable).parent / "micropython"
    found = str(candidate) if candidate.exists() else shutil.which("micropython")
    if not found:
        raise RuntimeError("the MicroPython unix port is not installed: run `make install`")
    return found


def _map_env(name: str, path: Path, size: int) -> dict[str, str]:
    """A mapping's environment entries (vboard/hw/vmap.py): its flash file and size, then the filler
    strings that reserve its memory (consecutive in the process's environment block)."""
    pieces = -(-size // _ENV_PIECE)
    env = {name: f"{size} {pieces} {path}"}
    for i in range(pieces):
        env[f"{name}MAP{i}"] = "x" * min(_ENV_PIECE, size - i * _ENV_PIECE)
    return env


class VirtualBoard:
    def __init__(
        self,
        state_dir: Path,
        mac: str = "24:6F:28:D3:AD:48",
        air: list[dict[str, Any]] | None = None,
        config: dict[str, Any] | None = None,
        heap: str = DEFAULT_HEAP,
        echo: Callable[[str], None] | None = None,
        pty: bool = False,
        rollback: bool = True,
        code: str = DEFAULT_CODE,
    ) -> None:
        if code not in CODE_MODES:
            raise ValueError(f"code must be one of {CODE_MODES}, not {code!r}")
        self.code = code
        self.state = Path(state_dir)
        self.fs = self.state / "fs"
        self.mac = mac
        self.heap = heap
        self.echo = echo
        self.use_pty = pty
        self.portal_port = free_port()
        self.dns_port = free_port()
        self.config = {"portal_port": self.portal_port, "dns_port": self.dns_port, **(config or {})}
        if str(self.config.get("server_url", "https://")).startswith("http://"):
            self.config.setdefault("allow_http", True)  # a lab server on 127.0.0.1: explicit, logged at boot
        self.env: dict[str, str] = {}  # extra environment of the next starts (e.g. VBOARD_CUT)
        self.raw = bytearray()
        self.lines: list[str] = []
        self.boots = 0
        self.exit_codes: list[int] = []
        self._partial = b""
        self._lock = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None  # the device process
        self._hw_proc: subprocess.Popen[bytes] | None = None  # its hardware process
        self._stopping = False
        self._supervisor: threading.Thread | None = None
        self.pty_path: str | None = None
        self.serial: SerialLine | None = None
        self.repl = ReplWatch()
        self.soft_resets = 0
        # CPU time of the board's processes (twomes sim --timing): of those that ended, and the pids
        # of those that run
        self._cpu_done = {"device": 0, "hardware": 0, "device_queued": 0}
        self._cpu_live: dict[str, int] = {}
        self._hw = hw_modules()
        self._fw = firmware_rom(self._hw)
        self.state.mkdir(parents=True, exist_ok=True)
        board_file = self.state / "board.json"
        board = json.loads(board_file.read_text()) if board_file.exists() else {}
        board.update(
            {
                "mac": mac,
                "ap_ip": "127.0.0.1",
                "air": "air.json",
                "button_pin": self.config.get("button_pin", 0),
                "led_pin": self.config.get("led_pin", 2),
                "rollback": rollback,
            }
        )
        board_file.write_text(json.dumps(board, indent=1))
        if air is not None or not (self.state / "air.json").exists():
            self.set_air(air or [])
        if pty:
            self._open_pty()

    # ---- setup ----------------------------------------------------------------------------------
    @property
    def portal_url(self) -> str:
        return f"http://127.0.0.1:{self.portal_port}"

    def install_app(self, version: str | None = None, src: Path | None = None) -> None:
        """What deploying does to a real board: boot.py, main.py, config, and the compiled app - in the
        "romfs" mode as a ROMFS image in slot A of the "romfs" partition (`mpremote romfs deploy`) with
        only the boot-time modules (BOOT_MODULES) in /lib; in the "mpy" mode all of it as .mpy files in /lib (`twomes
        deploy`), the "romfs" partition erased."""
        lib = self.fs / "lib"
        shutil.rmtree(lib, ignore_errors=True)
        kw = {"src": src} if src else {}
        files = compile_tree(lib, version, **kw)
        rom = self.state / f"flash_{ROMFS_LABEL}.bin"
        if self.code == "romfs":
            _, size = self.romfs_partition()
            image = BUILD_DIR / f"romfs-{os.getpid()}-{threading.get_ident()}.img"
            build_romfs(image, version or _read_version(src), **kw)
            data = image.read_bytes()
            image.unlink()
            if len(data) > size // 2:
                raise RuntimeError(f"the ROMFS image ({len(data)} bytes) does not fit slot A ({size // 2})")
            tmp = rom.with_name(rom.name + ".tmp")
            tmp.write_bytes(data + b"\xff" * (size - len(data)))
            tmp.replace(rom)
            for f in files:  # only what the boot needs to choose a slot stays in /lib
                if f.relative_to(lib).with_suffix(".py").as_posix() not in BOOT_MODULES:
                    f.unlink()
            _prune(lib)
        else:
            rom.unlink(missing_ok=True)  # erased
        for name in ("boot.py", "main.py"):
            shutil.copyfile(REPO / name, self.fs / name)
        self.write_config()

    def romfs_partition(self) -> tuple[int, int]:
        """(offset, size) of the board's "romfs" partition."""
        for row in partition_table(self.state):
            if row[0] == ROMFS_LABEL:
                return int(row[3]), int(row[4])
        raise RuntimeError("the board's partition table has no romfs partition")

    def write_config(self, **changes: Any) -> None:
        self.config.update(changes)
        self.fs.mkdir(parents=True, exist_ok=True)
        (self.fs / "twomes.json").write_text(json.dumps(self.config, indent=1))

    def set_air(self, networks: list[dict[str, Any]]) -> None:
        tmp = self.state / "air.json.tmp"
        tmp.write_text(json.dumps(networks, indent=1))
        tmp.rename(self.state / "air.json")
        gen = self.state / "air.gen"
        self._write_state("air.gen", str(int(gen.read_text() or 0) + 1 if gen.exists() else 1))

    # ---- power ----------------------------------------------------------------------------------
    def start(self) -> VirtualBoard:
        self._stopping = False
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()
        return self

    power_on = start

    def _spawn(self) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], int]:
        """Start the hardware process, then the device process; returns both and the console's read
        end (the device's output, or its stderr with a pty console; the hardware process's too)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPY")}
        env.update({"VBOARD": str(self.state), "VBOARD_HW": str(self._hw), **self.env})
        if self.serial:
            env["VBOARD_TTY"] = "1"  # the console is a serial line: the REPL follows the app (vrepl.py)
        rom = self._rom_env()
        mp = micropython_bin()
        req_r, req_w = os.pipe()  # device -> hardware
        ans_r, ans_w = os.pipe()  # hardware -> device
        out_r, out_w = os.pipe()
        pty = self.serial.device_fd if self.serial else None
        try:
            hw = subprocess.Popen(
                [mp, "-X", f"heapsize={HW_HEAP}", str(HW_DIR / "vhwd.py")],
                cwd=self.state,
                env={**env, "VBOARD_RPC": f"{req_r} {ans_w}"},
                stdin=subprocess.DEVNULL,
                stdout=out_w if pty is None else pty,
                stderr=out_w if pty is None else pty,
                pass_fds=(req_r, ans_w),
                start_new_session=True,  # Ctrl-C in a terminal reaches the firmware, not its hardware
            )
            _LIVE.add(hw)
            try:
                dev = subprocess.Popen(
                    [mp, "-X", f"heapsize={self.heap}", str(HW_DIR / "vboot.py")],
                    cwd=self.fs,
                    env={**env, "VBOARD_RPC": f"{ans_r} {req_w}", **rom},  # rom: last (vmap.py)
                    stdin=subprocess.PIPE if pty is None else pty,
                    stdout=out_w if pty is None else pty,
                    stderr=out_w if pty is None else pty,
                    pass_fds=(ans_r, req_w),
                    start_new_session=pty is not None,  # its Ctrl-C comes from the serial line
                )
            except BaseException:
                hw.kill()
                os.close(out_r)
                raise
            _LIVE.add(dev)
        finally:
            for fd in (req_r, req_w, ans_r, ans_w, out_w):
                os.close(fd)
        return hw, dev, out_r

    def _rom_env(self) -> dict[str, str]:
        """The device process's ROMFS mappings (vboard/hw/vmap.py), which must be the environment's last
        entries: the simulation's firmware ROM (always), then the "romfs" partition (none in the "mpy"
        mode: a MicroPython build without ROMFS, as the ports ship by default)."""
        env = _map_env("VBOARD_FW", self._fw, self._fw.stat().st_size)
        if self.code != "romfs":
            return env
        try:
            _, size = self.romfs_partition()
        except RuntimeError:
            return env
        return {**env, **_map_env("VBOARD_ROM", self.state / f"flash_{ROMFS_LABEL}.bin", size)}

    def _supervise(self) -> None:
        soft: str | None = None  # after Ctrl-D in the REPL: "raw" or "friendly"
        while not self._stopping:
            if self.serial:
                self.serial.reset_line()
            self.env.pop("VBOARD_SOFT", None)
            if soft:
                self.env["VBOARD_SOFT"] = soft
            hw, proc, out = self._spawn()
            self.repl.reset()
            if self.serial:  # a soft reset in the raw REPL comes back to the raw REPL
                self.serial.attach(proc.pid, b"\x01" if soft == "raw" else b"")
            with self._lock:
                self._proc, self._hw_proc = proc, hw
                self._cpu_live = {"device": proc.pid, "hardware": hw.pid}
                self.boots += 1
            with open(out, "rb", buffering=0) as stream:
                while chunk := stream.read(4096):  # until both processes are gone
                    self._feed(chunk)
            self._bank_cpu("device", proc, None)
            rc = proc.wait()
            # it ends when the device's end of the pipes closes (within 5 s, or it is killed)
            if not self._bank_cpu("hardware", hw, 5):
                hw.kill()
            hw.wait()
            with self._lock:
                self.exit_codes.append(rc)
                self._lock.notify_all()
            if self.serial:
                self.serial.attach(None)
            soft = None
            if rc == REBOOT_EXIT and not self._stopping:
                continue
            if rc == 0 and self.repl.in_repl and not self._stopping:  # Ctrl-D (or sys.exit()) in the REPL
                soft = "raw" if self.repl.raw else "friendly"
                self.soft_resets += 1
                continue
            if not self._stopping:
                self._feed(f"\n[vboard: firmware stopped, exit code {rc}]\n".encode())
            break
        with self._lock:
            self._proc = self._hw_proc = None
            self._lock.notify_all()

    def _bank_cpu(self, role: str, proc: subprocess.Popen[bytes], timeout: float | None) -> bool:
        """Once `proc` has exited (not yet reaped: its accounting is still there), add its CPU time to
        the board's. False if it still runs after `timeout` s (not counted)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        flags = os.WEXITED | os.WNOWAIT | (0 if deadline is None else os.WNOHANG)
        used = queued = 0
        exited = True
        try:
            while os.waitid(os.P_PID, proc.pid, flags) is None:
                if deadline is not None and time.monotonic() > deadline:
                    exited = False
                    break
                time.sleep(0.005)
            else:
                used, queued = cpu_ns(proc.pid), queued_ns(proc.pid)
        except ChildProcessError:  # reaped already (by a kill at exit)
            pass
        with self._lock:
            self._cpu_done[role] += used
            self._cpu_live.pop(role, None)
            if role == "device":
                self._cpu_done["device_queued"] += queued
        return exited

    def cpu_ns(self) -> dict[str, int]:
        """CPU time (ns) the board's processes used so far, every boot: "device" (the firmware's
        process) and "hardware" (the simulated hardware's); "device_queued": the time the firmware's
        process was ready to run but waited for a CPU (the machine was busy)."""
        with self._lock:
            out = dict(self._cpu_done)
            for role, pid in self._cpu_live.items():
                out[role] += cpu_ns(pid)
                if role == "device":
                    out["device_queued"] += queued_ns(pid)
            return out

    def _feed(self, chunk: bytes) -> None:
        with self._lock:
            self.repl.see(chunk)
            self.raw += chunk
            data = self._partial + chunk
            *done, self._partial = data.split(b"\n")
            for line in done:
                text = line.decode("utf-8", "replace").rstrip("\r")
                self.lines.append(text)
                if self.echo:
                    self.echo(text)
            self._lock.notify_all()

    def power_cut(self) -> None:
        """Kill the board at once, as pulling the plug does: the hardware first (no write of it
        completes after this), then the firmware; state files stay as they are."""
        self._stopping = True
        with self._lock:
            procs = (self._hw_proc, self._proc)
        for proc in procs:
            if proc is not None:
                try:
                    proc.send_signal(signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._supervisor:
            self._supervisor.join(10)

    def stop(self) -> None:
        self.power_cut()
        if self.serial:
            self.serial.close()
        self.serial = None

    @property
    def running(self) -> bool:
        with self._lock:
            return self._proc is not None

    # ---- console --------------------------------------------------------------------------------
    def console_write(self, data: bytes) -> None:
        with self._lock:
            proc = self._proc
        if proc is None or proc.stdin is None:
            raise RuntimeError("the board is not running (or its console is a pty)")
        proc.stdin.write(data)
        proc.stdin.flush()

    def wait_for(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match[str]:
        """Wait for a console line matching ``pattern`` (regex) among lines[start:]; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._lock:
            seen = start
            while True:
                for i in range(seen, len(self.lines)):
                    m = rx.search(self.lines[i])
                    if m:
                        self.last_index = i
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (
                    self._proc is None and self._supervisor is not None and not self._supervisor.is_alive()
                ):
                    tail = "\n".join(self.lines[-15:])
                    raise TimeoutError(
                        f"no console line matching {pattern!r} within {timeout}s; last lines:\n{tail}"
                    )
                self._lock.wait(min(left, 0.2))

    def mark(self) -> int:
        """Index of the next console line (use as ``start`` of wait_for)."""
        with self._lock:
            return len(self.lines)

    # ---- button, LED, AP ------------------------------------------------------------------------
    def button(self, pressed: bool) -> None:
        self._write_state("button", "1" if pressed else "0")

    def press(self, seconds: float) -> None:
        self.button(True)
        time.sleep(seconds)
        self.button(False)

    def led(self) -> tuple[int, int]:
        """(value, number of changes so far)."""
        text = (self.state / "led").read_text().split() if (self.state / "led").exists() else ["0", "0"]
        return int(text[0]), int(text[1])

    def led_pattern(self, window: float = 1.5) -> str:
        """ "blinking", "on" or "off", observed over ``window`` seconds."""
        v0, c0 = self.led()
        time.sleep(window)
        v1, c1 = self.led()
        if c1 - c0 >= 2:
            return "blinking"
        return "on" if v1 else "off"

    def ap(self) -> dict[str, Any]:
        f = self.state / "ap.json"
        return json.loads(f.read_text()) if f.exists() else {"active": False}

    def nvs(self) -> dict[str, Any]:
        f = self.state / "nvs.json"
        return json.loads(f.read_text()) if f.exists() else {}

    def _write_state(self, name: str, text: str) -> None:
        tmp = self.state / f"{name}.tmp"
        tmp.write_text(text)
        tmp.rename(self.state / name)

    def _open_pty(self) -> None:
        self.serial = SerialLine(self._feed)
        self.pty_path = self.serial.path

    def __enter__(self) -> VirtualBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
