"""`twomes repurpose NAME`: the seed's "prepare an existing device" as one command.

1. check the board on the port really is NAME (its name comes from its Wi-Fi MAC), so the wrong
   record is never renamed;
2. rename the server record NAME to NAME-OLD (NAME-OLD-2, ... when that exists already), which keeps
   the old device's measurements apart from the new life;
3. erase: with ``--firmware FILE`` the whole flash (esptool) and a fresh MicroPython, otherwise the
   app's files and stored data (``deploy --erase``: tokens, Wi-Fi, OTA state) - then deploy the app;
4. watch the console (resetting the board) and register the device with its NEW activation token.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from twtools import deploy as dep
from twtools import term
from twtools.adminargs import AdminArgsError, add_admin_options, admin_client, server_problem
from twtools.ports import PortError, check_port, pick_port

if TYPE_CHECKING:
    from twtools.server.client import AdminClient

MAC_SCRIPT = """
import json
try:
    import network
    _w = network.WLAN(network.STA_IF)
    _w.active(True)
    _mac = ':'.join('%02X' % b for b in _w.config('mac'))
except Exception as e:
    _mac = None
_prefix = None
try:
    with open('twomes.json') as _f:
        _prefix = json.loads(_f.read()).get('name_prefix')
except Exception:
    pass
print(_MARK + json.dumps({'mac': _mac, 'prefix': _prefix}))
"""
OLD_SUFFIX = "-OLD"


class RepurposeError(Exception):
    pass


def device_name(prefix: str, mac: str) -> str:
    """The name the device code gives itself (twomes/identity.py: prefix + last 3 MAC bytes, hex)."""
    return prefix + mac.replace(":", "").upper()[-6:]


def board_identity(t: dep.Transport) -> tuple[str, str]:
    """(MAC, name) of the board, asked on its REPL."""
    data = dep.run_board_script(t, MAC_SCRIPT)
    if not data.get("mac"):
        raise RepurposeError("the board did not tell its MAC address (no network module?)")
    from twtools import devicecode

    prefix = data.get("prefix") or devicecode.config_spec()["name_prefix"][0]
    return data["mac"], device_name(prefix, data["mac"])


def esptool_mac(port: str) -> str:
    """The chip's MAC read by esptool (works whatever firmware the board runs, MicroPython or not)."""
    from twtools.flash import esptool, explain

    r = esptool(["--port", port, "read-mac"], echo=False)
    m = re.search(r"MAC:\s*([0-9a-fA-F:]{17})", r.output)
    if not r.ok or not m:
        raise RepurposeError(explain(r, port))
    return m.group(1).upper()


def old_names(name: str) -> list[str]:
    return [name + OLD_SUFFIX] + [f"{name}{OLD_SUFFIX}-{i}" for i in range(2, 10)]


def rename_old(client: AdminClient, name: str) -> str:
    """Rename NAME to the first free NAME-OLD[-n]; returns the new name."""
    from twtools.server.client import ServerError

    for new in old_names(name):
        try:
            client.rename(name, new)
            return new
        except ServerError as e:
            if e.status == 409:
                continue
            if e.status == 404:
                raise RepurposeError(
                    f"{name} is not on the server (nothing to rename); check the name"
                ) from None
            raise RepurposeError(server_problem(e, client.url) or f"rename failed: {e.detail}") from None
    raise RepurposeError(f"{name}-OLD .. {name}-OLD-9 all exist; rename one of them first")


def repurpose(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        return _repurpose(args, client)


def _repurpose(args: argparse.Namespace, client: AdminClient) -> int:
    name = args.name.strip()
    device = pick_port(args.port)
    check_port(device)
    t = dep.Mpremote(device, soft_reset=not args.no_soft_reset)
    total = 4
    # 1. is this board NAME?
    print(f"1/{total} checking that the board on {device} is {name} ...", flush=True)
    if args.force:
        print("      skipped (--force)")
    else:
        try:
            if args.firmware:
                mac = esptool_mac(device)
                board_name = device_name(args.name_prefix, mac)
            else:
                mac, board_name = board_identity(t)
        except dep.DeployError as e:
            raise RepurposeError(
                f"{e}\n(a board without MicroPython: give --firmware FILE, which reads the MAC with esptool)"
            ) from None
        if board_name != name:
            raise RepurposeError(
                f"the board on {device} is {board_name} (MAC {mac}), not {name}; nothing was changed. "
                "Connect the right board, or use --force"
            )
        print(f"      yes: MAC {mac}")
    # 2. rename on the server
    print(f"2/{total} renaming {name} on {client.url} ...", flush=True)
    try:
        new = rename_old(client, name)
    except RepurposeError:
        if not args.force:
            raise
        new = None
        print("      not renamed (see above); going on because of --force")
    if new:
        print(f"      {name} is now {new}")
    # 3. erase and put the app back
    print(f"3/{total} erasing the board ...", flush=True)
    if args.firmware:
        from twtools.flash import flash

        flash(Path(args.firmware), port=device)
        dep.deploy(device, args.config or [], erase=False, reset=False, soft_reset=not args.no_soft_reset)
    else:
        dep.deploy(device, args.config or [], erase=True, reset=False, soft_reset=not args.no_soft_reset)
    # 4. register with the new activation token
    if args.no_register:
        print(f"4/{total} skipped; to register the device, run:")
        print(f"      twomes monitor --port {device} --reset --register {client.url} --admin-token-file FILE")
        return 0
    print(f"4/{total} restarting the board and registering it with its new activation token ...", flush=True)
    from twtools.monitor import monitor, register

    return monitor(
        device,
        sys.stdout,
        registrar=lambda payload: register(client, payload),
        show_qr=True,
        timeout=args.timeout,
        exit_after_register=True,
        reset=True,
    )


def run(args: argparse.Namespace) -> int:
    from twtools.flash import FlashError

    try:
        return repurpose(args)
    except (RepurposeError, AdminArgsError, PortError, dep.DeployError, FlashError) as e:
        term.error(str(e))
        return 2


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "repurpose",
        help="prepare a used device for a new home: rename NAME to NAME-OLD, erase, deploy, register",
        description="The seed's 'prepare an existing device': the old server record is kept as NAME-OLD, "
        "the board forgets everything (tokens, Wi-Fi), and is registered again with a new activation token.",
    )
    p.add_argument("name", metavar="NAME", help="the device's current name, e.g. TWOMES-D3AD48")
    add_admin_options(p, required=True)
    p.add_argument("--port", "-p", help="serial port (default: the one ESP32 board plugged in)")
    p.add_argument(
        "--firmware",
        metavar="FILE",
        help="erase the whole flash and write this MicroPython firmware (for boards with old or broken firmware)",
    )
    p.add_argument(
        "--config", "-c", action="append", metavar="KEY=VALUE", help="twomes.json key for the deploy"
    )
    p.add_argument(
        "--name-prefix", default="TWOMES-", help="name prefix, for the esptool MAC check (default TWOMES-)"
    )
    p.add_argument(
        "--force", action="store_true", help="skip the board name check; go on if the rename fails"
    )
    p.add_argument(
        "--no-register", action="store_true", help="stop after the deploy; print the monitor command"
    )
    p.add_argument("--no-soft-reset", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--timeout", type=float, default=120.0, help="how long to wait for the activation line (s)"
    )
    p.set_defaults(func=run)
