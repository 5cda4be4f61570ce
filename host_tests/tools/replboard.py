"""A MicroPython REPL on a serial-like pty, for testing real mpremote/ampy without a chip.

The MicroPython unix port's interactive REPL speaks the raw REPL (Ctrl-A) and raw-paste mode, so
mpremote works against it as it does against an ESP32. What the unix port cannot do is a soft reset:
Ctrl-D in the raw REPL ends the process. This helper sits between the pty the tools open and the
MicroPython process (on a second pty): when the process ends it answers ``soft reboot`` like a board,
starts a fresh interpreter on the same directory (the board's filesystem) and, if the raw REPL was on,
enters it again - what a board does after a soft reset in raw mode.

``esp32=True`` makes ``import esp32`` and ``import network`` give the virtual board's simulated modules
(NVS in ``<state>/nvs.json``, the Wi-Fi MAC from ``<state>/board.json``), so on-board scripts that use
NVS or read the MAC run for real.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
import tty
from pathlib import Path

from twtools.vboard.runner import HW_DIR, micropython_bin

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"


class ReplBoard:
    def __init__(
        self, fs: Path, state: Path | None = None, esp32: bool = False, mac: str = "24:6F:28:D3:AD:48"
    ) -> None:
        self.fs = Path(fs)
        self.fs.mkdir(parents=True, exist_ok=True)
        self.state = Path(state) if state else self.fs.parent / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.mac = mac
        (self.state / "board.json").write_text(json.dumps({"mac": mac, "air": "air.json"}))
        (self.state / "air.json").write_text("[]")
        self.esp32 = esp32
        self.boots = 0
        self.resets = 0
        self._raw = False
        self._stop = threading.Event()
        outer_master, outer_slave = os.openpty()
        tty.setraw(outer_slave)
        self._outer, self._outer_slave = outer_master, outer_slave
        self.port = os.ttyname(outer_slave)
        self._proc: subprocess.Popen[bytes] | None = None
        self._inner: int | None = None
        self._spawn(raw=False)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _spawn(self, raw: bool) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPY")}
        cmd = [micropython_bin(), "-X", "heapsize=2M", "-i"]
        if self.esp32:
            env.update({"VBOARD": str(self.state), "VBOARD_HW": str(HW_DIR)})
            cmd += [
                "-c",
                f"import sys; sys.path.insert(0, {str(HW_DIR)!r}); import vesp32, vnetwork; "
                "sys.modules['esp32'] = vesp32; sys.modules['network'] = vnetwork; sys.path.pop(0)",
            ]
        self._proc = subprocess.Popen(cmd, cwd=self.fs, env=env, stdin=master, stdout=master, stderr=master)
        os.close(master)
        self._inner = slave
        self.boots += 1
        self._suppress = raw
        if raw:
            os.write(slave, b"\r\x01")

    def _pump(self) -> None:
        pending = b""
        while not self._stop.is_set():
            assert self._inner is not None and self._proc is not None
            ready, _, _ = select.select([self._outer, self._inner], [], [], 0.05)
            if self._outer in ready:
                data = os.read(self._outer, 4096)
                for b in data:
                    if b == 1:
                        self._raw = True
                    elif b == 2:
                        self._raw = False
                try:
                    os.write(self._inner, data)
                except OSError:
                    pass
            if self._inner in ready:
                try:
                    data = os.read(self._inner, 4096)
                except OSError:  # the interpreter ended and its pty closed
                    data = b""
                if self._suppress:  # after a soft reset: hide the banner until the raw REPL is back
                    pending += data
                    i = pending.find(RAW_BANNER)
                    if i >= 0:
                        data, pending, self._suppress = pending[i:], b"", False
                    else:
                        data = b""
                if data:
                    os.write(self._outer, data)
            if self._proc.poll() is not None:
                time.sleep(0.02)
                self._drain()
                os.close(self._inner)
                self.resets += 1
                os.write(self._outer, b"MPY: soft reboot\r\n")
                self._spawn(raw=self._raw)

    def _drain(self) -> None:
        assert self._inner is not None
        while True:
            ready, _, _ = select.select([self._inner], [], [], 0)
            if not ready:
                return
            try:
                data = os.read(self._inner, 4096)
            except OSError:
                return
            if not data:
                return
            if not self._suppress:
                os.write(self._outer, data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._inner, self._outer, self._outer_slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> ReplBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
