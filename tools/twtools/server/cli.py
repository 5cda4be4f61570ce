"""`twomes server ...`: run the reference server, print its OpenAPI document, administer it.

Admin commands talk to a running server through :class:`~twtools.server.client.AdminClient`; they take
``--url`` / ``--admin-token`` (or the environment variables ``TWOMES_URL`` / ``TWOMES_ADMIN_TOKEN``).
Server errors are printed as ``error: <the server's detail>`` with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import AdminClient

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_DB = Path("var/server/twomes.sqlite3")
DEFAULT_FILES = Path("var/server/files")
DEFAULT_MAX_UPLOAD = 128 * 1024 * 1024
URL_LINE = "Twomes reference server: "
TOKEN_LINE = "admin token: "


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``server`` and its subcommands to the ``twomes`` command line."""
    parser = subparsers.add_parser(
        "server",
        help="reference provisioning server (run it, print its API, administer it)",
        description="Run the Twomes reference server, print its OpenAPI document, administer it "
        "(admin commands: --url/$TWOMES_URL, --admin-token/$TWOMES_ADMIN_TOKEN).",
    )
    add_commands(parser)


def standalone_parser() -> argparse.ArgumentParser:
    """The same commands as ``twomes server``, for ``python -m twtools.server``."""
    parser = argparse.ArgumentParser(prog="python -m twtools.server", description="Twomes reference server.")
    add_commands(parser)
    return parser


