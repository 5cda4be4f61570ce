"""A slice of `twomes powercut --flows` (the full run is `make powercut`): for every durable flow other
than updates, the first and the last of its durable writes are cut, on two virtual boards in parallel
against a real reference server, and the flow's invariant is checked after the power comes back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from twtools.powercut import pick
from twtools.powercut_flows import FLOWS, FlowRun, Flows, _mac, calibrate, cut_run, nvs_wifi, parse_flows, run
from twtools.server.testing import ReferenceServer

# the durable writes every flow must have after its trigger (the calibration finds them; a flow that
# writes less than this no longer does what it is meant to)
MUST_WRITE = {
    "first-boot": {"nvs act_token", "nvs ap_secret"},
    "activation": {"nvs session", "nvs fw_ok"},
    "wifi-portal": {"nvs wifi"},
    "wifi-improv": {"nvs wifi", "nvs wifi_ssid", "nvs wifi_pass"},
    "rotation": {"nvs session"},
    "forget-wifi": {"nvs wifi"},
    "factory-reset": {"nvs session", "nvs act_token", "nvs wifi"},
    "update-fails": {"nvs fw_fail"},
    "update-unconfirmed": {"nvs fw_fail"},
}


def _slice(name: str, plan: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """The first and the last write of each flow (the failure count's writes: the test below)."""
    return pick(plan, 2)


def test_power_cuts_in_every_durable_flow_recover(tmp_path: Path) -> None:
    t0 = time.monotonic()
    lines: list[str] = []
    runs = run(FLOWS, jobs=2, work=tmp_path, log=lines.append, select=_slice)
    for name in FLOWS:
        fr = runs[name]
        assert MUST_WRITE[name] <= {w for _, _, w in fr.plan}, (name, fr.plan, "\n".join(lines))
        cut = [r for r in fr.results if not r.missed]
        failed = [(r.cut, r.why) for r in cut if not r.ok]
        assert len(cut) == min(2, len(fr.plan)) and not failed, "\n".join(lines)
    assert any(f"[powercut] {n}: cuts=" in ln for n in FLOWS for ln in lines)
    assert time.monotonic() - t0 < 300  # ~40 s on an idle 2-core machine; bounded, not timed


def test_flow_names_and_the_credential_rule() -> None:
    assert parse_flows("all") == (True, FLOWS)
    assert parse_flows("updates") == (True, ())
    assert parse_flows("rotation,updates,first-boot") == (True, ("first-boot", "rotation"))
    with pytest.raises(SystemExit):
        parse_flows("rotation,nonsense")
    # what the invariant of the Wi-Fi flows reads: the one item first, else firmware <= 1.0's two
    item = ["blob", b'["New lab", "pw-new-1"]'.hex()]
    old = {"wifi_ssid": ["blob", b"Old lab".hex()], "wifi_pass": ["blob", b"pw-old-1".hex()]}
    assert nvs_wifi({"twomes": {"wifi": item, **old}}) == ("New lab", "pw-new-1")
    assert nvs_wifi({"twomes": old}) == ("Old lab", "pw-old-1")
    assert nvs_wifi({"twomes": {"wifi_pass": old["wifi_pass"]}}) is None


def test_a_cut_in_the_failure_count_never_counts_more_failures_than_happened(tmp_path: Path) -> None:
    """update-unconfirmed (a bundle that resets before it confirms: rolled back, counted) from a device
    whose previous target was given up: a cut at each NVS write of the count."""
    with ReferenceServer(tmp_path / "server", access_log=False) as server:
        flows = Flows(tmp_path, server, log=lambda line: None)
        fr = FlowRun("update-unconfirmed")
        fr.templates = [flows.template(fr.name, _mac(9, 0))]
        calibrate(flows, fr, fr.templates[0])
        counts = [c for c in fr.plan if c[2].startswith("nvs fw_")]
        assert counts, fr.plan
        results = [cut_run(flows, fr, fr.templates[0], c) for c in counts]
        assert all(r.ok for r in results), [(r.cut, r.why) for r in results]
