"""How the host tools write to a person: colours only on a terminal and never with NO_COLOR set
(https://no-color.org), progress bars only on a terminal (a log gets plain lines)."""

from __future__ import annotations

import os
import sys
from typing import TextIO

_CODES = {"red": "31", "green": "32", "yellow": "33", "cyan": "36", "bold": "1"}


def colour_on(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, colour: str, stream: TextIO | None = None) -> str:
    if not colour_on(stream or sys.stdout):
        return text
    return f"\033[{_CODES[colour]}m{text}\033[0m"


def error(message: str) -> None:
    """``error: message`` on stderr (the word in red on a terminal)."""
    print(paint("error:", "red", sys.stderr), message, file=sys.stderr)


def warning(message: str) -> None:
    print(paint("warning:", "yellow", sys.stderr), message, file=sys.stderr)


def progress_on(stream: TextIO | None = None) -> bool:
    """A progress bar redraws one line: only on a terminal; in a log each step is a line instead."""
    isatty = getattr(stream or sys.stdout, "isatty", None)
    return bool(isatty and isatty())
