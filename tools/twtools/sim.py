"""`twomes sim`: the whole story of the seeds on a virtual board against a real server, step by step.

Operator registers the device from its boot line, the owner attaches it, the phone sends Wi-Fi settings
to the portal, the device joins, activates, updates itself from version 1 to version 2, reboots,
confirms, uploads; a long button press sends it back to the portal, and it is re-provisioned on another
network keeping its identity. Exit 0 only if every step happened, else the failed step is named.

`twomes board`: one virtual board left running, console on stdout, for driving it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from twtools.build import build_bundle, build_romfs, read_version
from twtools.keys import new_key
from twtools.server.client import ca_context
from twtools.vboard.runner import CODE_MODES, DEFAULT_CODE, DEFAULT_HEAP, MPY_HEAP, VirtualBoard, cpu_ns

HOME = {"ssid": "Home network", "password": "p&ss w%rd+#1", "rssi": -48, "channel": 6, "join_ms": 300}
OFFICE = {
    "ssid": "Kantoor 5G \u00e9",
    "password": "another secret 2",
    "rssi": -61,
    "channel": 11,
    "join_ms": 300,
}
NEIGHBOUR = {"ssid": "Neighbour", "password": "not yours at all", "rssi": -80, "channel": 1}


class StepFailed(Exception):
    pass


# CPU time (ns) of the operator's `twomes` commands the story ran (_cli), for --timing
_CLI_NS = [0]


class Meter:
    """--timing: per step of the story, its wall time and the CPU time each party used in it, all
    measured (docs/bench.md): the device's firmware process (every boot) and the simulated hardware's
    process (VirtualBoard.cpu_ns, from /proc/<pid>/schedstat), the reference server's process
    (/proc/<pid>/stat, all its threads), and the host side (this process: the story, the phone's HTTP,
    the board's console reader; and the operator's `twomes` commands). What is left of the wall time
    nobody computed in: the deliberate and simulated waits (the simulated Wi-Fi join, retry back-offs,
    the good-boot timer, the device's sleeps, the story waiting for the device) and waiting for a CPU."""

    def __init__(self) -> None:
        self.board: VirtualBoard | None = None
        self.server_pid: int | None = None
        self.marks: list[tuple[str, dict[str, float]]] = []

    def sample(self) -> dict[str, float]:
        board = self.board.cpu_ns() if self.board is not None else {}
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "t": time.monotonic(),
            "device": board.get("device", 0) / 1e9,
            "device_queued": board.get("device_queued", 0) / 1e9,
            "hardware": board.get("hardware", 0) / 1e9,
            "server": cpu_ns(self.server_pid, threads=True) / 1e9 if self.server_pid else 0.0,
            "host": ru.ru_utime + ru.ru_stime + _CLI_NS[0] / 1e9,
        }

    def mark(self, step: str) -> None:
        self.marks.append((step, self.sample()))

    def steps(self) -> list[dict[str, Any]]:
        """Per step: wall_s and the seconds of each party; waiting_s what nobody computed (>= 0: on
        two cores parties compute at the same time); device_queued_s the firmware's time waiting for
        a CPU (a busy machine)."""
        end = self.sample()
        out = []
        for i, (step, a) in enumerate(self.marks):
            b = self.marks[i + 1][1] if i + 1 < len(self.marks) else end
            row: dict[str, Any] = {"step": step, "wall_s": b["t"] - a["t"]}
            for k in ("device", "hardware", "server", "host", "device_queued"):
                row[f"{k}_s"] = b[k] - a[k]  # never negative: each is a running total
            busy = sum(row[f"{k}_s"] for k in ("device", "hardware", "server", "host"))
            row["waiting_s"] = max(0.0, row["wall_s"] - busy)
            # (device_queued_s, the firmware ready to run but without a CPU, is part of waiting_s or
            # overlaps the other parties' CPU time: shown, not subtracted)
            out.append(row)
        return out


def timing_lines(steps: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"{'step':<4} {'wall':>7} {'device':>8} {'sim hw':>8} {'server':>8} {'host':>8} {'waiting':>8} "
        f"{'dev queued':>10}  (s)"
    ]
    for i, r in enumerate(steps, 1):
        lines.append(
            f"{i:<4} {r['wall_s']:7.2f} {r['device_s']:8.3f} {r['hardware_s']:8.3f} {r['server_s']:8.3f} "
            f"{r['host_s']:8.3f} {r['waiting_s']:8.2f} {r['device_queued_s']:10.3f}  {r['step'][:50]}"
        )
    return lines


