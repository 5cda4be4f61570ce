"""``python -m twtools.server COMMAND ...``: the ``twomes server`` commands without the ``twomes`` wrapper."""

from __future__ import annotations

import sys

from .cli import standalone_parser


def main(argv: list[str] | None = None) -> int:
    args = standalone_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
