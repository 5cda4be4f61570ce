"""Power cuts at every durable write of the device's other durable flows (not updates).

`twtools.powercut` cuts the power during firmware updates. This module does the same for every other
flow that changes durable state, with the same machinery (``VBOARD_TRACE`` to record the durable writes
of a run, ``VBOARD_CUT=<boot>:<n>`` to kill the board at one of them; ``vboard/hw/vcut.py``):

==============  ==========================================  =================================================
flow            what the run does                           invariant after the power comes back
==============  ==========================================  =================================================
first-boot      a new board boots for the first time        every activation line ever printed names the token
                (activation token and AP secret made)       NVS keeps (exactly one token survives); the AP
                                                            password printed is the one NVS's secret gives
activation      a registered, attached board activates      a session the server accepts is in NVS, the
                                                            activation token is unchanged, an upload arrives
wifi-portal     the phone's app posts a new network to      NVS holds the old network or the new one, never
                POST /api/wifi; the device joins, stores    one's name with the other's password; the device
                it, restarts and goes online                is joined (uploads) or in the portal, and a
                                                            second POST from the portal then gets it online
wifi-improv     the same over Improv serial (a pty), on     as wifi-portal (the second try over Improv too)
                a device with firmware <= 1.0's two items
rotation        someone activates with the device's         the device re-activates: a session the server
                token; the device gets 401, activates       accepts is in NVS, no activation line, an upload
                again and uploads                           arrives
forget-wifi     the button held past hold_wifi_s            the old credentials are intact (device joined,
                                                            uploading) or gone (device in the portal);
                                                            identity and session kept either way
factory-reset   the button held past hold_factory_s         all or nothing: the old token, session and network
                                                            (running) or a new token, none of them (portal);
                                                            never a session without the activation token it
                                                            came from; a device left without a session prints
                                                            its activation line before it activates/uploads
update-fails    the target's file fails its sha256 after    the old version runs, confirmed; no more failures
                the download (three tries, then given up),  counted than happened; given up only after three
                from a device whose previous target was     failed attempts, or (a cut cost a count: a fourth
                given up (fw_fail 3)                       attempt) in safe mode; at most four attempts
update-          a bundle that resets the board as it       the bad version never runs; the old one runs,
unconfirmed     starts: otaboot rolls it back, the app      confirmed; no more failures counted than rollbacks
                counts the failure (same start as above)    happened
==============  ==========================================  =================================================

For each flow: templates (one per board identity, one per worker), a calibration run that records the
flow's durable writes (those after the flow's trigger: the button released, the POST sent, the
server's session revoked), then one run per chosen write: a fresh copy of the template, cut there,
powered on again, checked. ``twomes powercut --flows ...`` prints ``cuts=N recovered=M`` per flow.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from twtools.build import read_version
from twtools.powercut import (
    CONFIG,
    Broken,
    Result,
    cut_and_judge,
    device_name,
    guarded,
    log_cut,
    pick,
    pool,
    summary,
    tally,
)
from twtools.vboard.runner import VirtualBoard

FLOWS = (
    "first-boot",
    "activation",
    "wifi-portal",
    "wifi-improv",
    "rotation",
    "forget-wifi",
    "factory-reset",
    "update-fails",
    "update-unconfirmed",
)
MACS = ("24:6F:28:C0:8C:01", "24:6F:28:C0:8C:02", "24:6F:28:C0:8C:03", "24:6F:28:C0:8C:04")
OLD_NET = {"ssid": "Old lab", "password": "the old password", "rssi": -55, "join_ms": 30}
NEW_NET = {"ssid": "New lab", "password": "a new pass phrase", "rssi": -50, "join_ms": 30}
FLOW_CONFIG = {
    **CONFIG,
    "wifi_timeout_s": 5,
    "portal_retry_s": 3600,  # no retries of the saved network while the portal is up: no extra writes
    "hold_wifi_s": 1,  # the button's long and very long presses, short: a run takes seconds
    "hold_factory_s": 2,
}
RUN_TIMEOUT = 60.0
SETTLE = r"state: (running|portal|waiting)"
ACT_LINE = re.compile(r'^\{"name":.*"activation_token":"(\d+)"\}$')
AP_LINE = re.compile(r"access point (?:\S+ )?password (\w+)")
_AP_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


def _blob(text: str) -> list[str]:
    return ["blob", text.encode().hex()]


def nvs_text(nvs: dict[str, Any], key: str) -> str | None:
    item = nvs.get("twomes", {}).get(key)
    if not item or item[0] != "blob":
        return None
    return bytes.fromhex(item[1]).decode("utf-8", "replace")


def nvs_int(nvs: dict[str, Any], key: str) -> int:
    item = nvs.get("twomes", {}).get(key)
    return int(item[1]) if item and item[0] == "i32" else 0


def nvs_wifi(nvs: dict[str, Any]) -> tuple[str, str] | None:
    """What the device's twomes/wifi.py saved() reads: the one item, else firmware <= 1.0's two."""
    raw = nvs_text(nvs, "wifi")
    if raw is not None:
        try:
            ssid, password = json.loads(raw)
        except (ValueError, TypeError):
            return None
        return (ssid, password) if isinstance(ssid, str) and isinstance(password, str) and ssid else None
    ssid, password = nvs_text(nvs, "wifi_ssid"), nvs_text(nvs, "wifi_pass")
    return (ssid, password) if ssid and password is not None else None


def ap_password(secret: str, name: str) -> str:
    """The device's twomes/identity.py ap_password(), to check the printed one."""
    digest = hashlib.sha256(secret.encode() + b"/ap/" + name.encode()).digest()
    return "".join(_AP_ALPHABET[digest[i] % 32] for i in range(10))


