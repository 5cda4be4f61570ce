"""A virtual board on a pty, for the serial tools' tests (mpremote, ampy, `twomes deploy`, monitor).

``serial_board(tmp, app=False)`` is a board freshly flashed with MicroPython: an empty filesystem, so
its firmware start ends in the REPL at once; ``app=True`` installs the Twomes app and waits until it
runs its setup portal (Ctrl-C from a tool then stops it, as on a chip).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from twtools.vboard.runner import VirtualBoard

FRIENDLY = r'Type "help\(\)" for more information'


@contextmanager
def serial_board(tmp: Path, app: bool = False, **kwargs: object) -> Iterator[VirtualBoard]:
    b = VirtualBoard(tmp / "state", pty=True, **kwargs)  # type: ignore[arg-type]
    if app:
        b.install_app()
    else:
        b.fs.mkdir(parents=True, exist_ok=True)
    b.start()
    try:
        b.wait_for("state: portal" if app else FRIENDLY, 60)
        yield b
    finally:
        b.stop()
