"""`twomes server fuzz`: schemathesis against a fresh reference server, once per token kind.

A reference server is started on 127.0.0.1 (temporary data), given a provisioned device, an owner
account and a targeted release (so ids in paths can hit real rows), and schemathesis runs against its
served OpenAPI document for ``--seconds`` per token kind (admin, device, account), with the checks
``not_a_server_error`` (no 5xx), ``status_code_conformance`` (every status is declared),
``content_type_conformance`` and ``response_schema_conformance``. It fails when schemathesis reports
any failure or the server logged an unhandled error.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from .testing import ReferenceServer

KINDS = ("admin", "device", "account")
# The operations each token can reach (the others would only answer 401/403).
PATHS = {"admin": r"^/(admin/|device$|account$)", "device": r"^/device", "account": r"^/account/"}
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fuzz",
        help="run schemathesis against a fresh server, per token kind (make fuzz)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--seconds", type=int, default=180, help="time budget per token kind (default 180)")
    p.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma-separated token kinds (default {','.join(KINDS)})"
    )
    p.add_argument("--seed", type=int, help="schemathesis random seed (default: a new one, printed)")
    p.add_argument("--workers", default="1", help="schemathesis workers (default 1)")
    p.add_argument("--report-dir", type=Path, help="keep schemathesis reports (JUnit) here")
    p.set_defaults(func=cmd_fuzz)


def _schemathesis() -> str:
    found = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    if not Path(found).exists():
        raise FileNotFoundError("schemathesis is not installed: `make install` installs the dev tools")
    return found


def provision(server: ReferenceServer) -> dict[str, str]:
    """A bearer token of each kind, and rows for the fuzzer to find (device, account, targeted release)."""
    client = server.client
    name = f"TWOMES-{secrets.randbelow(0x1000000):06X}"
    token = f"{secrets.randbelow(10**16):016d}"
    client.register_device({"name": name, "device_type": "Generic-Test", "activation_token": token})
    account = client.create_account("fuzz owner")
    client.attach(name, account["id"])
    with tempfile.NamedTemporaryFile(suffix=".bin") as handle:
        handle.write(os.urandom(4096))
        handle.flush()
        release = client.publish(handle.name, "1.0.0", "bundle")
    client.set_type_target("Generic-Test", release["id"])
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
        r = http.post("/device/activate", json={"activation_token": token})
        r.raise_for_status()
        session = r.json()["session_token"]
    return {"admin": server.admin_token, "device": session, "account": account["session_token"]}


def run_schemathesis(
    url: str, kind: str, token: str, seconds: int, seed: int | None, workers: str, report: Path | None
) -> int:
    cmd = [
        _schemathesis(),
        "run",
        f"{url}/openapi.json",
        "--include-path-regex",
        PATHS[kind],
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--max-time",
        str(seconds),
        "--workers",
        workers,
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--no-color",
    ]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if report is not None:
        cmd += ["--report", "junit", "--report-dir", str(report.resolve())]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"}
    shown = [c if c != f"Authorization: Bearer {token}" else "Authorization: Bearer <token>" for c in cmd]
    print("$ " + " ".join(shown), flush=True)
    # In a scratch directory: schemathesis leaves a .schemathesis/ cache in its working directory.
    with (
        tempfile.TemporaryDirectory(prefix="twomes-fuzz-") as scratch,
        subprocess.Popen(
            cmd,
            env=env,
            cwd=scratch,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:  # echoed through sys.stdout (so tests can capture it)
            sys.stdout.write(line)
        sys.stdout.flush()
    return proc.returncode


def fuzz(
    seconds: int, kinds: list[str], seed: int | None = None, workers: str = "1", report: Path | None = None
) -> int:
    """Run the fuzzer; returns 0 when every kind passed and the server logged no unhandled error."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        print(f"error: unknown token kind(s): {', '.join(bad)} (known: {', '.join(KINDS)})", file=sys.stderr)
        return 2
    failed: list[str] = []
    with ReferenceServer(access_log=False) as server:
        tokens = provision(server)
        for kind in kinds:
            print(f"== schemathesis with the {kind} token, {seconds} s, against {server.url}", flush=True)
            rc = run_schemathesis(
                server.url, kind, tokens[kind], seconds, seed, workers, report / kind if report else None
            )
            if rc != 0:
                failed.append(f"{kind} (schemathesis exit code {rc})")
        log = server.log_text()
    if "unhandled error" in log or "Traceback" in log:
        failed.append("the server logged an unhandled error:\n" + log[-4000:])
    if failed:
        print("fuzz: FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    print(f"fuzz: passed ({', '.join(kinds)}; {seconds} s each)")
    return 0


def cmd_fuzz(args: argparse.Namespace) -> int:
    if args.seconds < 1:
        print("error: --seconds must be at least 1", file=sys.stderr)
        return 2
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    try:
        return fuzz(args.seconds, kinds, args.seed, args.workers, args.report_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