def add_commands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="server_command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run the server (127.0.0.1 by default)")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    run.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help=f"SQLite database file (default {DEFAULT_DB})"
    )
    run.add_argument(
        "--files", type=Path, default=DEFAULT_FILES, help=f"firmware store (default {DEFAULT_FILES})"
    )
    run.add_argument(
        "--admin-token-file",
        type=Path,
        help="on first start, also write the admin token to this file (mode 0600)",
    )
    run.add_argument(
        "--max-upload", type=_size, default=DEFAULT_MAX_UPLOAD, help="largest firmware file in bytes"
    )
    run.add_argument(
        "--secret-file",
        type=Path,
        help="server secret that keys the activation-token hashes (default: the --db path + .secret; "
        "made on first start, mode 0600; keep it apart from database backups)",
    )
    run.add_argument(
        "--min-token-length",
        type=int,
        default=16,
        help="shortest activation token accepted for a new registration (default 16, what the device "
        "prints; 8 accepts devices of the Twomes generic firmware)",
    )
    run.add_argument(
        "--activation-rate-address",
        type=_rate,
        default="30/2",
        metavar="BURST/SECONDS",
        help="failed activation attempts per client address (default 30/2: 30 at once, then one per 2 s)",
    )
    run.add_argument(
        "--activation-rate-device",
        type=_rate,
        default="10/6",
        metavar="BURST/SECONDS",
        help="activations per device (default 10/6)",
    )
    run.add_argument(
        "--max-connections", type=int, default=1000, help="open connections at most (default 1000)"
    )
    run.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds to receive a request head (default 10)",
    )
    run.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds to receive a request body (firmware upload: seconds without progress; default 30)",
    )
    run.add_argument(
        "--send-timeout",
        type=float,
        default=60.0,
        help="seconds a client may leave its response unread (default 60)",
    )
    run.add_argument(
        "--no-firmware-api",
        action="store_true",
        help="no firmware API (as a plain Twomes server: /device/firmware/... is 404 without the marker)",
    )
    run.add_argument("--no-admin-api", action="store_true", help="no /admin/ API (as a plain Twomes server)")
    run.add_argument(
        "--device-type",
        action="append",
        default=[],
        type=_device_type,
        metavar="NAME=PROP[:UNIT],...",
        help="create this device type at start if missing (repeatable), e.g. Plain-Test=heartbeat,temperature:C",
    )
    run.add_argument(
        "--sync-interval",
        type=_sync_interval,
        metavar="SECONDS",
        help="bounded-loss durability: commits do not wait for the disk, the database is fsynced at "
        "most every SECONDS (0 < SECONDS <= 60), so a power loss of the server can lose the last "
        "SECONDS of answered writes (a crash of the process loses nothing). Default: every answered "
        "write is on disk before its answer",
    )
    run.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    run.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    run.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    run.add_argument(
        "--tls",
        action="store_true",
        help="serve https with a local CA and a certificate for localhost/127.0.0.1/::1 (made once in "
        "--tls-dir and kept; `twomes server ca` exports the CA for the devices)",
    )
    run.add_argument("--tls-dir", type=Path, help="TLS files (default: tls/ next to --db)")
    run.add_argument("--watch-parent", type=int, metavar="PID", help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    ca = sub.add_parser(
        "ca",
        help="export the local CA certificate (DER) that devices trust for `server run --tls`",
        description="Write the reference server's local CA certificate in DER (the device's ca_file) to "
        "--out (default: stdout must not be a terminal). The CA is made if it does not exist yet.",
    )
    ca.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help=f"the server's database (default {DEFAULT_DB})"
    )
    ca.add_argument("--tls-dir", type=Path, help="TLS files (default: tls/ next to --db)")
    ca.add_argument("--out", "-o", type=Path, help="write the DER file here (e.g. ca.der)")
    ca.add_argument("--pem", action="store_true", help="PEM instead of DER (for curl --cacert and browsers)")
    ca.set_defaults(func=cmd_ca)

    openapi = sub.add_parser("openapi", help="print the OpenAPI document (JSON)")
    openapi.set_defaults(func=cmd_openapi)

    from . import fuzz

    fuzz.add_parser(sub)

    def admin(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--url", default=os.environ.get("TWOMES_URL", DEFAULT_URL), help="server URL ($TWOMES_URL)"
        )
        p.add_argument(
            "--admin-token",
            default=os.environ.get("TWOMES_ADMIN_TOKEN"),
            help="admin token ($TWOMES_ADMIN_TOKEN)",
        )
        p.add_argument("--admin-token-file", type=Path, help="read the admin token from this file")
        p.add_argument("--json", action="store_true", help="print the server's JSON answer")
        p.set_defaults(func=func)
        return p

    p = admin("register", "register a device from the activation JSON it prints", cmd_register)
    p.add_argument(
        "source", metavar="FILE_OR_JSON", help="JSON text, a file holding it (a boot log will do), or -"
    )
    p.add_argument(
        "--attach",
        action="store_true",
        help="also attach it to an owner account through the Twomes account API (any Twomes server)",
    )
    p.add_argument("--account-token", help="attach to this account (its session token) instead of a new one")

    p = admin("account", "create an owner account (prints its session token)", cmd_account)
    p.add_argument("name")

    p = admin(
        "attach",
        "attach a device to an owner account (a new one if none given). With the device's activation token "
        "(--activation-token, or the activation JSON / boot log as NAME) it uses the Twomes account API and "
        "works with any Twomes server; with a name alone it uses this server's admin API",
        cmd_attach,
    )
    p.add_argument(
        "name", metavar="NAME_OR_JSON", help="device name, or its activation JSON / a boot log file"
    )
    p.add_argument("--activation-token", help="the device's activation token (Twomes account API)")
    p.add_argument("--account-token", help="Twomes API: attach to this account (its session token)")
    p.add_argument("--account-id", type=int, help="admin API: attach to this account id")

    p = admin("publish", "publish a firmware release", cmd_publish)
    p.add_argument("file", type=Path)
    p.add_argument("--version", required=True)
    p.add_argument("--kind", required=True, choices=["bundle", "image"])
    p.add_argument("--device-type", default="Generic-Test")
    p.add_argument("--target", action="store_true", help="also make it the device type's target")
    from twtools.keys import add_signing_options

    add_signing_options(p)
    p.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help="a manifest signed elsewhere (its exact text; with --signature FILE holding the hex signature)",
    )
    p.add_argument("--signature", type=Path, metavar="FILE", help="hex signature of --manifest")

    p = admin("target", "set (or clear) the target release of a device type or of one device", cmd_target)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--release-id", type=int)
    which.add_argument("--clear", action="store_true", help="no target")
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--device-type")
    scope.add_argument("--device", metavar="NAME")

    admin("devices", "list devices", cmd_devices)

    p = admin("device", "show one device", cmd_device)
    p.add_argument("name")

    p = admin("measurements", "list a device's measurements (newest last)", cmd_measurements)
    p.add_argument("name")
    p.add_argument("--limit", type=int, help="only the newest N")

    admin("releases", "list firmware releases", cmd_releases)

    p = admin("rename", "rename a device (repurposing: NAME -> NAME-OLD)", cmd_rename)
    p.add_argument("name")
    p.add_argument("new_name", metavar="NEWNAME")

    admin("token", "create another admin token", cmd_token)

    admin("tokens", "list the admin tokens (ids and dates; the values are never stored)", cmd_tokens)

    p = admin("revoke-token", "revoke an admin token (not the one in use)", cmd_revoke_token)
    p.add_argument("token_id", type=int, metavar="ID")

    admin("accounts", "list owner accounts", cmd_accounts)

    p = admin("revoke-account-token", "revoke an account's session token", cmd_revoke_account_token)
    p.add_argument("account_id", type=int, metavar="ACCOUNT_ID")

    p = admin(
        "renew-account-token", "give an account a new session token (prints it)", cmd_renew_account_token
    )
    p.add_argument("account_id", type=int, metavar="ACCOUNT_ID")


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    factor = units.get(t[-1:], 1) if t else 1
    number = t[:-1] if t[-1:] in units else t
    try:
        value = int(number) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (bytes, or with K/M/G)") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 byte")
    return value