def token_for(mac: str, salt: str) -> str:
    digest = hashlib.sha256(f"{mac}/{salt}".encode()).digest()
    return "".join(str(b % 10) for b in digest[:16])


@dataclass
class Template:
    mac: str
    name: str
    path: Path
    token: str = ""
    session: str = ""


@dataclass
class FlowRun:
    """A flow with its templates (one per worker), cut plan and results."""

    name: str
    templates: list[Template] = field(default_factory=list)
    plan: list[tuple[int, int, str]] = field(default_factory=list)
    boots: int = 0
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0


class Flows:
    """The flows against one reference server. Every flow is four methods: prep_<flow> (a template),
    act_<flow> (the trigger, in the calibration and in every cut run; returns when the action is
    under way), done_<flow> (the calibration is over) and check_<flow> (the invariants, on the board
    powered on again after the cut; raises Broken)."""

    def __init__(self, work: Path, server: Any, heap: str = "128K", log: Callable[[str], None] = print):
        self.work = work
        self.server = server
        self.heap = heap
        self.log = log
        self.version = f"{read_version()}-pc.1"
        # the lab's release key, as an operator makes it offline: the boards trust it, releases are signed
        from twtools import keys

        self.key_file = work / "keys" / "release.key"
        pub = (
            keys.public_hex(keys.load_key(self.key_file))
            if self.key_file.exists()
            else keys.new_key(self.key_file)
        )
        self.config = {"server_url": server.url, "release_keys": [pub], **FLOW_CONFIG}
        self.triggers: dict[Path, tuple[int, int]] = {}  # calibration runs: the last write before the action
        self.taps: dict[Path, ConsoleTap] = {}  # boards with a pty console (Improv)
        self.releases: dict[str, dict[str, Any]] = {}  # the update flows' releases

    # ---- boards and templates -------------------------------------------------------------------
    def board(self, state: Path, mac: str, flow: str, **kw: Any) -> VirtualBoard:
        config = dict(self.config)
        if flow == "rotation":
            config["heartbeat_s"] = 5  # uploads every few seconds: the 401 comes soon after the revocation
        pty = flow == "wifi-improv"
        board = VirtualBoard(state, mac=mac, config=config, heap=self.heap, pty=pty, **kw)
        if board.fs.exists():
            board.write_config()  # this board's own free ports (the portal's, the DNS's)
        if pty:
            self.taps[board.state] = ConsoleTap(board)
        return board

    def unplug(self, board: VirtualBoard) -> None:
        """The board off for good (end of a run), its console tap closed."""
        board.stop()
        tap = self.taps.pop(board.state, None)
        if tap is not None:
            tap.close()

    def template(self, flow: str, mac: str) -> Template:
        name = device_name(mac)
        t = Template(mac, name, self.work / f"template-{flow}-{name}")
        shutil.rmtree(t.path, ignore_errors=True)
        air = [NEW_NET] if flow.startswith("wifi-") else [OLD_NET]
        board = self.board(t.path, mac, flow, air=air)
        board.install_app(version=self.version)
        nvs: dict[str, Any] = {}
        if flow != "first-boot":
            t.token = token_for(mac, flow)
            nvs = {"act_token": _blob(t.token), "ap_secret": _blob("powercut-ap-secret-" + name)}
            if flow != "activation":  # a first activation confirms the version too (a fresh flash)
                nvs["fw_ok"] = _blob(self.version)
            if flow == "wifi-improv":  # firmware <= 1.0 kept two items: the save migrates them
                nvs["wifi_ssid"] = _blob(OLD_NET["ssid"])
                nvs["wifi_pass"] = _blob(OLD_NET["password"])
            else:
                nvs["wifi"] = _blob(json.dumps([OLD_NET["ssid"], OLD_NET["password"]]))
            client = self.server.client
            client.register_device({"name": name, "device_type": "Generic-Test", "activation_token": t.token})
            client.attach(name)
            if flow != "activation":
                t.session = self.activate(t.token)
                nvs["session"] = _blob(t.session)
                if flow != "activation":  # fw_ok: this version was confirmed to the server
                    status, _ = self.http(
                        "POST", "/device/firmware/confirm", {"version": self.version}, t.session
                    )
                    if status // 100 != 2:
                        raise RuntimeError(f"confirmation refused: {status}")
            if flow.startswith("update-"):
                # the target before this one was given up after three failures: the count of the new
                # target starts from there (fw_bad names the version the count belongs to)
                nvs["fw_bad"] = _blob(self.version + "-given-up")
                nvs["fw_fails"] = ["i32", 3]
                client.set_device_target(name, self.bad_release(flow)["id"])
        (t.path / "nvs.json").write_text(json.dumps({"twomes": nvs}))
        return t

    def bad_release(self, flow: str) -> dict[str, Any]:
        """update-fails: a bundle whose file on the server no longer matches its sha256 (it fails the
        device's check after the download, every time). update-unconfirmed: a bundle that resets the
        board as it starts, before it can confirm itself (otaboot gives it up, the old one comes back).
        Published once, shared by the flow's boards."""
        if flow not in self.releases:
            from twtools import DEVICE_DIR
            from twtools.build import build_bundle

            version = self.bad_version(flow)
            src = self.work / f"src-{flow}"
            shutil.rmtree(src, ignore_errors=True)
            shutil.copytree(DEVICE_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
            if flow == "update-unconfirmed":
                init = src / "twomes" / "__init__.py"
                init.write_text(init.read_text() + "import machine\nmachine.reset()\n")
            path = self.work / f"{version}.bundle"
            build_bundle(path, version, src)
            from twtools import keys

            manifest, signature = keys.sign_file(
                keys.load_key(self.key_file), path, "Generic-Test", "bundle", version, 1
            )
            rel = dict(
                self.server.client.publish(path, version, "bundle", manifest=manifest, signature=signature)
            )
            if flow == "update-fails":
                stored = self.server.files_dir / "releases" / f"release-{rel['id']}.bin"
                data = bytearray(stored.read_bytes())
                data[len(data) // 2] ^= 0xFF  # one byte: the size still matches, the sha256 does not
                stored.write_bytes(bytes(data))
            self.releases[flow] = rel
        return self.releases[flow]

    def bad_version(self, flow: str) -> str:
        return f"{read_version()}-pc.{flow}"

    def activate(self, token: str) -> str:
        """POST /device/activate with `token` (what a second device with the same token would do): the
        new session token; the one before it is refused from now on."""
        status, body = self.http("POST", "/device/activate", {"activation_token": token})
        if status != 200:
            raise RuntimeError(f"activation refused: {status} {body}")
        return str(body["session_token"])

    def http(
        self, method: str, path: str, body: Any = None, session: str | None = None, base: str | None = None
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request((base or self.server.url) + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if session:
            req.add_header("Authorization", f"Bearer {session}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, {}

    def accepted(self, session: str | None) -> bool:
        return bool(session) and self.http("GET", "/device", session=session)[0] == 200

    def uploads(self, t: Template) -> int:
        return len(self.server.client.measurements(t.name))

    # ---- triggers -------------------------------------------------------------------------------
    def trigger(self, board: VirtualBoard) -> None:
        """Just before the flow's action: in a calibration run, the durable writes so far are not the
        flow's (they are the boot's)."""
        trace = board.state / "cut.trace"
        if trace.exists():
            lines = trace.read_text().splitlines()
            last = lines[-1].split(" ", 2) if lines else ["0", "0"]
            self.triggers[board.state] = (int(last[0]), int(last[1]))

    def act(self, flow: str, board: VirtualBoard, t: Template) -> None:
        getattr(self, "act_" + flow.replace("-", "_"))(board, t)

    def act_first_boot(self, board: VirtualBoard, t: Template) -> None:
        pass  # the flow is the boot itself

    act_activation = act_update_fails = act_update_unconfirmed = act_first_boot

    def _post_wifi(self, board: VirtualBoard) -> None:
        body = {"ssid": NEW_NET["ssid"], "password": NEW_NET["password"]}
        self.trigger(board)
        status, _ = self.http("POST", "/api/wifi", body, base=board.portal_url)
        if status != 202:
            raise RuntimeError(f"POST /api/wifi answered {status}")

    def act_wifi_portal(self, board: VirtualBoard, t: Template) -> None:
        board.wait_for(r"state: portal", RUN_TIMEOUT)
        _wait_portal(board)
        self._post_wifi(board)

    def act_wifi_improv(self, board: VirtualBoard, t: Template) -> None:
        board.wait_for(r"state: portal", RUN_TIMEOUT)
        self.trigger(board)
        _improv(self.taps.get(board.state))

    def act_rotation(self, board: VirtualBoard, t: Template) -> None:
        board.wait_for(r"upload: \d+ measurement\(s\) sent", RUN_TIMEOUT)
        self.trigger(board)
        self.activate(t.token)  # the device's session is refused from now on

    def act_forget_wifi(self, board: VirtualBoard, t: Template) -> None:
        board.wait_for(r"upload: \d+ measurement\(s\) sent", RUN_TIMEOUT)
        self.trigger(board)
        board.press(self.config["hold_wifi_s"] + 0.6)

    def act_factory_reset(self, board: VirtualBoard, t: Template) -> None:
        board.wait_for(r"upload: \d+ measurement\(s\) sent", RUN_TIMEOUT)
        self.trigger(board)
        board.press(self.config["hold_factory_s"] + 0.6)

    # ---- the end of a calibration run -----------------------------------------------------------
    def done(self, flow: str, board: VirtualBoard, t: Template, mark: int) -> None:
        if flow == "first-boot":
            board.wait_for(r"state: portal", RUN_TIMEOUT, start=mark)
        elif flow in ("forget-wifi", "factory-reset"):
            board.wait_for(r"state: portal", RUN_TIMEOUT, start=mark)
        elif flow == "update-fails":
            board.wait_for(self._given_up(flow), 2 * RUN_TIMEOUT, start=mark)
            board.wait_for(r"state: running", RUN_TIMEOUT, start=board.last_index)
        elif flow == "update-unconfirmed":
            board.wait_for(r"never confirmed itself and was rolled back", 2 * RUN_TIMEOUT, start=mark)
            board.wait_for(r"state: running", RUN_TIMEOUT, start=board.last_index)
        elif flow == "rotation":
            board.wait_for(r"activate: activated", RUN_TIMEOUT, start=mark)
            board.wait_for(r"upload: \d+ measurement\(s\) sent", RUN_TIMEOUT, start=board.last_index)
        else:
            board.wait_for(r"state: running", RUN_TIMEOUT, start=mark)
            board.wait_for(r"upload: \d+ measurement\(s\) sent", RUN_TIMEOUT, start=mark)

    # ---- invariants after the cut ---------------------------------------------------------------
    def check(self, flow: str, board: VirtualBoard, t: Template, cut_nvs: dict[str, Any], mark: int) -> str:
        """Power on (done by the caller: console lines from `mark`), settle, check. Returns what the
        device ended as; raises Broken."""
        m = board.wait_for(SETTLE, RUN_TIMEOUT, start=mark)
        end = m.group(1)
        if end == "running":
            board.wait_for(r"upload: \d+ measurement\(s\) sent", RUN_TIMEOUT, start=mark)
        nvs = board.nvs()
        after = board.lines[mark:]
        acts = [m.group(1) for ln in board.lines if (m := ACT_LINE.match(ln))]
        token = nvs_text(nvs, "act_token")
        session = nvs_text(nvs, "session")
        getattr(self, "check_" + flow.replace("-", "_"))(board, t, cut_nvs, nvs, after, acts, end)
        # every flow: the activation token NVS keeps is the one every activation line names, and the
        # device is activated exactly when it says so
        if acts and set(acts) != {token}:
            raise Broken(f"activation lines name {sorted(set(acts))}, NVS keeps {token}")
        if nvs_text(cut_nvs, "session") is None and not any(ACT_LINE.match(ln) for ln in after):
            raise Broken("not activated after the cut, but no activation line at the next boot")
        if end == "running" and not self.accepted(session):
            raise Broken("running and uploading, but the server refuses the session in NVS")
        return end

    def _kept_identity(self, t: Template, nvs: dict[str, Any], after: list[str]) -> None:
        if nvs_text(nvs, "act_token") != t.token:
            raise Broken("the activation token changed")
        if any(ACT_LINE.match(ln) for ln in after):
            raise Broken("an activation line at the next boot: the session was lost")

    def check_first_boot(self, board: VirtualBoard, t: Template, cut_nvs, nvs, after, acts, end) -> None:  # noqa: ANN001
        if end != "portal":
            raise Broken(f"a new board without Wi-Fi settings ended {end}, not in the portal")
        token = nvs_text(nvs, "act_token")
        if not token or not acts or acts[-1] != token:
            raise Broken(f"the last activation line does not name NVS's token {token}")
        secret = nvs_text(nvs, "ap_secret")
        printed = {m.group(1) for ln in board.lines if (m := AP_LINE.search(ln))}
        if not secret or printed != {ap_password(secret, t.name)}:
            raise Broken("the AP password printed is not the one NVS's secret gives")

    def check_activation(self, board: VirtualBoard, t: Template, cut_nvs, nvs, after, acts, end) -> None:  # noqa: ANN001
        if nvs_text(nvs, "act_token") != t.token:
            raise Broken("the activation token changed")
        if end != "running":
            raise Broken(f"ended {end}, not running")
        if self.uploads(t) == 0:
            raise Broken("no upload arrived at the server")
        if self.server.client.device(t.name).get("installed_version") != self.version:
            raise Broken("the version that runs was not confirmed to the server")

    def _wifi(
        self, board: VirtualBoard, t: Template, nvs: dict[str, Any], end: str, again: Callable[[], None]
    ) -> None:
        creds = nvs_wifi(nvs)
        old = (OLD_NET["ssid"], OLD_NET["password"])
        new = (NEW_NET["ssid"], NEW_NET["password"])
        if creds not in (old, new, None):
            raise Broken(f"NVS holds {creds[0] if creds else None} with another network's password")
        if end == "running":
            if creds != new:
                raise Broken("running, but the new network is not what NVS keeps")
        elif end == "portal":
            mark = board.mark()
            again()  # the phone tries again: the device must get online now
            board.wait_for(r"state: running", RUN_TIMEOUT, start=mark)
            if nvs_wifi(board.nvs()) != new:
                raise Broken("after a second try NVS does not keep the new network")
        else:
            raise Broken(f"ended {end}")

    def check_wifi_portal(self, board: VirtualBoard, t: Template, cut_nvs, nvs, after, acts, end) -> None:  # noqa: ANN001
        self._kept_identity(t, nvs, after)
        self._wifi(board, t, nvs, end, lambda: (_wait_portal(board), self._post_wifi(board)))

    def check_wifi_improv(self, board: VirtualBoard, t: Template, cut_nvs, nvs, after, acts, end) -> None:  # noqa: ANN001
        self._kept_identity(t, nvs, after)
        self._wifi(board, t, nvs, end, lambda: _improv(self.taps.get(board.state)))

    def _given_up(self, flow: str) -> str:
        return rf"target {re.escape(self.bad_version(flow))} failed (\d+) times: not trying it again"

    def _bad_update(self, board: VirtualBoard, t: Template, after: list[str], flow: str, attempt: str) -> int:
        """Both update flows: the bad version is never kept, the old one runs (confirmed to the server),
        and no more failures are counted for the bad version than happened (over the whole run, the cut
        included: a cut may lose a count - one more attempt - but never add one). Returns the number of
        failed attempts seen."""
        bad = self.bad_version(flow)
        nvs = board.nvs()
        self._kept_identity(t, nvs, after)
        attempts = sum(1 for ln in board.lines if re.search(attempt, ln))
        counted = nvs_failures(nvs, bad)
        if counted > attempts:
            raise Broken(f"{counted} failures of {bad} counted, {attempts} happened")
        if not any(f"state: running - firmware {self.version}" in ln for ln in after):
            raise Broken(f"{self.version} does not run at the end")
        if any(f"state: running - firmware {bad}" in ln for ln in board.lines):
            raise Broken(f"{bad} ran")
        if self.server.client.device(t.name).get("installed_version") != self.version:
            raise Broken("the server does not have the old version as the one that runs")
        return attempts

    def check_update_fails(self, board: VirtualBoard, t: Template, cut_nvs, nvs, after, acts, end) -> None:  # noqa: ANN001
        flow = "update-fails"
        attempts = self._bad_update(
            board, t, after, flow, rf"update to {re.escape(self.bad_version(flow))} failed"
        )
        given_up = [m for ln in after if (m := re.search(self._given_up(flow), ln))]
        if given_up and attempts < 3:
            raise Broken(
                f"given up ({given_up[0].group(1)} failures counted) after {attempts} failed attempt(s)"
            )
        if not given_up and not any("no update attempts in safe mode" in ln for ln in after):
            # a cut that cost a count makes a fourth attempt: five boots in a row then mean safe mode
            # (no attempts for 10 minutes), else the device gives the target up
            raise Broken("neither given up nor in safe mode")
        if attempts > 4:
            raise Broken(f"tried {attempts} times: the count was lost more than once")

    def check_update_unconfirmed(
        self, board: VirtualBoard, t: Template, cut_nvs, nvs, after, acts, end
    ) -> None:  # noqa: ANN001
        bad = re.escape(self.bad_version("update-unconfirmed"))
        attempts = self._bad_update(
            board, t, after, "update-unconfirmed", rf"version {bad} never confirmed, rolling back"
        )
        if attempts < 1:
            raise Broken("the bad version was never rolled back")

    def check_rotation(self, board: VirtualBoard, t: Template, cut_nvs, nvs, after, acts, end) -> None:  # noqa: ANN001
        self._kept_identity(t, nvs, after)
        if end != "running":
            raise Broken(f"ended {end}, not running")

    def check_forget_wifi(self, board: VirtualBoard, t: Template, cut_nvs, nvs, after, acts, end) -> None:  # noqa: ANN001
        self._kept_identity(t, nvs, after)
        if nvs_text(nvs, "session") != t.session:
            raise Broken("the session token changed")
        creds = nvs_wifi(nvs)
        if end == "running" and creds != (OLD_NET["ssid"], OLD_NET["password"]):
            raise Broken(f"running with {creds} in NVS")
        if end == "portal" and creds is not None:
            raise Broken("in the portal with credentials in NVS")
        if end == "waiting":
            raise Broken("waiting for the operator: the identity was lost")

    def check_factory_reset(self, board: VirtualBoard, t: Template, cut_nvs, nvs, after, acts, end) -> None:  # noqa: ANN001
        for state, when in ((cut_nvs, "after the cut"), (nvs, "at the end")):
            if nvs_text(state, "session") is not None and nvs_text(state, "act_token") != t.token:
                raise Broken(f"{when}: a session without the activation token it came from")
        if nvs_text(cut_nvs, "session") is None:
            first = next((i for i, ln in enumerate(after) if ACT_LINE.match(ln)), None)
            used = next(
                (
                    i
                    for i, ln in enumerate(after)
                    if "activate: activated" in ln or "measurement(s) sent" in ln
                ),
                None,
            )
            if used is not None and (first is None or first > used):
                raise Broken("activated or uploaded before printing its activation line")
        if end == "running" and nvs_text(nvs, "act_token") != t.token:
            raise Broken("running with a new activation token nobody registered")
        # all or nothing: the old state intact (same token, session and network: running) or the reset
        # done (a new token, no session, no network: the portal)
        old = (t.token, t.session, (OLD_NET["ssid"], OLD_NET["password"]), "running")
        state = (nvs_text(nvs, "act_token"), nvs_text(nvs, "session"), nvs_wifi(nvs), end)
        done = state[0] not in (None, t.token) and state[1:] == (None, None, "portal")
        if state != old and not done:
            raise Broken(
                "half reset: "
                + ", ".join(
                    f"{what} {'kept' if a == b else 'changed'}"
                    for what, a, b in zip(("token", "session", "network", "state"), state, old, strict=True)
                )
            )
        if nvs_text(nvs, "reset") is not None:
            raise Broken("the reset marker is still in NVS")


def nvs_failures(nvs: dict[str, Any], version: str) -> int:
    """Failed attempts of `version` NVS counts: "fw_fail" ("<n> <version>", one item), else firmware
    1.0's two items (fw_bad, fw_fails)."""
    one = nvs_text(nvs, "fw_fail")
    if one:
        n, _, v = one.partition(" ")
        return int(n) if v == version else 0
    return nvs_int(nvs, "fw_fails") if nvs_text(nvs, "fw_bad") == version else 0


def _wait_portal(board: VirtualBoard, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(board.portal_url + "/api/info", timeout=5) as r:
                r.read()
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class ConsoleTap:
    """The console of a board with a pty (the Improv flow): a thread reads the port as a serial
    terminal would (the board's serial line already hands every byte to its console lines, so
    wait_for works as on a pipe console); Improv frames are written to the same port."""

    def __init__(self, board: VirtualBoard) -> None:
        import os
        import threading

        self.board = board
        self.fd = os.open(board.pty_path or "", os.O_RDWR | os.O_NOCTTY)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        import os
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    time.sleep(0.05)
                    continue
                del data  # read as a terminal reads; board.lines has it already

    def write(self, data: bytes) -> None:
        import os

        os.write(self.fd, data)

    def close(self) -> None:
        import os

        self._stop.set()
        self._thread.join(2)
        os.close(self.fd)


def _improv(tap: ConsoleTap | None) -> None:
    """The new network's Wi-Fi settings as an Improv RPC (what `twomes provision --serial` sends)."""
    from twtools import provision

    if tap is None:
        raise RuntimeError("the Improv flow needs a board with a pty console")
    tap.write(b"\n" + provision.wifi_rpc(NEW_NET["ssid"], NEW_NET["password"]) + b"\n")


# ---- runs ----------------------------------------------------------------------------------------
_LAB_LIMITS = ("--activation-rate-device", "1000000/1", "--activation-rate-address", "1000000/1")


def _copy(flows: Flows, fr: FlowRun, t: Template, tag: str) -> tuple[Path, Template]:
    """A run's copy of the template. An activated template gets a fresh session from the server (the
    runs before this one activated again, e.g. after a factory reset cut: the template's is refused)."""
    run = flows.work / f"run-{fr.name}-{t.name}-{tag}"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(t.path, run)
    if t.session:
        t = replace(t, session=flows.activate(t.token))
        nvs = json.loads((run / "nvs.json").read_text())
        nvs["twomes"]["session"] = _blob(t.session)
        (run / "nvs.json").write_text(json.dumps(nvs))
    return run, t


def calibrate(flows: Flows, fr: FlowRun, t: Template) -> None:
    """The flow without cuts, every durable write traced; the plan: the writes after the trigger."""
    run, t = _copy(flows, fr, t, "calibration")
    board = flows.board(run, t.mac, fr.name)
    board.env = {"VBOARD_TRACE": "1"}
    try:
        board.start()
        flows.act(fr.name, board, t)
        flows.done(fr.name, board, t, 0)
    finally:
        flows.unplug(board)
        (flows.work / f"calibration-{fr.name}.log").write_text("\n".join(board.lines) + "\n")
    trace = (run / "cut.trace").read_text() if (run / "cut.trace").exists() else ""
    (flows.work / f"calibration-{fr.name}.trace").write_text(trace)
    after = flows.triggers.get(run, (0, 0))
    plan = []
    for line in trace.splitlines():
        b, n, what = line.split(" ", 2)
        if (int(b), int(n)) > after:
            plan.append((int(b), int(n), what))
    fr.plan = plan
    fr.boots = len({b for b, _, _ in plan})
    shutil.rmtree(run, ignore_errors=True)


def cut_run(flows: Flows, fr: FlowRun, t: Template, cut: tuple[int, int, str]) -> Result:
    boot, n, _ = cut
    run, t = _copy(flows, fr, t, f"{boot}-{n}")
    board = flows.board(run, t.mac, fr.name)

    def reach() -> bool:
        flows.act(fr.name, board, t)
        try:
            board.wait_for(r"\[vboard: power cut at", RUN_TIMEOUT)
        except TimeoutError:
            return False
        return True

    def off() -> None:
        board.button(False)  # the hand let go of the button while the power was off

    def judge(mark: int, cut_nvs: dict[str, Any]) -> str:
        return flows.check(fr.name, board, t, cut_nvs, mark)

    return cut_and_judge(cut, run, board, reach, judge, off, flows.unplug)


def run(
    names: tuple[str, ...] = FLOWS,
    limit: int | None = None,
    jobs: int = 2,
    heap: str = "128K",
    work: Path | None = None,
    log: Callable[[str], None] = print,
    verbose: bool = False,
    select: Callable[[str, list[tuple[int, int, str]]], list[tuple[int, int, str]]] | None = None,
) -> dict[str, FlowRun]:
    """Every flow: templates, calibrations (in parallel), then the cuts (in parallel, all flows in one
    queue). Returns the flows with their plans and results."""
    from twtools.server.testing import ReferenceServer

    jobs = max(1, min(jobs, len(MACS)))
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="twomes-powercut-flows-")) if work is None else work
    work.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    try:
        # Every cut run activates its template again (a fresh session: runs before it may have
        # activated); the per-device activation limit is not what this harness measures: lifted.
        with ReferenceServer(work / "server", access_log=False, extra_args=_LAB_LIMITS) as server:
            flows = Flows(work, server, heap, log)
            runs = {name: FlowRun(name) for name in names}
            for i, name in enumerate(names):
                fr = runs[name]
                # one identity per flow and worker: runs of one identity never overlap
                fr.templates = [flows.template(name, _mac(i, w)) for w in range(jobs)]

            def calib(fr: FlowRun) -> Callable[[int], None]:
                def task(w: int) -> None:
                    t0 = time.monotonic()
                    try:
                        calibrate(flows, fr, fr.templates[w])
                    except (TimeoutError, RuntimeError, OSError) as e:
                        with lock:
                            log(f"[powercut] {fr.name}: calibration FAILED: {str(e).splitlines()[0]}")
                        return
                    fr.seconds += time.monotonic() - t0
                    with lock:
                        log(
                            f"[powercut] {fr.name}: {len(fr.plan)} durable writes over {fr.boots} boot(s) "
                            f"in the flow"
                        )

                return task

            pool(jobs, [calib(runs[n]) for n in names])
            chosen = {n: select(n, runs[n].plan) if select else pick(runs[n].plan, limit) for n in names}

            def cut(fr: FlowRun, c: tuple[int, int, str]) -> Callable[[int], None]:
                def task(w: int) -> None:
                    res = guarded(c, lambda: cut_run(flows, fr, fr.templates[w], c))
                    with lock:
                        fr.results.append(res)
                        fr.seconds += res.seconds
                        log_cut(log, fr.name, res, verbose, "ended")

                return task

            # interleaved, so that every flow gets cut points early and the boards' runs mix
            tasks = []
            for k in range(max((len(c) for c in chosen.values()), default=0)):
                tasks += [cut(runs[n], chosen[n][k]) for n in names if k < len(chosen[n])]
            pool(jobs, tasks)
            for n in names:
                fr = runs[n]
                fr.results.sort(key=lambda r: (r.cut[0], r.cut[1]))
                ends: dict[str, int] = {}
                for r in fr.results:
                    if r.ok:
                        ends[r.first] = ends.get(r.first, 0) + 1
                log(
                    f"[powercut] {n}: {summary(fr.results)}"
                    + (" - ended " + ", ".join(f"{k} {v}" for k, v in sorted(ends.items())) if ends else "")
                    + f"; {fr.seconds:.0f} s of board runs"
                )
            return runs
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def _mac(flow: int, worker: int) -> str:
    return f"24:6F:28:C0:{0x80 + flow:02X}:{worker + 1:02X}"


def parse_flows(text: str) -> tuple[bool, tuple[str, ...]]:
    """--flows: "all", "updates", or a comma list of flow names (and "updates"); returns (updates?,
    other flows)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts == ["all"]:
        return True, FLOWS
    bad = [p for p in parts if p != "updates" and p not in FLOWS]
    if bad or not parts:
        raise SystemExit(
            f"error: unknown flow(s) {', '.join(bad) or text!r}; known: all, updates, {', '.join(FLOWS)}"
        )
    return "updates" in parts, tuple(p for p in FLOWS if p in parts)


def main(args: argparse.Namespace) -> int:
    """`twomes powercut --flows ...`: the update harness (twtools.powercut) and/or these flows."""
    from twtools import powercut

    updates, names = parse_flows(args.flows)
    t0 = time.monotonic()
    results: list[Result] = []
    no_plan = False
    work = Path(args.work) if args.work else None
    limit = None if args.cuts == 0 else args.cuts
    if updates:
        kinds = powercut.KINDS if args.installer == "both" else (args.installer,)
        installers = powercut.run(
            kinds,
            limit,
            args.jobs,
            args.heap,
            work / "updates" if work else None,
            verbose=args.verbose,
            code=args.code,
        )
        results += [r for i in installers.values() for r in i.results]
    if names:
        runs = run(names, limit, args.jobs, args.heap, work / "flows" if work else None, verbose=args.verbose)
        results += [r for f in runs.values() for r in f.results]
        no_plan = any(not f.plan for f in runs.values())
        if no_plan:
            print("a flow has no cut points (its calibration failed)", flush=True)
    n, m, _ = tally(results)
    if no_plan:
        m -= 1  # the run fails
    print(f"cuts={n} recovered={m} ({time.monotonic() - t0:.0f} s)", flush=True)
    return 0 if n == m and n > 0 else 1
