"""The setup portal's heap against the same portal on microdot, on the MicroPython unix port.

Both are compiled with the project's mpy-cross and run by benchdata/portal_main.py in front of the
device's real setup controller: the device's portal (device/twomes/ap: httpd, portal, api, form, pages)
and benchdata/mdportal.py (the same routes, pages and JSON on microdot, pinned in pyproject.toml). For
microdot the controller's import of twomes.ap.portal gets a one-line stub, so no device portal code is
in its heap. The .mpy code is loaded into the heap in both (no ROMFS here), so the figures include the
code, as `-X heapsize` sees it.

The phone's sequence (phone_sequence below) is what a phone and the provisioning app do: captive probe
(a foreign Host: 302 to the form), the form page, a scan (GET /api/networks?refresh=1), the form POSTed
with a wrong password (303 to /result), /result and /api/status polled until the result, the app's
POST /api/wifi with the right credentials (202), /result polled until "Connected", /api/status and
/api/info. Every answer is checked (status, content); any other answer, a MemoryError or a traceback
fails the run. Per run and per portal: the smallest heap (`-X heapsize`) the whole sequence passes in
(bisected), and, at a roomy heap, the live heap (``gc.mem_alloc`` after a collection) with the portal
up and idle and after the sequence.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from twtools.build import compile_tree
from twtools.mpprocess import STANDIN, MicroPythonProcess, mpy
from twtools.vboard.runner import free_port

BENCHDATA = Path(__file__).resolve().parent / "benchdata"
VARIANTS = ("device", "microdot")
ROOMY_K = 512
CAFE = "Caf\u00e9 \u2615 & Co"
CAFE_PW = "p&%+@#$;\u00e4ssw\u00f6rd =x"


class SequenceFailed(Exception):
    pass


def prepare(work: Path) -> dict[str, Path]:
    """The two portals' filesystems under `work` (.mpy files): {variant: directory}."""
    try:
        import microdot  # the pinned PyPI package ships the MicroPython-compatible source
    except ImportError:
        raise RuntimeError(
            "the portal figure needs microdot (pinned in pyproject.toml's dev extra: make install)"
        ) from None

    dev, md = work / "device", work / "microdot"
    compile_tree(dev)
    shutil.copytree(dev, md)
    src = Path(microdot.__file__).resolve().parent
    for name in ("__init__", "microdot"):  # what `from microdot import Microdot` loads
        mpy(src / f"{name}.py", md / "microdot" / f"{name}.mpy")
    stub = work / "portal_stub.py"
    stub.write_text("Portal = None  # bench: the device's portal is not used by the microdot variant\n")
    mpy(stub, md / "twomes" / "ap" / "portal.mpy")
    for d in (dev, md):
        for stale in ("portal_main.mpy",):
            (d / stale).unlink(missing_ok=True)
        mpy(BENCHDATA / "portal_main.py", d / "portal_main.mpy")
        mpy(STANDIN, d / "standin.mpy")
    mpy(BENCHDATA / "mdportal.py", md / "mdportal.mpy")
    return {"device": dev, "microdot": md}


