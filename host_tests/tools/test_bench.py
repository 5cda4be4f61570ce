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
