"""`twomes bench signature`: the release-signature check measured on the real MicroPython unix port
(the benchmark itself asserts that every run verifies and a tampered manifest does not)."""

from __future__ import annotations

import json

from twtools import bench
from twtools.cli import main


def test_signature_bench_measures_real_runs(capsys):
    assert main(["bench", "signature", "--runs", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["total"]) == len(r["ed"]) == len(r["sha"]) == 3
    assert all(t > 0 for t in r["total"] + r["ed"] + r["sha"])
    assert 0 < r["code"] < 64 * 1024 and 0 < r["need"] < 32 * 1024
    assert r["churn"] > r["need"]  # garbage is collected as it goes: far less live than allocated
    text = bench.report(r, "64K", 2400.0)
    assert "ESP32 at 240 MHz (estimate, not measured)" in text and "method:" in text
    assert "min" in text and "median" in text and "max" in text


def test_esp32_estimate_follows_the_stated_method():
    # 10 ms of which 2 ms SHA-512 on a 2400 MHz host: (2 + 8 x 2) x 10 x 2 = 360 ms
    assert bench.esp32_estimate_us(10_000, 2_000, 2400.0) == 360_000


def test_bench_quick_prints_every_figure_with_its_ratio(capsys):
    """`twomes bench --quick` (what `make bench` runs in full): real runs on the unix port and a real
    reference server; every figure has its min/median/max and its ratio against the reference."""
    assert main(["bench", "--quick", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    http = r["http"]
    for who in ("device", "requests", "raw"):
        assert len(http[who]["mbps"]) == 2 and all(x > 0 for x in http[who]["mbps"])
        assert 0 < http[who]["need"] < 48 * 1024 and http[who]["live"] > 0
    # the device client allocates nothing per read: a few bytes per KB (one coroutine per 64 reads)
    assert max(http["device"]["garbage_per_kb"]) < 16
    for what in ("upload", "activate"):
        for runs in r["server"][what].values():
            for pair in runs:
                assert pair["server"]["rps"] > 0 and pair["constants"]["rps"] > 0
                assert pair["server"]["p99_ms"] >= pair["server"]["p50_ms"] > 0
    for label in ("small", "large"):
        assert all(t > 0 for t in r["scale"][label]["measurement_page"]["ms"])
        assert r["scale"][label]["measurement_page"]["bytes"] > 0
    ota = r["ota"]
    size = ota["size"]
    assert (
        abs(size["bundle"] - size["image"]) < 64 and abs(size["romfs"] - size["image"]) < size["image"] // 50
    )
    for step in ("raw_file", "raw_flash", "bundle", "romfs", "image"):
        assert len(ota["ms"][step]) == 5 and all(t > 0 for t in ota["ms"][step])
    # an image install costs about what a bundle of the same size costs (was ~8x: a process round trip
    # per 1 KB of flash); the best of five runs, so a busy machine does not decide
    best = min(
        (i / size["image"]) / (b / size["bundle"])
        for i, b in zip(ota["ms"]["image"], ota["ms"]["bundle"], strict=True)
    )
    assert best < 3, ota
    lines = (
        bench.http_table(http, 4 * 2**20)
        + bench.ota_table(ota)
        + bench.server_table(r["server"])
        + bench.scale_table(r["scale"])
    )
    assert any("raw socket loop" in x and "x" in x for x in lines)
    assert any("constants" in x for x in lines)
    assert any(x.startswith("  image install") and "bundle install" in x for x in lines)