class Story:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n = 0
        self.total = 13
        self.t0 = time.monotonic()
        self.meter = Meter() if getattr(args, "timing", None) else None

    def step(self, text: str) -> None:
        self.n += 1
        self.current = text
        if self.meter is not None:
            self.meter.mark(text)
        print(f"\n[sim {self.n:2d}/{self.total}] {text}", flush=True)

    def note(self, text: str) -> None:
        print(f"          {text}", flush=True)


def _cli(*argv: str, env: dict[str, str]) -> str:
    """Run the tools CLI as the operator would; returns its output, raises on failure."""
    cmd = [sys.executable, "-m", "twtools.cli", *argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **env})
        deadline = time.monotonic() + 60
        # wait4: the exit status and the command's CPU time (--timing) at once
        while (got := os.wait4(proc.pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                proc.kill()
                got = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(got[1])
        _CLI_NS[0] += int((got[2].ru_utime + got[2].ru_stime) * 1e9)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise StepFailed(f"`twomes {' '.join(argv[:2])}` failed: {stderr.strip() or stdout.strip()}")
    return stdout.strip()


def _portal_json(r: httpx.Response) -> dict[str, Any]:
    """The portal's JSON answer, or StepFailed saying what came instead (a 503 "come again" of a
    device short of heap, a page, nothing)."""
    try:
        value = r.json()
    except ValueError:
        value = None
    if r.status_code != 200 or not isinstance(value, dict):
        got = r.text[:200].strip() or "an empty body"
        raise StepFailed(f"portal answered {r.request.url.path} with {r.status_code}, not its JSON: {got}")
    return value


def _portal_get(http: httpx.Client, url: str, deadline: float) -> dict[str, Any]:
    """GET a portal API answer as a phone's app does: a 503 "come again" (a device short of heap or
    of connection slots) is asked again after its Retry-After, until the deadline."""
    while True:
        r = http.get(url)
        if r.status_code != 503 or time.monotonic() >= deadline:
            return _portal_json(r)
        after = r.headers.get("retry-after", "1")
        time.sleep(int(after) if after.isdigit() else 1)


def _portal_join(board: VirtualBoard, net: dict[str, Any], timeout: float = 30) -> str:
    """What the phone's provisioning app does: POST the credentials, poll the status."""
    base = board.portal_url
    with httpx.Client(timeout=10) as http:
        info = _portal_get(http, base + "/api/info", time.monotonic() + timeout)
        r = http.post(base + "/api/wifi", json={"ssid": net["ssid"], "password": net["password"]})
        if r.status_code not in (200, 202):
            raise StepFailed(f"portal refused the credentials: {r.status_code} {r.text[:200]}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                st = _portal_get(http, base + "/api/status", deadline)
            except httpx.HTTPError:
                return "joined (portal closed)"  # the device left AP mode after a successful join
            if st.get("wifi") == "joined":
                return f"joined, device {info.get('name')}"
            if st.get("wifi") not in (None, "testing"):
                raise StepFailed(f"device reports: {st.get('wifi')} ({st.get('message', '')})")
            time.sleep(0.3)
    raise StepFailed("no answer from the portal")


def run_story(args: argparse.Namespace) -> int:
    story = Story(args)
    echo = (lambda line: print(f"    device | {line}", flush=True)) if not args.quiet else None
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="twomes-sim-"))
        passed: list[bool] = []

        def _tidy() -> None:  # runs last: after the board and the server stopped
            if passed:
                shutil.rmtree(work, ignore_errors=True)
            else:
                print(
                    f"[sim] the board's and the server's files are kept for a look: {work}", file=sys.stderr
                )

        stack.callback(_tidy)
        try:
            story.step("Reference server: fresh SQLite database on 127.0.0.1, https with its own local CA")
            ca: Path | None = Path(args.ca) if args.ca else None
            if args.server:
                url, token = (
                    args.server.rstrip("/"),
                    args.admin_token or os.environ.get("TWOMES_ADMIN_TOKEN", ""),
                )
                if not token:
                    raise StepFailed("--server needs --admin-token (or $TWOMES_ADMIN_TOKEN)")
                if url.startswith("https://") and ca is None:
                    raise StepFailed("an https --server needs --ca FILE (the CA that signed its certificate)")
            else:
                from twtools.server.testing import ReferenceServer

                srv = stack.enter_context(ReferenceServer(work / "server", tls=True))
                url, token = srv.url, srv.admin_token
                if story.meter is not None and srv._process is not None:
                    story.meter.server_pid = srv._process.pid
                ca = srv.tls_dir / "ca.pem"
            env = {"TWOMES_URL": url, "TWOMES_ADMIN_TOKEN": token}
            if ca is not None:
                env["TWOMES_CA"] = str(ca)
                global _VERIFY
                _VERIFY = ca_context(ca)
            story.note(f"server {url}" + (f", certificate checked against {ca.name}" if ca else ""))
            admin_api, fw_api = _server_apis(url, token)
            if not fw_api:
                story.note("a plain Twomes server: no firmware API (the update steps are skipped, said so)")
            if not admin_api:
                story.note("no admin API: the owner attaches the device with the Twomes account API")
            key_file = work / "keys" / "release.key"
            pub = new_key(key_file)
            story.note(
                f"release key made offline: {key_file} (public {pub[:16]}..., in the board's release_keys)"
            )
            ddi: dict[str, Any] = {}
            if args.updates == "hawkbit":  # updates from a real gooseBit (docs/hawkbit.md)
                from twtools.goosebit import ADMIN, TENANT, GooseBit

                gb = stack.enter_context(GooseBit(work / "goosebit"))
                ddi_token = os.urandom(8).hex()
                ddi = {
                    "updates": "hawkbit",
                    "ddi_url": gb.url,
                    "ddi_tenant": TENANT,
                    "ddi_token": ddi_token,
                    "allow_http": True,  # the local gooseBit speaks plain http (a lab setting)
                }
                env |= {"TWOMES_DDI_USER": ADMIN[0], "TWOMES_DDI_PASSWORD": ADMIN[1]}
                story.note(f"gooseBit {gb.url} (hawkBit DDI): the device's updates come from there")

            story.step(
                "Firmware: version 1 and version 2 built from device/ (mpy-cross), version 2 published"
            )
            base = read_version()
            v1, v2 = f"{base}-sim.1", f"{base}-sim.2"
            # the bundle in the form the board installs: a ROMFS image for a board that runs its app
            # from its "romfs" partition (into the half that does not run), .mpy overlays otherwise
            romfs = args.code == "romfs"
            size, sha = (build_romfs if romfs else build_bundle)(work / "v2.bundle", v2)
            form = "ROMFS image" if romfs else ".mpy overlay"
            story.note(f"bundle {v2} ({form}): {size} bytes, sha256 {sha[:16]}...")

            story.step(
                "Virtual board with version 1: boots, prints its activation line on the serial console"
            )
            air = [HOME, OFFICE, NEIGHBOUR]
            board = VirtualBoard(
                work / "board",
                mac=args.mac,
                air=air,
                heap=_heap(args),
                code=args.code,
                echo=echo,
                config={
                    "server_url": url,
                    "release_keys": [pub],
                    "retry_base_s": 1,
                    "retry_max_s": 5,
                    "heartbeat_s": 30,
                    "portal_retry_s": 20,
                    **ddi,
                },
            )
            stack.callback(board.stop)
            if story.meter is not None:
                story.meter.board = board
            board.install_app(version=v1)
            if ca is not None:  # as `twomes deploy --ca` puts it on a real board: DER, under ca_file
                (board.fs / "ca.der").write_bytes(to_der(ca.read_bytes()))
            board.start()
            board.wait_for(r'^\{"name":', 15)
            line = board.lines[board.last_index]
            ident = json.loads(line)
            story.note(f"activation line: {line}")

            story.step("Operator registers the device from that line (twomes server register)")
            story.note(_cli("server", "register", line, env=env))

            story.step("Owner attaches the device to an account (twomes server attach)")
            if admin_api:
                story.note(_cli("server", "attach", ident["name"], env=env))
            else:  # what the owner's app does on any Twomes server
                story.note(
                    _cli(
                        "server",
                        "attach",
                        ident["name"],
                        "--activation-token",
                        ident["activation_token"],
                        env=env,
                    )
                )

            if ddi:
                story.step(f"Operator publishes {v2} on gooseBit and rolls it out (twomes release --ddi)")
                gb.client.put_devices([ident["name"]], auth_token=ddi["ddi_token"], feed="sim")
                story.note(f"gooseBit target {ident['name']} with its token, feed 'sim'")
                out = work / "v2-ddi.bundle"
                story.note(
                    _cli(
                        "release",
                        "--version",
                        v2,
                        "--out",
                        str(out),
                        "--key",
                        str(key_file),
                        "--counter",
                        "1",
                        "--ddi",
                        gb.url,
                        "--rollout",
                        "sim",
                        *(["--romfs"] if romfs else ["--mpy"]),
                        env=env,
                    )
                )
            elif not fw_api:
                story.step(f"Operator would publish {v2}: skipped, the server has no firmware API")
            else:
                story.step(
                    f"Operator signs {v2} offline and publishes it as the target (twomes server publish)"
                )
                story.note(
                    _cli(
                        "server",
                        "publish",
                        str(work / "v2.bundle"),
                        "--version",
                        v2,
                        "--kind",
                        "bundle",
                        "--device-type",
                        ident["device_type"],
                        "--key",
                        str(key_file),
                        "--counter",
                        "1",
                        "--target",
                        env=env,
                    )
                )

            story.step("Phone sends Wi-Fi settings to the device's portal (JSON API, as the app does)")
            board.wait_for(r"portal: access point", 15)
            story.note(
                f"AP {board.ap().get('essid')} ({'WPA2' if board.ap().get('secured') else 'open'}), "
                f"LED {board.led_pattern(1.2)}"
            )
            story.note(_portal_join(board, HOME))

            story.step("Device joins, activates and confirms version 1")
            board.wait_for(r"activate: activated; session token stored", 30)
            if not fw_api and not ddi:
                board.wait_for(
                    rf"running {v1}, kept without confirmation: the server has no firmware API", 30
                )
                story.step("Firmware check: skipped, the server has no firmware API (the device says so)")
                board.wait_for(r"state: running", 30)  # no check, no download: it learnt it once
                if any("firmware: target" in ln for ln in board.lines):
                    raise StepFailed("the device asked a server without a firmware API for a target")
                story.step(f"No update: version {v1} runs on")
                board.wait_for(r"state: running", 30)
                v2 = v1
            else:
                board.wait_for(rf"running {v1}, confirmed", 30)
                story.step(f"Firmware check: target {v2} != {v1} -> streamed, verified, installed, reboot")
                board.wait_for(rf"slot [\w-]+ holds {v2}, verified", 30)
                board.wait_for(rf"boot: twomes firmware {v2}", 30)
                story.step(f"Version {v2} runs, confirms itself, and only then is kept")
                board.wait_for(rf"version {v2} confirmed and kept", 30)
                board.wait_for(r"state: running", 30)
            if not fw_api and not ddi:
                pass
            elif ddi:  # the DDI server is told what runs; the Twomes server learns it from booted_fw
                gdev = gb.client.device(ident["name"])
                if gdev["last_state"] != "Finished" or gdev["sw_version"] != v2:
                    raise StepFailed(
                        f"gooseBit says {gdev['last_state']}, {gdev['sw_version']} for the device"
                    )
                story.note(f"gooseBit: action closed with success, sw_version {gdev['sw_version']}")
            else:
                dev = _server_device(url, token, ident["name"])
                if dev["installed_version"] != v2:
                    raise StepFailed(
                        f"server has installed_version {dev['installed_version']}, expected {v2}"
                    )
                story.note(
                    f"server: installed_version {dev['installed_version']}, confirmed {dev['confirmed_on']}"
                )

            story.step("First upload: booted_fw and heartbeat with the session token")
            board.wait_for(r"upload: \d+ measurement\(s\) sent", 30)
            if not admin_api:  # a plain Twomes server shows measurements to their owner only
                story.note(f"the server took them (200); LED {board.led_pattern(1.2)}")
                meas = []
            else:
                meas = _server_get(url, token, f"/admin/devices/{ident['name']}/measurements")
            booted = [m["value"] for m in meas if m["property_name"] == "booted_fw"]
            if admin_api and v2 not in booted:
                raise StepFailed(f"no booted_fw {v2} measurement on the server (got {booted})")
            if admin_api:
                story.note(
                    f"server has {len(meas)} measurement(s), booted_fw {booted[-1]}; LED {board.led_pattern(1.2)}"
                )

            story.step("Long button press (3.5 s): Wi-Fi forgotten, back in the portal")
            mark = board.mark()
            board.press(3.5)
            board.wait_for(r"portal: access point", 20, start=mark)
            story.note(f"LED {board.led_pattern(1.2)}")

            story.step("Re-provisioned with other credentials; running again with the same identity")
            story.note(_portal_join(board, OFFICE))
            board.wait_for(r"state: running", 30, start=mark)
            reprinted = [ln for ln in board.lines[mark:] if ln.startswith('{"name":')]
            if reprinted:
                raise StepFailed("the device printed an activation line again: it lost its activation")
            if admin_api:
                dev = _server_device(url, token, ident["name"])
                story.note(
                    f"same name {dev['name']}, still {dev['state']}, firmware {dev['installed_version'] or v2}"
                )
            _check_secrets(board, [HOME["password"], OFFICE["password"]])
            print(
                f"\n[sim] all {story.total} steps passed in {time.monotonic() - story.t0:.1f} s", flush=True
            )
            if story.meter is not None:
                steps = story.meter.steps()
                Path(args.timing).write_text(json.dumps({"steps": steps}, indent=1))
                print("\n[sim] time per step (CPU seconds of each party; waiting: nobody computing)")
                print("\n".join(timing_lines(steps)), flush=True)
            if args.keep:
                print(f"[sim] kept running: portal {board.portal_url}, server {url}, admin token {token}")
                print("[sim] press Ctrl-C to stop")
                while True:
                    time.sleep(1)
            passed.append(True)
            return 0
        except (StepFailed, TimeoutError, httpx.HTTPError, RuntimeError) as e:
            print(f"\n[sim] FAILED at step {story.n}/{story.total} ({story.current}):\n{e}", file=sys.stderr)
            return 1


_VERIFY: ssl.SSLContext | bool = True  # the story's server CA (https), set by run_story


def to_der(data: bytes) -> bytes:
    """A CA certificate as the device reads it (DER), from PEM or DER."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return ssl.PEM_cert_to_DER_cert(data.decode())
    return data


def _server_apis(url: str, token: str) -> tuple[bool, bool]:
    """(admin API, firmware API) of the server: a plain Twomes server has neither (docs/api.md, telling a
    plain Twomes server apart: our firmware API marks its answers with X-Twomes-Firmware-Api)."""
    with httpx.Client(timeout=10, verify=_VERIFY) as http:
        admin = (
            http.get(url + "/admin/tokens", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        )
        fw = "x-twomes-firmware-api" in http.get(url + "/device/firmware/target").headers
    return admin, fw


def _server_get(url: str, token: str, path: str) -> Any:
    r = httpx.get(url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10, verify=_VERIFY)
    r.raise_for_status()
    return r.json()


def _server_device(url: str, token: str, name: str) -> dict[str, Any]:
    return dict(_server_get(url, token, f"/admin/devices/{name}"))


def _check_secrets(board: VirtualBoard, passwords: list[str]) -> None:
    out = board.raw.decode("utf-8", "replace")
    for pw in passwords:
        if pw in out:
            raise StepFailed("a Wi-Fi password appeared on the serial console")
    nvs = board.nvs().get("twomes", {})
    session = bytes.fromhex(nvs.get("session", ["blob", ""])[1]).decode()
    if session and session in out:
        raise StepFailed("the session token appeared on the serial console")


DEFAULT_BOARD_SERVER = "http://127.0.0.1:8000"


def _heap(args: argparse.Namespace) -> str:
    """--heap, or the budget of the --code mode (the .mpy mode loads the code into the heap)."""
    return str(args.heap or (MPY_HEAP if args.code == "mpy" else DEFAULT_HEAP))


def run_board(args: argparse.Namespace) -> int:
    state = Path(args.state) if args.state else Path(tempfile.mkdtemp(prefix="twomes-board-"))
    air = json.loads(Path(args.air).read_text()) if args.air else [HOME, OFFICE, NEIGHBOUR]
    board = VirtualBoard(
        state,
        mac=args.mac,
        air=air,
        heap=_heap(args),
        code=args.code,
        echo=None if args.pty else print,
        pty=args.pty,
        config={"server_url": args.server or DEFAULT_BOARD_SERVER},
    )
    if args.install or not (state / "fs" / "main.py").exists():
        board.install_app()
    else:
        # an existing board keeps its config, but listens where this run says (new free ports) and
        # talks to --server when one is given: the address printed below is the one it serves
        old = (
            json.loads((board.fs / "twomes.json").read_text()) if (board.fs / "twomes.json").exists() else {}
        )
        old.pop("allow_http", None)
        if args.server:
            old["server_url"] = args.server
        old.setdefault("server_url", DEFAULT_BOARD_SERVER)
        if old["server_url"].startswith("http://"):
            old["allow_http"] = True
        board.config = {**old, "portal_port": board.portal_port, "dns_port": board.dns_port}
        board.write_config()
    board.start()
    print(f"[board] state {state}", flush=True)
    print(f"[board] portal {board.portal_url} (DNS on 127.0.0.1:{board.dns_port})", flush=True)
    if args.pty:
        print(f"[board] serial console on {board.pty_path}", flush=True)
    print(f"[board] air {state / 'air.json'}; button: echo 1 > {state / 'button'}", flush=True)
    try:
        while board.running or board.boots == 0:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    return 0


_CODE_HELP = (
    f"how the board holds the app (default {DEFAULT_CODE}): romfs = a ROMFS image in flash run in place, "
    "as it ships; mpy = .mpy files in /lib, loaded into the heap (development)"
)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "sim",
        help="the whole story on a virtual board against a local server (make sim)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--server",
        help="use this server instead of a fresh local one: this project's, or any Twomes v1 server (update steps "
        "skipped, said so, when it has no firmware API); needs --admin-token",
    )
    p.add_argument("--admin-token", help="admin token of --server ($TWOMES_ADMIN_TOKEN)")
    p.add_argument("--ca", help="the CA certificate (PEM or DER) of an https --server; put on the board")
    p.add_argument(
        "--mac", default="24:6F:28:D3:AD:48", help="the virtual board's MAC (its name comes from it)"
    )
    p.add_argument(
        "--heap",
        help=f"MicroPython heap size (-X heapsize; default {DEFAULT_HEAP}, {MPY_HEAP} with --code mpy)",
    )
    p.add_argument(
        "--updates",
        choices=("twomes", "hawkbit"),
        default="twomes",
        help="where the device's updates come from: the reference server, or a local gooseBit (hawkBit DDI)",
    )
    p.add_argument("--code", choices=CODE_MODES, default=DEFAULT_CODE, help=_CODE_HELP)
    p.add_argument(
        "--timing",
        metavar="FILE",
        help="per step, wall time and the CPU time of the device, the simulated hardware, the server and "
        "the host side; the rest is waiting (printed, and written to FILE as JSON; make bench uses it)",
    )
    p.add_argument("--keep", action="store_true", help="keep server and board running afterwards")
    p.add_argument("--quiet", action="store_true", help="do not show the device's serial console")
    p.set_defaults(func=run_story)

    b = sub.add_parser(
        "board",
        help="start one virtual board and leave it running",
        description="One virtual board: the real device code on the MicroPython unix port.",
    )
    b.add_argument(
        "--server",
        help=f"server URL written to the board's config (a new board: default {DEFAULT_BOARD_SERVER}; "
        "an existing --state keeps its own unless this is given)",
    )
    b.add_argument("--air", help="virtual air JSON file (list of {ssid, password, rssi, channel})")
    b.add_argument("--mac", default="24:6F:28:D3:AD:48")
    b.add_argument(
        "--heap", help=f"MicroPython heap size (default {DEFAULT_HEAP}, {MPY_HEAP} with --code mpy)"
    )
    b.add_argument("--code", choices=CODE_MODES, default=DEFAULT_CODE, help=_CODE_HELP)
    b.add_argument("--state", help="state directory (kept; default: a new temporary one)")
    b.add_argument(
        "--install", action="store_true", help="reinstall the app into an existing state directory"
    )
    b.add_argument("--pty", action="store_true", help="serial console on a pty (for monitor/mpremote tools)")
    b.set_defaults(func=run_board)
