"""A real gooseBit (PyPI ``goosebit``, a hawkBit DDI server in Python) for tests and `twomes sim`, and
the client `twomes release` uses to publish to it.

    with GooseBit(workdir) as gb:                 # database made by its own migrations (aerich upgrade)
        sw = gb.client.upload(make_swu(...))      # PUT /api/v1/software
        gb.client.put_devices([name], auth_token=token, software=str(sw))

gooseBit takes SWUpdate archives (and RAUC bundles) only: a release file travels inside an .swu whose
``sw-description`` names its version and sha256 (:func:`make_swu`); the device downloads only the
release file out of it (Range). gooseBit runs as ``uvicorn goosebit:app`` on 127.0.0.1 with a free
port, its settings in ``goosebit.yaml`` of a temporary directory (database, artifacts, poll time,
device authentication: strict, every target has a TargetToken), and its output in ``goosebit.log``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from twtools.tcpport import free_port

HOST = "127.0.0.1"
TENANT = "DEFAULT"
ADMIN = ("admin@twomes.test", "twomes-goosebit-admin")


class GooseBitError(RuntimeError):
    pass


def _member(name: str, data: bytes) -> bytes:
    """One cpio "newc" member (what SWUpdate archives are made of)."""
    n = name.encode() + b"\x00"
    fields = (1, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(n), 0)
    out = b"070701" + b"".join(b"%08x" % v for v in fields) + n
    out += b"\x00" * (-len(out) % 4) + data
    return out + b"\x00" * (-len(out) % 4)


def _quote(text: str) -> str:
    if any(c in text for c in '"\\\n'):
        raise GooseBitError(f"{text!r} cannot go into sw-description")
    return text


def make_swu(payload: bytes, filename: str, version: str, board: str, manifest: bytes | None = None) -> bytes:
    """An SWUpdate archive holding one release file: sw-description first (version, the file's sha256,
    hardware compatibility `board`/"default"), the signed manifest if any, the file, the trailer."""
    desc = (
        "software = {\n"
        f'  version = "{_quote(version)}";\n'
        f'  {_quote(board)} = {{ hardware-compatibility = [ "default" ]; }};\n'
        f'  images: ( {{ filename = "{_quote(filename)}"; type = "twomes"; '
        f'sha256 = "{hashlib.sha256(payload).hexdigest()}"; }} );\n'
        "};\n"
    )
    out = _member("sw-description", desc.encode())
    if manifest is not None:
        out += _member(filename + ".manifest.json", manifest)
    return out + _member(filename, payload) + _member("TRAILER!!!", b"")


class GooseBitClient:
    """gooseBit's management API (``/api/v1``) with the bearer token of a login."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"bearer {token}"}, timeout=30)

    @classmethod
    def login(cls, url: str, user: str, password: str) -> GooseBitClient:
        r = httpx.post(url.rstrip("/") + "/login", data={"username": user, "password": password}, timeout=30)
        if r.status_code != 200:
            raise GooseBitError(f"gooseBit login refused: {r.status_code} {r.text[:200]}")
        return cls(url, r.json()["access_token"])

    def _ok(self, r: httpx.Response) -> Any:
        if r.status_code // 100 != 2:
            raise GooseBitError(f"gooseBit answered {r.status_code}: {r.text[:300]}")
        return r.json() if r.content else None

    def upload(self, data: bytes, filename: str) -> int:
        """PUT /api/v1/software: the .swu; returns the software id."""
        r = self.http.put("/api/v1/software", files={"file": (filename, data, "application/octet-stream")})
        return int(self._ok(r)["id"])

    def put_devices(self, names: list[str], **fields: Any) -> None:
        """PUT /api/v1/devices: create (or change) targets: auth_token, software (an id, "latest",
        "rollout"), feed, force_update, pinned."""
        self._ok(self.http.put("/api/v1/devices", json={"devices": names, **fields}))

    def device(self, name: str) -> dict[str, Any]:
        return dict(self._ok(self.http.get(f"/api/v1/devices/{name}")))

    def device_log(self, name: str) -> str:
        return str(self._ok(self.http.get(f"/api/v1/devices/{name}/log")).get("log") or "")

    def rollout(self, name: str, feed: str, software_id: int) -> int:
        """PUT /api/v1/rollouts: the software for every target of the feed in rollout mode."""
        r = self.http.put("/api/v1/rollouts", json={"name": name, "feed": feed, "software_id": software_id})
        return int(self._ok(r)["id"])

    def close(self) -> None:
        self.http.close()