def _device_type(text: str) -> Any:
    from .app import DeviceTypeSpec

    try:
        return DeviceTypeSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rate(text: str) -> Any:
    from .ratelimit import Rate

    try:
        return Rate.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sync_interval(text: str) -> float:
    from .db import MAX_SYNC_INTERVAL

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_SYNC_INTERVAL:  # also NaN
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {MAX_SYNC_INTERVAL:g} seconds, not {text!r}"
        )
    return value


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


# ------------------------------------------------------------------------------------------- run


def _is_loopback(host: str) -> bool:
    import ipaddress
    import socket

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, path)


def cmd_run(args: argparse.Namespace) -> int:
    if not args.allow_remote and not _is_loopback(args.host):
        return _error(
            f"refusing to listen on {args.host}: not a loopback address (add --allow-remote to expose the server)"
        )
    if not 0 <= args.port <= 65535:
        return _error(f"bad port {args.port}")

    import socket

    import uvicorn

    from .app import create_app
    from .db import SchemaError, SecretError
    from .guard import ConnectionLimits, guarded_protocol

    try:
        limits = ConnectionLimits(
            max_connections=_max_connections(args.max_connections),
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            send_timeout=args.send_timeout,
        )
    except ValueError as exc:
        return _error(str(exc))
    # Everything the server writes (database, secret, release files, token file) is private to the user.
    os.umask(0o077)
    _configure_logging(args.log_level)
    # Listen first: if the port is taken, nothing is created (a first admin token is never lost).
    try:
        family, kind, proto, _, address = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        return _error(f"cannot listen on {args.host}:{args.port}: {exc}")
    try:
        _make_private(args.db, args.secret_file)
        app = create_app(
            args.db,
            args.files,
            max_upload=args.max_upload,
            secret_path=args.secret_file,
            min_token_length=args.min_token_length,
            address_rate=args.activation_rate_address,
            device_rate=args.activation_rate_device,
            firmware_api=not args.no_firmware_api,
            admin_api=not args.no_admin_api,
            device_types=args.device_type,
            sync_interval=args.sync_interval,
        )
    except (SchemaError, SecretError, OSError, ValueError) as exc:
        sock.close()
        return _error(str(exc))
    token: str | None = app.state.initial_admin_token
    if token is not None and args.admin_token_file is not None:
        _write_secret(args.admin_token_file, token)
    elif args.admin_token_file is not None and not args.admin_token_file.exists():
        print(
            f"note: {args.db} already has admin tokens, so {args.admin_token_file} was not written "
            "(`twomes server token` makes a new one)",
            file=sys.stderr,
        )
    ssl_files: dict[str, str] = {}
    if args.tls:
        from twtools.tls import server_files

        files = server_files(tls_dir(args))
        ssl_files = {"ssl_certfile": str(files.certfile), "ssl_keyfile": str(files.keyfile)}
        print(f"TLS: certificate {files.certfile}; devices trust the CA {files.ca_der}", flush=True)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"{URL_LINE}{'https' if args.tls else 'http'}://{shown}:{port}", flush=True)
    if token is not None:
        print(f"{TOKEN_LINE}{token}", flush=True)

    if args.watch_parent:
        _exit_with_parent(args.watch_parent)
    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        timeout_graceful_shutdown=5,
        server_header=False,
        **ssl_files,  # type: ignore[arg-type]
        http=guarded_protocol(limits),
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        app.state.db.close()  # the final sync (done already if the lifespan ended cleanly)
    return 0


