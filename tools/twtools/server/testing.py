"""A real reference server in a subprocess, for tests and end-to-end runs.

    with ReferenceServer() as server:
        server.client.register_device({...})      # AdminClient with the server's admin token
        httpx.get(server.url + "/device", ...)     # real HTTP on 127.0.0.1

The server runs as ``python -m twtools.server run`` on 127.0.0.1 with a free port (picked by the
server itself, so no port race), a temporary database and firmware store, and its output in a log
file (``server.log``). It stops itself if the process that started it dies.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

from .cli import URL_LINE
from .client import AdminClient

HOST = "127.0.0.1"


class ServerStartError(RuntimeError):
    """The server did not come up; the message ends with its log."""


class ReferenceServer:
    """Start/stop a reference server subprocess.

    ``workdir`` holds ``twomes.sqlite3``, ``files/``, ``admin-token`` and ``server.log``; by default a
    fresh temporary directory, removed on stop. Passing the same ``workdir`` again (or calling
    :meth:`restart`) restarts on the same data; the admin token is then read back from the token file.
    """

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        max_upload: int | None = None,
        access_log: bool = True,
        startup_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
        python: str | None = None,
        tls: bool = False,
        plain_twomes: bool = False,
        device_types: Sequence[str] = (),
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="twomes-server-"))
        )
        self.db_path = self.workdir / "twomes.sqlite3"
        self.files_dir = self.workdir / "files"
        self.token_path = self.workdir / "admin-token"
        self.log_path = self.workdir / "server.log"
        self.max_upload = max_upload
        self.access_log = access_log
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        # As a plain Twomes v1 server: no firmware API, no admin API (the admin token still registers
        # devices and creates accounts, as on Twomes); device types as "NAME=prop[:unit],...".
        if plain_twomes:
            self.extra_args += ["--no-firmware-api", "--no-admin-api"]
        for spec in device_types:
            self.extra_args += ["--device-type", spec]
        self.python = python or sys.executable
        self.tls = tls  # https with the server's local CA (workdir/tls/ca.der, ca.pem)
        self.tls_dir = self.workdir / "tls"
        self.url = ""
        self.admin_token = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._client: AdminClient | None = None

    # -- lifecycle

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("server not started")
        return self._process.pid

    @property
    def client(self) -> AdminClient:
        """An :class:`AdminClient` for this server (created on first use, closed on stop)."""
        if not self.url:
            raise RuntimeError("server not started")
        if self._client is None:
            self._client = AdminClient(self.url, self.admin_token, verify=self.verify)
        return self._client

    def command(self) -> list[str]:
        cmd = [
            self.python,
            "-m",
            "twtools.server",
            "run",
            "--host",
            HOST,
            "--port",
            "0",
            "--db",
            str(self.db_path),
            "--files",
            str(self.files_dir),
            "--admin-token-file",
            str(self.token_path),
            "--watch-parent",
            str(os.getpid()),
        ]
        if self.max_upload is not None:
            cmd += ["--max-upload", str(self.max_upload)]
        if not self.access_log:
            cmd.append("--no-access-log")
        if self.tls:
            cmd += ["--tls", "--tls-dir", str(self.tls_dir)]
        return cmd + self.extra_args

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client needs to trust this server (its local CA when ``tls``)."""
        if not self.tls:
            return True
        return ssl.create_default_context(cafile=str(self.tls_dir / "ca.pem"))

    def start(self) -> ReferenceServer:
        if self.running:
            raise RuntimeError("server already running")
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        # Works from a source tree too: make the package that imported us importable by the child.
        tools_dir = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (tools_dir, env.get("PYTHONPATH", "")) if p)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        if self._own_workdir:
            self.workdir.chmod(0o700)
        # The log may hold device names and addresses: private to the user, like everything else.
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(log_fd, "ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        atexit.register(self.close)
        try:
            self.url = self._wait_for_url(log_offset)
            self.admin_token = self._read_token()
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); returns its exit code."""
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self._process = self._process, None
        if process is None:
            return None
        atexit.unregister(self.close)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def close(self) -> None:
        """Stop, and remove the working directory if it is a temporary one."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self) -> ReferenceServer:
        """Stop and start again on the same data (the URL changes: a new free port)."""
        self.stop()
        return self.start()

    # -- helpers

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _fail(self, message: str) -> ServerStartError:
        return ServerStartError(f"{message}\n--- {self.log_path} ---\n{self.log_text()[-4000:]}")

    def _wait_for_url(self, log_offset: int) -> str:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            with self.log_path.open("rb") as log:
                log.seek(log_offset)
                for raw in log.read().decode(errors="replace").splitlines():
                    if raw.startswith(URL_LINE):
                        return raw[len(URL_LINE) :].strip()
            if self._process.poll() is not None:
                raise self._fail(f"reference server exited with code {self._process.returncode}")
            if time.monotonic() > deadline:
                raise self._fail(f"reference server did not start within {self.startup_timeout} s")
            time.sleep(0.02)

    def _read_token(self) -> str:
        try:
            token = self.token_path.read_text().strip()
        except FileNotFoundError:
            token = ""
        if not token:
            raise self._fail(f"no admin token in {self.token_path}")
        return token

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(base_url=self.url, timeout=5.0, trust_env=False, verify=self.verify) as http:
            while True:
                try:
                    if http.get("/openapi.json").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self._process is None or self._process.poll() is not None:
                    raise self._fail("reference server exited while starting")
                if time.monotonic() > deadline:
                    raise self._fail(f"reference server did not answer within {self.startup_timeout} s")
                time.sleep(0.05)