class GooseBit:
    """Start/stop a gooseBit subprocess on 127.0.0.1; its data in `workdir` (a temporary one by default,
    removed on stop)."""

    def __init__(
        self, workdir: str | Path | None = None, *, poll: str = "00:00:02", startup_timeout: float = 60.0
    ) -> None:
        self._own = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="goosebit-"))
        self.poll = poll
        self.startup_timeout = startup_timeout
        self.log_path = self.workdir / "goosebit.log"
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: GooseBitClient | None = None

    @property
    def ddi_url(self) -> str:
        """What the device's config names as ddi_url (the tenant is ddi_tenant)."""
        return self.url

    @property
    def client(self) -> GooseBitClient:
        if self._client is None:
            raise GooseBitError("gooseBit is not running")
        return self._client

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOOSEBIT_")}
        env["GOOSEBIT_SETTINGS"] = str(self.workdir / "goosebit.yaml")
        return env

    def _settings(self, port: int) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "artifacts").mkdir(exist_ok=True)
        db = self.workdir / "db.sqlite3"
        (self.workdir / "goosebit.yaml").write_text(
            f"port: {port}\n"
            f"tenant: {TENANT}\n"
            f'poll_time: "{self.poll}"\n'
            f"db_uri: sqlite://{db}\n"
            f"artifacts_dir: {self.workdir / 'artifacts'}\n"
            "track_device_ip: false\n"
            "device_auth:\n  enable: true\n  mode: strict\n"
        )
        # aerich reads its settings from the pyproject.toml of the directory it runs in
        import goosebit

        migrations = Path(goosebit.__file__).parent / "db" / "migrations"
        (self.workdir / "pyproject.toml").write_text(
            '[tool.aerich]\ntortoise_orm = "goosebit.db.config.TORTOISE_CONF"\n'
            f'location = "{migrations}"\nsrc_folder = "./."\n'
        )

    def migrate(self) -> None:
        """gooseBit's own migration step (`aerich upgrade`): creates or upgrades its database."""
        aerich = Path(sys.executable).parent / "aerich"
        cmd = [str(aerich) if aerich.exists() else "aerich", "upgrade"]
        proc = subprocess.run(
            cmd, cwd=self.workdir, env=self._env(), capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            raise GooseBitError(
                f"`aerich upgrade` failed: {proc.stderr.strip()[-800:] or proc.stdout[-800:]}"
            )

    def start(self) -> GooseBit:
        for attempt in range(3):  # the free port may be taken between the check and uvicorn's bind
            try:
                return self._start()
            except GooseBitError as e:
                if attempt == 2 or "address already in use" not in str(e):
                    raise
        raise AssertionError("unreachable")

    def _start(self) -> GooseBit:
        port = free_port()
        self._settings(port)
        self.migrate()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes it until stop()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "goosebit:app", "--host", HOST, "--port", str(port)],
            cwd=self.workdir,
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise GooseBitError(f"gooseBit exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.post(
                    self.url + "/setup", data={"username": ADMIN[0], "password": ADMIN[1]}, timeout=5
                )
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise GooseBitError(f"gooseBit did not answer within {self.startup_timeout:.0f} s")
            time.sleep(0.3)
        self._client = GooseBitClient.login(self.url, *ADMIN)
        return self

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
            self._proc = None
        if self._own:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> GooseBit:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
