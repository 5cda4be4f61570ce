"""A virtual board against the reference server set up as a plain Twomes v1 server: no firmware API,
no admin API, a device type without `booted_fw`. Registered and attached the Twomes way (POST /device,
the account API), the device activates, says plainly that the server has no firmware API (its version
kept without confirmation, updates skipped), learns the type's properties from GET /device and uploads
only those: the heartbeat arrives, nothing is refused or retried forever. When someone else activates
with its token (401), it activates again and its state stays running (uploads work again at once)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from twtools.server.testing import ReferenceServer
from twtools.vboard.runner import VirtualBoard

NET = {"ssid": "Lab", "password": "12345678", "rssi": -50, "channel": 6, "join_ms": 30}


def _board(tmp_path: Path, srv: ReferenceServer, **config: object) -> VirtualBoard:
    """A board with the app, its Wi-Fi settings in NVS and the plain server's device type."""
    b = VirtualBoard(
        tmp_path / "board",
        air=[NET],
        config={"server_url": srv.url, "device_type": "Plain-Test", "retry_base_s": 1, **config},
    )
    b.install_app()
    creds = json.dumps([NET["ssid"], NET["password"]]).encode().hex()
    (b.state / "nvs.json").write_text(json.dumps({"twomes": {"wifi": ["blob", creds]}}))
    return b


def _register(b: VirtualBoard, srv: ReferenceServer) -> str:
    """The operator registers the board from its boot line (POST /device, as on Twomes) and the owner's
    app attaches it; returns that line."""
    b.wait_for(r'^\{"name":', 30)
    line = b.lines[b.last_index]
    srv.client.register_device(line)
    srv.client.attach_twomes(json.loads(line)["activation_token"])
    return line


def test_a_plain_twomes_server(tmp_path: Path) -> None:
    with ReferenceServer(
        tmp_path / "server", plain_twomes=True, device_types=["Plain-Test=heartbeat"], access_log=False
    ) as srv:
        b = _board(tmp_path, srv, heartbeat_s=5)
        try:
            b.start()
            line = _register(b, srv)
            b.wait_for(r"activate: activated; session token stored", 60)
            b.wait_for(r"kept without confirmation: the server has no firmware API", 30)
            b.wait_for(r"device type has 1 properties", 30)
            b.wait_for(r"has no property booted_fw: not sent", 30)
            b.wait_for(r"upload: 1 measurement\(s\) sent", 30)
            mark = b.mark()
            b.wait_for(r"upload: 1 measurement\(s\) sent", 30, start=mark)  # the next heartbeat too
            # someone activates with the device's token: its session is refused (401) from now on; it
            # activates again, and as soon as an upload works its state (and LED) says running again
            token = json.loads(line)["activation_token"]
            r = httpx.post(srv.url + "/device/activate", json={"activation_token": token}, timeout=10)
            assert r.status_code == 200
            mark = b.mark()
            b.wait_for(r"session token refused \(401\): activating again", 30, start=mark)
            b.wait_for(r"activate: activated; session token stored", 30, start=mark)
            b.wait_for(r"upload: 1 measurement\(s\) sent", 30, start=mark)
            states = [ln.split("state: ")[1] for ln in b.lines if "state: " in ln]
            assert states[-1].startswith("running"), states  # state and LED: running, not activating
        finally:
            b.stop()
        out = "\n".join(b.lines)
        assert "confirmed to the server" not in out and "HTTP 400" not in out
        assert "state: running" in out


def test_wifi_gone_restarts_and_opens_setup_mode_from_a_clean_heap(tmp_path: Path) -> None:
    """Running, then the network disappears for good (three rejoins fail): the app restarts (a good boot)
    instead of opening setup mode in the boot that ran the online phase - that phase's names stay in
    the heap's qstr pool and setup mode on top of them would pass its next doubling (docs/heap.md). The
    next boot tries the saved network and opens the portal; when the network is back it is joined."""
    with ReferenceServer(
        tmp_path / "server", plain_twomes=True, device_types=["Plain-Test=heartbeat"], access_log=False
    ) as srv:
        b = _board(tmp_path, srv, retry_max_s=2, heartbeat_s=5, portal_retry_s=5)
        try:
            b.start()
            _register(b, srv)
            b.wait_for(r"state: running", 60)
            boots = b.boots
            mark = b.mark()
            b.set_air([])  # the router is gone
            b.wait_for(r"state: offline - Wi-Fi gone", 60, start=mark)
            b.wait_for(r"online: Wi-Fi gone: restarting to try it again from a clean heap", 10, start=mark)
            b.wait_for(r"state: portal", 60, start=b.last_index)
            assert b.boots == boots + 1  # setup mode in a boot of its own
            mark = b.mark()
            b.set_air([NET])  # back: the portal's retry joins it, and the app restarts to go online
            b.wait_for(r"state: running", 60, start=mark)
        finally:
            b.stop()
        out = "\n".join(b.lines)
        assert "Traceback" not in out and "unexpected error" not in out, out[-3000:]
