# Simulated `network`: WLAN station and access point over a "virtual air" file.
#
# The air file (board.json "air"; parsed again when the runner bumps "air.gen" or the file's time or size
# changes, so a test or a person can change the air while the board runs) is a JSON list of networks:
#   {"ssid": "home", "password": "secret", "rssi": -55, "channel": 6, "join_ms": 300,
#    "behavior": "ok" | "timeout"}      (open network: "password": "" ; "timeout": joins never finish)
# Station status codes are the ESP32 port's; joining takes join_ms of real time, like the chip.
# Kept small: on the chip this module is C and costs the app no heap.
import json
import time

import vstate

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
AUTH_OPEN = 0
AUTH_WPA2_PSK = 3
_ifs = {}


def _ms():
    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.monotonic() * 1000)


def _since(t0):
    return time.ticks_diff(time.ticks_ms(), t0) if hasattr(time, "ticks_ms") else _ms() - t0


_air = [None, None]  # (generation, networks): parsed again only when the runner changes the air


def air():
    import os

    name = vstate.board().get("air", "air.json")
    path = name if name[0] == "/" else vstate.path(name)
    try:
        st = os.stat(path)
        gen = (vstate.read_text("air.gen", "0"), st[8], st[6])  # runner's counter, or a hand edit
    except OSError:
        gen = None
    if gen is not None and _air[0] == gen:
        return _air[1]
    try:
        with open(path) as f:
            nets = [n for n in json.loads(f.read()) if isinstance(n, dict) and isinstance(n.get("ssid"), str)]
    except (OSError, ValueError):
        nets = []
    _air[0], _air[1] = gen, nets
    return nets


def _find(ssid):
    for n in air():
        if n["ssid"] == ssid:
            return n
    return None


def WLAN(interface=STA_IF):
    """One object per interface, like the port."""
    if interface not in _ifs:
        _ifs[interface] = _WLAN(interface)
    return _ifs[interface]


class _WLAN:
    def __init__(self, interface):
        self.ap = interface == AP_IF
        self.on = False
        self.ssid = None
        self.key = ""
        self.t0 = 0
        self.st = STAT_IDLE
        self.apcfg = {"essid": "", "password": "", "authmode": AUTH_OPEN, "channel": 1, "max_clients": 4}

    def active(self, v=None):
        if v is None:
            return self.on
        self.on = bool(v)
        if not v:
            self.ssid = None
            self.st = STAT_IDLE
        if self.ap:
            self._publish()

    def config(self, *args, **kw):
        if args:
            key = args[0]
            if key == "mac":
                m = bytearray(vstate.mac())
                if self.ap:
                    m[5] = (m[5] + 1) & 0xFF  # the ESP32's AP MAC is the station MAC + 1
                return bytes(m)
            if self.ap and key in self.apcfg:
                return self.apcfg[key]
            if key in ("essid", "ssid"):
                return self.ssid or ""
            raise ValueError("unknown config param")
        for key in kw:
            k = "essid" if key == "ssid" else "password" if key == "key" else key
            if not self.ap or k not in self.apcfg:
                raise ValueError("unknown config param")
            self.apcfg[k] = kw[key]
        if self.apcfg["authmode"] != AUTH_OPEN and len(self.apcfg["password"]) < 8:
            raise OSError("WPA2 needs a password of 8..63 characters")
        self._publish()

    def ifconfig(self, cfg=None):
        if self.ap:
            ip = vstate.board().get("ap_ip", "127.0.0.1")
            return (ip, "255.255.255.0", ip, ip)
        ip = "127.0.0.1" if self.isconnected() else "0.0.0.0"
        return (ip, "255.0.0.0", ip, ip)

    def scan(self):
        if self.ap or not self.on:
            raise OSError("STA must be active")
        m = vstate.mac()
        return [
            (
                n["ssid"].encode(),
                bytes([2, 0, 0, m[3], m[4], i & 255]),
                n.get("channel", 1),
                n.get("rssi", -60),
                AUTH_WPA2_PSK if n.get("password") else AUTH_OPEN,
                False,
            )
            for i, n in enumerate(air())
        ]

    def connect(self, ssid=None, key=None, bssid=None):
        if self.ap or not self.on:
            raise OSError("Wifi Not Started")
        self.ssid = ssid.decode() if isinstance(ssid, bytes) else ssid
        self.key = key or ""
        self.t0 = _ms()
        self.st = STAT_CONNECTING

    def disconnect(self):
        self.ssid = None
        self.st = STAT_IDLE

    def status(self, param=None):
        if self.ap:
            return [] if param == "stations" else STAT_GOT_IP if self.on else STAT_IDLE
        n = _find(self.ssid) if self.ssid else None
        if param == "rssi":
            return n.get("rssi", -60) if n else 0
        if self.st == STAT_GOT_IP:
            if n is None or n.get("password", "") != self.key:
                self.st = STAT_BEACON_TIMEOUT  # the network went away or changed its key
        elif self.st == STAT_CONNECTING and _since(self.t0) >= (n.get("join_ms", 200) if n else 200):
            if n is None:
                self.st = STAT_NO_AP_FOUND
            elif n.get("behavior") == "timeout":
                pass  # the chip keeps trying; the caller's own timeout decides
            elif n.get("password", "") != self.key:
                self.st = STAT_WRONG_PASSWORD
            else:
                self.st = STAT_GOT_IP
        return self.st

    def isconnected(self):
        return not self.ap and self.status() == STAT_GOT_IP

    def _publish(self):
        # what the AP advertises, for tests and tools (its password is printed by design; never the STA key)
        a = self.apcfg
        vstate.write_json(
            "ap.json",
            {
                "active": self.on,
                "essid": a["essid"],
                "authmode": a["authmode"],
                "channel": a["channel"],
                "secured": a["authmode"] != AUTH_OPEN,
            },
        )
