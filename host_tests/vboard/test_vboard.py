"""The virtual board: the real boot.py/main.py and .mpy device code on the MicroPython unix port."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from twtools.build import BOOT_MODULES
from twtools.vboard.runner import CODE_MODES, MPY_HEAP, VirtualBoard, cpu_ns

HOME = {"ssid": "home", "password": "correct horse", "rssi": -50}


def _board(tmp_path: Path, name: str = "b", **kw) -> VirtualBoard:
    kw.setdefault("config", {"server_url": "http://127.0.0.1:9", "retry_base_s": 1, "retry_max_s": 5})
    b = VirtualBoard(tmp_path / name, air=[HOME], **kw)
    b.install_app()
    return b


def _activation(b: VirtualBoard, start: int = 0) -> dict[str, str]:
    b.wait_for(r'^\{"name":', 20, start=start)
    return dict(json.loads(b.lines[b.last_index]))


@pytest.mark.parametrize("code", CODE_MODES)
def test_boots_real_main_prints_activation_line_and_keeps_identity(tmp_path: Path, code: str) -> None:
    with _board(tmp_path, code=code, **({"heap": MPY_HEAP} if code == "mpy" else {})) as b:
        b.start()
        first = _activation(b)
        assert first["name"] == "TWOMES-D3AD48" and first["device_type"] == "Generic-Test"
        assert len(first["activation_token"]) == 16 and first["activation_token"].isdigit()
        if code == "mpy":
            assert any(".mpy" in p.name for p in (b.fs / "lib" / "twomes").iterdir())
        else:  # the app is in the romfs partition; /lib holds the boot-time modules only
            lib = {
                p.relative_to(b.fs / "lib").with_suffix(".py").as_posix()
                for p in (b.fs / "lib").rglob("*.mpy")
            }
            assert lib == BOOT_MODULES and not (b.fs / "lib" / "twomes" / "app.mpy").exists()
        assert not list((b.fs / "lib").rglob("*.py"))  # the device code runs as .mpy only
        b.power_cut()
        mark = b.mark()
        b.power_on()
        again = _activation(b, mark)
        assert again == first  # same name, same token after a power cut
        assert sum(1 for ln in b.lines if ln.startswith('{"name":')) == 2  # exactly one line per boot


def test_machine_reset_reboots_on_the_same_state(tmp_path: Path) -> None:
    with _board(tmp_path) as b:
        b.start()
        first = _activation(b)
        b.wait_for(r"state: portal", 20)
        mark = b.mark()
        b.press(3.5)  # forget Wi-Fi: the app resets the board
        b.wait_for(r"forgetting Wi-Fi", 10, start=mark)
        again = _activation(b, mark)
        assert again == first
        assert b.boots == 2 and b.exit_codes[0] == 93
        # the board's CPU time (twomes sim --timing) counts every boot: the first process's time is
        # kept when it ends, the second one's is added while it runs
        used = b.cpu_ns()
        with b._lock:
            second = cpu_ns(b._proc.pid) if b._proc is not None else 0
        assert 0 < second < used["device"] and used["hardware"] > 0


def test_factory_reset_makes_a_new_token(tmp_path: Path) -> None:
    with _board(tmp_path) as b:
        b.start()
        first = _activation(b)
        b.wait_for(r"state: portal", 20)
        mark = b.mark()
        b.button(True)
        time.sleep(3.5)
        # past the Wi-Fi-reset time the LED stops blinking and stays off: "let go now for Wi-Fi"
        assert b.led_pattern(1.5) == "off"
        time.sleep(5.5)  # past 10 s: factory reset
        b.button(False)
        b.wait_for(r"factory reset", 10, start=mark)
        again = _activation(b, mark)
        assert again["name"] == first["name"] and again["activation_token"] != first["activation_token"]


def test_short_press_prints_state_and_portal_led_blinks(tmp_path: Path) -> None:
    with _board(tmp_path) as b:
        b.start()
        b.wait_for(r"state: portal", 20)
        assert b.led_pattern(1.5) == "blinking"
        ap = b.ap()
        assert ap["active"] and ap["essid"] == "TWOMES-D3AD48" and ap["secured"]
        mark = b.mark()
        b.press(0.4)
        b.wait_for(r"button: state portal, firmware", 5, start=mark)
        time.sleep(0.5)
        assert b.running


def test_boards_side_by_side(tmp_path: Path) -> None:
    with (
        _board(tmp_path, "one", mac="24:6F:28:00:00:01") as a,
        _board(tmp_path, "two", mac="24:6F:28:00:00:02") as b,
    ):
        a.start()
        b.start()
        ia, ib = _activation(a), _activation(b)
        assert ia["name"] == "TWOMES-000001" and ib["name"] == "TWOMES-000002"
        assert ia["activation_token"] != ib["activation_token"]
        assert a.portal_port != b.portal_port


def _saved_wifi(b: VirtualBoard, ssid: str, password: str) -> None:
    nvs = {
        "twomes": {"wifi_ssid": ["blob", ssid.encode().hex()], "wifi_pass": ["blob", password.encode().hex()]}
    }
    (b.state / "nvs.json").write_text(json.dumps(nvs))


def test_portal_keeps_retrying_the_saved_network(tmp_path: Path) -> None:
    """The router is off when the device boots: portal, but the saved network is retried and joined
    once the router is back (no stuck portal)."""
    cfg = {"server_url": "http://127.0.0.1:9", "portal_retry_s": 5, "retry_base_s": 1, "retry_max_s": 5}
    with _board(tmp_path, config=cfg) as b:
        b.set_air([])
        _saved_wifi(b, "home", HOME["password"])
        b.start()
        b.wait_for(r"wifi: home: no such network", 20)
        b.wait_for(r"state: portal", 20)
        b.set_air([HOME])  # the router comes back
        b.wait_for(r"wifi: home: connected", 20)
        b.wait_for(r"state: activating", 20)  # online again (this server does not exist: it retries)


def test_idle_portal_closes_when_credentials_exist(tmp_path: Path) -> None:
    cfg = {"server_url": "http://127.0.0.1:9", "portal_idle_s": 10, "portal_retry_s": 3600}
    with _board(tmp_path, config=cfg) as b:
        b.set_air([])
        _saved_wifi(b, "home", HOME["password"])
        b.start()
        b.wait_for(r"state: portal", 20)
        b.wait_for(r"no visitors for 10 s: closing", 20)
        b.wait_for(r"wifi: home: no such network", 10)  # the saved network is tried again


def test_saved_settings_the_rule_refuses_are_dropped_and_the_portal_stays(tmp_path: Path) -> None:
    """Stored Wi-Fi settings that setup's rule refuses (a 5-character password, from an old firmware)
    are not tried, and the portal stays up (nothing to go back to). The retry and the idle time end in
    the same poll here: the idle check once read the dropped settings (saved[0] of None, found by
    pyright) and the app restarted."""
    cfg = {"server_url": "http://127.0.0.1:9", "portal_idle_s": 10, "portal_retry_s": 10}
    with _board(tmp_path, config=cfg) as b:
        b.set_air([])
        _saved_wifi(b, "home", "short")
        b.start()
        b.wait_for(r"state: portal", 20)
        b.wait_for(r"saved network not tried: the password must be", 20)
        mark = b.mark()
        time.sleep(3)
        later = "\n".join(b.lines[mark:])
        assert "closing" not in later and "unexpected error" not in later and "boot:" not in later
