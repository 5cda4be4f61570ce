"""The portal inside `micropython -X heapsize=64K` (the virtual board's heap): page, POST, API, DNS and
Improv without a MemoryError, and what it costs."""

from __future__ import annotations

import json
import socket
import time
import urllib.parse

from vportal import CAFE, SPECIAL_PW, get_json, http, mem_figures, wait_result

from twtools.vboard.runner import VirtualBoard


def _dns(vb: VirtualBoard, name: str) -> bytes:
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(q, ("127.0.0.1", vb.dns_port))
        return s.recv(600)


def test_portal_runs_in_64k_heap(portal_board: VirtualBoard) -> None:
    vb = portal_board
    assert vb.heap == "64K"
    ap = vb.ap()
    assert ap["active"] and ap["essid"].startswith("TWOMES-") and ap["secured"]
    assert _dns(vb, "connectivitycheck.gstatic.com")[-4:] == bytes([127, 0, 0, 1])
    status, headers, _ = http(vb, "/generate_204")
    assert status == 302 and headers["location"] == vb.portal_url + "/"
    for _ in range(3):
        status, _, page = http(vb, "/")
        assert status == 200 and b"home" in page and CAFE.replace("&", "&amp;").encode() in page
    assert len(get_json(vb, "/api/networks")["networks"]) == 6
    body = urllib.parse.urlencode({"ssid": CAFE, "password": SPECIAL_PW, "name": "Hall"}).encode()
    status, headers, _ = http(vb, "/connect", body, "application/x-www-form-urlencoded")
    assert status == 303
    status, _, page = http(vb, "/result")
    assert status == 200 and b"Testing" in page
    st = wait_result(vb)
    assert st["result"] == "joined" and st["result_ssid"] == CAFE
    status, _, page = http(vb, "/result")
    assert "Connected to Caf\u00e9".encode() in page
    status, _, _ = http(
        vb, "/api/wifi", json.dumps({"ssid": "home", "password": "bad-password"}).encode(), "application/json"
    )
    assert status == 202
    assert wait_result(vb)["result"] == "wrong_password"
    time.sleep(0.3)
    text = "\n".join(vb.lines)
    assert "MemoryError" not in text and "Traceback" not in text, text[-3000:]
    assert vb.running
    mem = mem_figures(vb)
    print(f"\nportal heap figures (64K heap): {mem}")
    # the portal, Improv and the fake controller leave most of the heap to the rest of the app
    assert mem["heap"] <= 65536 and mem["min_free"] > 20000, mem