class Portal(MicroPythonProcess):
    """One portal process: `micropython -X heapsize=<heap>` running benchdata/portal_main.py."""

    def __init__(self, variant: str, root: Path, heap: str) -> None:
        self.port = free_port()
        env = {"PORTAL": variant, "PORTAL_PORT": str(self.port)}
        super().__init__("portal_main", root, [root, ".frozen"], heap, env, SequenceFailed)
        self.origin = f"http://127.0.0.1:{self.port}"

    def live(self, prefix: str) -> int:
        return int(self.wait_for("^" + re.escape(prefix)).split("live=")[1])

    def http(
        self, path: str, body: bytes | None = None, ctype: str = "", host: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        return self.request(self.port, path, body, ctype, host, agent="bench-phone")


def _expect(cond: bool, what: str, got: object) -> None:
    if not cond:
        raise SequenceFailed(f"{what}: got {got!r}"[:400])


def phone_sequence(p: Portal, timeout: float = 10) -> dict[str, bytes]:
    """The phone's whole visit (see the module's doc); returns the bodies of the answers that do not
    depend on timing, by step name, for comparing the two portals."""
    out: dict[str, bytes] = {}

    def get(name: str, path: str, status: int, **kw: Any) -> tuple[dict[str, str], bytes]:
        st, h, body = p.http(path, **kw)
        _expect(st == status, f"{name} ({path}) status {status}", (st, body[:200]))
        return h, body

    def status() -> dict[str, Any]:
        return dict(json.loads(get("status", "/api/status", 200)[1]))

    def until(name: str, test: Any) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = test()
            if got:
                return got
            time.sleep(0.05)
        raise SequenceFailed(f"{name}: not within {timeout} s; portal: {p.tail()}")

    h, _ = get("captive probe", "/generate_204", 302, host="connectivitycheck.gstatic.com")
    _expect(h.get("location") == p.origin + "/", "captive probe Location", h.get("location"))
    _, page = get("form", "/", 200)
    _expect(b"home" in page and page.rstrip().endswith(b"</html>"), "form page", page[-200:])
    out["form"] = page
    _, nets = get("scan", "/api/networks?refresh=1", 200)
    _expect(len(json.loads(nets)["networks"]) == 3, "scan", nets)
    out["scan"] = nets
    form = urllib.parse.urlencode({"ssid": "home", "password": "bad-password", "name": "Hall"}).encode()
    h, _ = get("POST /connect", "/connect", 303, body=form, ctype="application/x-www-form-urlencoded")
    _expect(h.get("location") == "/result", "POST /connect Location", h.get("location"))
    _, page = get("result while testing", "/result", 200)
    _expect(b"Testing home" in page, "result while testing", page[-300:])
    st = until("wrong password result", lambda: (s := status())["result"] and not s["busy"] and s)
    _expect(st["result"] == "wrong_password", "wrong password result", st)
    out["status after a wrong password"] = json.dumps(st, sort_keys=True).encode()
    _, page = get("result: wrong password", "/result", 200)
    _expect(b"was not accepted" in page, "result: wrong password", page[-300:])
    out["result: wrong password"] = page
    body = json.dumps({"ssid": CAFE, "password": CAFE_PW}).encode()
    _, ans = get("POST /api/wifi", "/api/wifi", 202, body=body, ctype="application/json")
    out["POST /api/wifi"] = ans

    def joined() -> bytes | None:
        page = get("result polled", "/result", 200)[1]
        return page if "Connected to Caf\u00e9".encode() in page else None

    out["result: joined"] = until("joined result", joined)
    st = status()
    _expect(st["result"] == "joined" and st["result_ssid"] == CAFE, "joined status", st)
    out["status after joining"] = json.dumps(st, sort_keys=True).encode()
    _, info = get("info", "/api/info", 200)
    _expect(json.loads(info)["name"] == "TWOMES-D3AD48", "info", info)
    out["info"] = info
    return out


def visit(variant: str, root: Path, heap: str) -> dict[str, Any]:
    """One process with `heap`, the phone's sequence; raises SequenceFailed. Returns the live heap
    figures and the answers."""
    p = Portal(variant, root, heap)
    try:
        base = p.live("@@BASE ")
        ctl = p.live("@@CTL ")
        ready = p.live("@@READY ")
        answers = phone_sequence(p)
        p.send(b"m\n")
        after = p.live("@@LIVE ")
        text = "\n".join(p.lines)
        if "MemoryError" in text or "Traceback" in text or p.p.poll() is not None:
            raise SequenceFailed(f"the portal process reported an error: {p.tail()}")
        return {"base": base, "ctl": ctl, "ready": ready, "after": after, "answers": answers}
    finally:
        p.close()


def passes(variant: str, root: Path, kib: int) -> bool:
    try:
        visit(variant, root, f"{kib}K")
        return True
    except SequenceFailed:
        return False


def smallest(variant: str, root: Path, lo: int, hi: int, step: int) -> int:
    """The smallest heap (KiB, on the grid lo + k*step) that the whole sequence passes in; `lo` is
    known to fail, `hi` is tried first (doubled until it passes, up to 4 MiB)."""
    while not passes(variant, root, hi):
        lo, hi = hi, hi * 2
        if hi > 4096:
            raise RuntimeError(f"the {variant} portal fails the phone's sequence even with 4 MiB of heap")
    while hi - lo > step:
        mid = lo + max(step, (hi - lo) // 2 // step * step)
        if passes(variant, root, mid):
            hi = mid
        else:
            lo = mid
    return hi


def measure(runs: int, step: int = 1) -> dict[str, Any]:
    """Per variant, per run: smallest heap (KiB) and live heap figures (bytes) at a roomy heap; the
    answers of the first run, by step, for comparison."""
    out: dict[str, Any] = {
        v: {"need_k": [], "base": [], "ctl": [], "ready": [], "after": []} for v in VARIANTS
    }
    with tempfile.TemporaryDirectory(prefix="twomes-bench-portal-") as tmp:
        roots = prepare(Path(tmp))
        for _ in range(runs):
            for v in VARIANTS:
                try:
                    r = visit(v, roots[v], f"{ROOMY_K}K")
                except SequenceFailed as e:
                    raise RuntimeError(
                        f"the {v} portal failed the phone's sequence at {ROOMY_K}K: {e}"
                    ) from e
                for k in ("base", "ctl", "ready", "after"):
                    out[v][k].append(r[k])
                out[v].setdefault(
                    "answers", {k: a.decode("utf-8", "replace") for k, a in r["answers"].items()}
                )
                lo = max(8, r["ready"] // 1024 // step * step)  # below its idle live heap: fails
                hi = lo + 64
                out[v]["need_k"].append(smallest(v, roots[v], lo, hi, step))
    return out
