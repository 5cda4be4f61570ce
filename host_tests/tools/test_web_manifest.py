"""web/manifest.json is an ESP Web Tools manifest (the fields and chip families its `Manifest` and
`Build` types allow, as in esp-web-tools 10) for the firmware this repository builds."""

from __future__ import annotations

import json
import re

from twtools import REPO

CHIP_FAMILIES = {
    "ESP32", "ESP32-C2", "ESP32-C3", "ESP32-C5", "ESP32-C6", "ESP32-C61", "ESP32-H2", "ESP32-P4",
    "ESP32-S2", "ESP32-S3", "ESP8266",
}  # fmt: skip
KEYS = {"name", "version", "home_assistant_domain", "funding_url", "new_install_prompt_erase"}
KEYS |= {"new_install_skip_erase", "new_install_improv_wait_time", "builds"}


def test_manifest_is_what_esp_web_tools_reads() -> None:
    m = json.loads((REPO / "web" / "manifest.json").read_text())
    assert set(m) <= KEYS and isinstance(m["name"], str) and m["name"]
    version = re.search(r'^VERSION = "([^"]+)"', (REPO / "device/twomes/__init__.py").read_text(), re.M)
    assert version and m["version"] == version.group(1)  # the firmware's own version
    assert isinstance(m["new_install_improv_wait_time"], int) and m["new_install_improv_wait_time"] > 0
    assert m["builds"], "no builds"
    for b in m["builds"]:
        assert set(b) <= {"chipFamily", "parts", "serialType"} and b["chipFamily"] in CHIP_FAMILIES
        for p in b["parts"]:
            assert set(p) == {"path", "offset"} and isinstance(p["offset"], int)
            assert "/" not in p["path"] and p["path"].endswith(".bin")  # served next to the manifest
    esp32 = next(b for b in m["builds"] if b["chipFamily"] == "ESP32")
    assert esp32["parts"][0]["offset"] == 0x1000  # a merged image starts at the ESP32's bootloader offset


def test_the_page_loads_the_install_button_with_the_manifest() -> None:
    page = (REPO / "web" / "index.html").read_text()
    assert '<script type="module" src="esp-web-tools/install-button.js">' in page
    assert '<esp-web-install-button manifest="manifest.json">' in page
