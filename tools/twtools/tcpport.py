"""Free TCP ports on 127.0.0.1 for servers that tests and tools start a moment later (a virtual board's
portal and DNS, gooseBit, a bench's portal)."""

from __future__ import annotations

import itertools
import os
import socket

# Under pytest-xdist (`make test`) each worker takes its ports from a range of its own below the
# kernel's ephemeral range (32768-60999 by default): between the check here and the server's own bind
# no other worker can pick the same port, and no client socket's ephemeral port can take it either.
_BASE = 20000
_SPAN = 2000
_WORKERS = 6
_next = itertools.count()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody holds now: from this pytest-xdist worker's own range, else
    the kernel's choice (bind to port 0)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker[:2] == "gw" and worker[2:].isdigit():
        base = _BASE + int(worker[2:]) % _WORKERS * _SPAN
        for _ in range(_SPAN):
            port = base + next(_next) % _SPAN
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue  # held, or in TIME_WAIT after an earlier test: the next one
                return port
        raise RuntimeError(f"no free port in {base}..{base + _SPAN - 1} (pytest-xdist worker {worker})")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
