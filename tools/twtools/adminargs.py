"""Server options shared by the board commands that talk to a Twomes server (monitor --register,
repurpose, release), and server errors in plain words. Same environment variables as
``twomes server``: TWOMES_URL and TWOMES_ADMIN_TOKEN."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twtools.server.client import AdminClient


class AdminArgsError(Exception):
    pass


def add_admin_options(
    p: argparse.ArgumentParser, server_flag: str | None = "--server", required: bool = False
) -> None:
    """``--server URL`` (or ``$TWOMES_URL``; ``server_flag=None``: the caller has its own URL option),
    ``--admin-token``/``--admin-token-file`` (or ``$TWOMES_ADMIN_TOKEN``)."""
    default = os.environ.get("TWOMES_URL")
    if server_flag:
        p.add_argument(
            server_flag,
            dest="server",
            metavar="URL",
            default=default,
            required=required and not default,
            help="Twomes server URL ($TWOMES_URL)",
        )
    p.add_argument(
        "--admin-token",
        default=os.environ.get("TWOMES_ADMIN_TOKEN"),
        help="admin token ($TWOMES_ADMIN_TOKEN; prefer --admin-token-file: a command line is visible to others)",
    )
    p.add_argument("--admin-token-file", type=Path, help="read the admin token from this file")


def admin_client(args: argparse.Namespace) -> AdminClient:
    from twtools.server.client import AdminClient

    if not args.server:
        raise AdminArgsError("no server: pass --server URL or set TWOMES_URL")
    token = args.admin_token
    if args.admin_token_file is not None:
        try:
            token = args.admin_token_file.read_text().strip()
        except OSError as e:
            raise AdminArgsError(f"cannot read the admin token file: {e}") from None
    if not token:
        raise AdminArgsError(
            "no admin token: pass --admin-token-file or --admin-token, or set TWOMES_ADMIN_TOKEN"
        )
    return AdminClient(args.server, token, timeout=20.0)


def server_problem(exc: BaseException, url: str) -> str | None:
    """Plain words for a server/transport error that is the same for every call (auth, network)."""
    import httpx

    from twtools.server.client import ServerError

    if isinstance(exc, ServerError):
        if exc.status == 401:
            return f"the server at {url} rejected the admin token ({exc.detail})"
        if exc.status == 403:
            return f"the server at {url} refused: {exc.detail} (is the admin token set?)"
        return None
    if isinstance(exc, httpx.HTTPError):
        return f"cannot reach the server at {url}: {exc}"
    return None
