"""`twomes`: one command line for the whole job (server, virtual board, real boards).

Each subcommand lives in its own module exposing ``add_parser(subparsers)``; the parser it adds sets
``func`` (called with the parsed arguments, returns the exit code). Heavy imports stay inside ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from twtools import __version__

# Order is the order of `twomes --help`.
_MODULES = [
    "twtools.sim",
    "twtools.heapbench",
    "twtools.bench",
    "twtools.server.cli",
    "twtools.ports",
    "twtools.flash",
    "twtools.deploy",
    "twtools.monitor",
    "twtools.repurpose",
    "twtools.release",
    "twtools.keys",
    "twtools.provision",
    "twtools.powercut",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twomes",
        description="Provision, flash, simulate and serve Twomes MicroPython devices.",
        epilog="Exit status: 0 done, 1 failed, 2 wrong usage (or a problem with the given port or file).",
    )
    parser.add_argument("--version", action="version", version=f"twomes {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