def tls_dir(args: argparse.Namespace) -> Path:
    return Path(args.tls_dir) if args.tls_dir else Path(args.db).parent / "tls"


def cmd_ca(args: argparse.Namespace) -> int:
    from twtools.tls import cert_pem, ensure_ca

    ca = ensure_ca(tls_dir(args))
    d = tls_dir(args)
    data = cert_pem(ca.cert) if args.pem else (d / "ca.der").read_bytes()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(data)
        print(f"wrote {args.out} ({'PEM' if args.pem else 'DER'}, {len(data)} bytes): the CA of {d}")
        return 0
    if sys.stdout.isatty() and not args.pem:
        return _error("DER is binary: give --out FILE (or --pem)")
    sys.stdout.buffer.write(data)
    return 0


def _max_connections(wanted: int) -> int:
    """``wanted``, after raising the soft file-descriptor limit as far as allowed; lowered (with a note)
    when the descriptors would not suffice (each connection takes one, plus the database and files)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    room = soft - 64 if soft != resource.RLIM_INFINITY else wanted
    if wanted > room:
        print(f"note: --max-connections lowered to {max(1, room)} (open-file limit {soft})", file=sys.stderr)
        return max(1, room)
    return wanted


def _make_private(db: Path, secret_file: Path | None) -> None:
    """Existing server files readable by others (made by an older version) are made private."""
    import stat

    paths = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    paths.append(secret_file if secret_file is not None else db.with_name(db.name + ".secret"))
    for path in paths:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(path, stat.S_IMODE(mode) & 0o700)


def _configure_logging(level: str) -> None:
    """The server's own messages, formatted like uvicorn's (``WARNING:  ...``) on stderr."""
    import logging

    from uvicorn.logging import DefaultFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s", use_colors=False))
    logger = logging.getLogger("twtools.server")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def _exit_with_parent(parent: int) -> None:
    """Stop gracefully (SIGTERM to ourselves) once process ``parent`` is gone (test harness runs)."""
    import signal
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def cmd_openapi(args: argparse.Namespace) -> int:
    from .app import openapi_json

    sys.stdout.write(openapi_json())
    return 0


# ---------------------------------------------------------------------------------------- admin


def _client(args: argparse.Namespace) -> AdminClient:
    from .client import AdminClient

    token = args.admin_token
    if args.admin_token_file is not None:
        token = args.admin_token_file.read_text().strip()
    if not token:
        raise _UsageError(
            "no admin token: pass --admin-token or --admin-token-file, or set TWOMES_ADMIN_TOKEN"
        )
    return AdminClient(args.url, token)


class _UsageError(Exception):
    pass


def _admin_call(args: argparse.Namespace, action: Callable[[AdminClient], Any]) -> int:
    import httpx

    from .client import ServerError

    try:
        with _client(args) as client:
            action(client)
    except _UsageError as exc:
        return _error(str(exc))
    except OSError as exc:
        return _error(str(exc))
    except ServerError as exc:
        return _error(exc.detail)
    except httpx.HTTPError as exc:
        return _error(f"cannot talk to the server at {args.url}: {exc}")
    return 0


def _show(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def activation_payload(text: str) -> dict[str, Any]:
    """The ``{"name", "device_type", "activation_token"}`` object in ``text`` (plain JSON or a boot log)."""
    keys = {"name", "device_type", "activation_token"}
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        return whole
    decoder = json.JSONDecoder()
    found: dict[str, Any] | None = None
    index = text.find("{")
    while index != -1:
        try:
            obj, end = decoder.raw_decode(text, index)
        except ValueError:
            index = text.find("{", index + 1)
            continue
        if isinstance(obj, dict) and keys <= obj.keys():
            found = obj
        index = text.find("{", end)
    if found is None:
        raise ValueError('no JSON object with "name", "device_type" and "activation_token" found')
    return found


def cmd_register(args: argparse.Namespace) -> int:
    source: str = args.source
    try:
        if source == "-":
            text = sys.stdin.read()
        elif source.lstrip().startswith("{"):
            text = source
        else:
            text = Path(source).read_text(errors="replace")
        payload = activation_payload(text)
    except (OSError, ValueError) as exc:
        return _error(str(exc))

    def action(client: AdminClient) -> None:
        device = client.register_device(payload)
        _show(args, device, f"registered {device['name']} ({device['device_type']['name']})")
        if args.attach:
            _twomes_attach(args, client, str(payload["activation_token"]))

    return _admin_call(args, action)


def cmd_account(args: argparse.Namespace) -> int:
    def action(client: AdminClient) -> None:
        account = client.create_account(args.name)
        _show(
            args,
            account,
            f"account {account['id']} {account['name']!r}\nsession token: {account['session_token']}",
        )

    return _admin_call(args, action)


def _twomes_attach(args: argparse.Namespace, client: AdminClient, activation_token: str) -> None:
    device, account, account_token = client.attach_twomes(activation_token, args.account_token)
    if account is None:
        text = f"attached {device['name']} to the given account"
    else:
        text = (
            f"attached {device['name']} to new account {account['id']} (pseudonym {account['pseudonym']})\n"
            f"account session token: {account_token}"
        )
    _show(args, {"device": device, "account": account, "account_session_token": account_token}, text)


def cmd_attach(args: argparse.Namespace) -> int:
    from .client import ServerError

    name: str = args.name
    token: str | None = args.activation_token
    if token is None and (name.lstrip().startswith("{") or name == "-" or Path(name).is_file()):
        try:
            text = (
                sys.stdin.read()
                if name == "-"
                else name
                if name.lstrip().startswith("{")
                else Path(name).read_text(errors="replace")
            )
            payload = activation_payload(text)
        except (OSError, ValueError) as exc:
            return _error(str(exc))
        name, token = str(payload.get("name", "")), str(payload.get("activation_token", ""))
    if token is not None and args.account_id is not None:
        return _error("--account-id is for the admin API; with an activation token use --account-token")

    def action(client: AdminClient) -> None:
        if token is not None:
            _twomes_attach(args, client, token)
            return
        try:
            device = client.attach(name, args.account_id)
        except ServerError as exc:
            if exc.status == 404 and exc.detail == "Not Found":
                raise ServerError(
                    404,
                    "this server has no admin API (a plain Twomes server): give the device's activation token "
                    "(--activation-token, or its activation JSON / boot log) to attach it through the Twomes "
                    "account API",
                ) from None
            raise
        _show(args, device, f"attached {device['name']} to account {device['account_id']}")

    return _admin_call(args, action)


def cmd_publish(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        return _error(f"{args.file}: no such file")
    from twtools import keys

    manifest = signature = None
    try:
        key = keys.signing_from_args(args)
        if key is not None:
            if args.manifest or args.signature:
                return _error("give either --key/--counter or --manifest/--signature, not both")
            manifest, signature = keys.sign_file(
                key, args.file, args.device_type, args.kind, args.version, args.counter
            )
        elif args.manifest or args.signature:
            if not (args.manifest and args.signature):
                return _error("--manifest and --signature go together")
            manifest = args.manifest.read_text().strip()
            signature = args.signature.read_text().strip()
    except keys.SigningError as e:
        return _error(str(e))
    except OSError as e:
        return _error(f"{e.filename}: {e.strerror}")

    def action(client: AdminClient) -> None:
        release = client.publish(args.file, args.version, args.kind, args.device_type, manifest, signature)
        text = (
            f"published release {release['id']}: {release['device_type']} {release['version']} "
            f"({release['kind']}, {release['size']} bytes, sha256 {release['sha256']}, "
            f"{'signed' if release.get('signature') else 'unsigned'})"
        )
        data: Any = release
        if args.target:
            device_type = client.set_type_target(release["device_type"], release["id"])
            text += f"\ntarget of {device_type['name']}: release {release['id']}"
            data = {"release": release, "device_type": device_type}
        _show(args, data, text)

    return _admin_call(args, action)


def cmd_target(args: argparse.Namespace) -> int:
    release_id: int | None = None if args.clear else args.release_id
    what = "none" if release_id is None else f"release {release_id}"

    def action(client: AdminClient) -> None:
        if args.device_type is not None:
            result: Any = client.set_type_target(args.device_type, release_id)
            _show(args, result, f"target of device type {result['name']}: {what}")
        else:
            result = client.set_device_target(args.device, release_id)
            _show(args, result, f"target of device {result['name']}: {what}")

    return _admin_call(args, action)


def _device_line(d: dict[str, Any]) -> str:
    target = d["target"]
    target_text = f"{target['version']} (#{target['id']}, {d['target_source']})" if target else "-"
    return (
        f"{d['name']:<20} {d['device_type']:<16} {d['state']:<10} {d['installed_version'] or '-':<12} "
        f"{target_text:<28} {d['last_seen'] or '-'}"
    )


def cmd_devices(args: argparse.Namespace) -> int:
    def action(client: AdminClient) -> None:
        devices = client.devices()
        header = f"{'NAME':<20} {'TYPE':<16} {'STATE':<10} {'INSTALLED':<12} {'TARGET':<28} LAST SEEN"
        lines = [header] + [_device_line(dict(d)) for d in devices]
        _show(args, devices, "\n".join(lines) if devices else "no devices")

    return _admin_call(args, action)


def cmd_device(args: argparse.Namespace) -> int:
    def action(client: AdminClient) -> None:
        device = client.device(args.name)
        print(json.dumps(device, indent=2))

    return _admin_call(args, action)


def cmd_measurements(args: argparse.Namespace) -> int:
    def action(client: AdminClient) -> None:
        rows = client.measurements(args.name, args.limit)
        text = "\n".join(f"{m['timestamp']}  {m['property_name']:<16} {m['value']}" for m in rows)
        _show(args, rows, text or "no measurements")

    return _admin_call(args, action)


def cmd_releases(args: argparse.Namespace) -> int:
    def action(client: AdminClient) -> None:
        rows = client.releases()
        text = "\n".join(
            f"#{r['id']:<4} {r['device_type']:<16} {r['version']:<12} {r['kind']:<6} {r['size']:>10}  {r['sha256']}"
            for r in rows
        )
        _show(args, rows, text or "no releases")

    return _admin_call(args, action)


def cmd_rename(args: argparse.Namespace) -> int:
    def action(client: AdminClient) -> None:
        device = client.rename(args.name, args.new_name)
        _show(args, device, f"renamed {args.name} to {device['name']}")

    return _admin_call(args, action)


def cmd_token(args: argparse.Namespace) -> int:
    def action(client: AdminClient) -> None:
        token = client.create_token()
        _show(args, {"token": token}, token)

    return _admin_call(args, action)


def cmd_tokens(args: argparse.Namespace) -> int:
    def action(client: AdminClient) -> None:
        rows = client.tokens()
        lines = [f"{'ID':<6} {'CREATED':<34} REVOKED"] + [
            f"{t['id']:<6} {t['created_on']:<34} {t['revoked_on'] or '-'}{'  (this one)' if t['current'] else ''}"
            for t in rows
        ]
        _show(args, rows, "\n".join(lines))

    return _admin_call(args, action)


def cmd_revoke_token(args: argparse.Namespace) -> int:
    def action(client: AdminClient) -> None:
        entry = client.revoke_token(args.token_id)
        _show(args, entry, f"admin token {entry['id']} revoked ({entry['revoked_on']})")

    return _admin_call(args, action)


def cmd_accounts(args: argparse.Namespace) -> int:
    def action(client: AdminClient) -> None:
        rows = client.accounts()
        lines = [f"{'ID':<6} {'NAME':<30} {'DEVICES':>7}  TOKEN"] + [
            f"{a['id']:<6} {a['name'][:30]:<30} {a['devices']:>7}  "
            f"{'revoked ' + a['token_revoked_on'] if a['token_revoked_on'] else 'valid'}"
            for a in rows
        ]
        _show(args, rows, "\n".join(lines) if rows else "no accounts")

    return _admin_call(args, action)


def cmd_revoke_account_token(args: argparse.Namespace) -> int:
    def action(client: AdminClient) -> None:
        entry = client.revoke_account_token(args.account_id)
        _show(args, entry, f"session token of account {entry['id']} revoked ({entry['token_revoked_on']})")

    return _admin_call(args, action)


def cmd_renew_account_token(args: argparse.Namespace) -> int:
    def action(client: AdminClient) -> None:
        account = client.renew_account_token(args.account_id)
        _show(
            args,
            account,
            f"account {account['id']} {account['name']!r}\nsession token: {account['session_token']}",
        )

    return _admin_call(args, action)
