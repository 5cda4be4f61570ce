# Simulated `network`: WLAN station and access point over a "virtual air" file.
#
# The air file (path in board.json, re-read on every scan/connect so a test can change it while the
# board runs) is a JSON list of networks:
#   {"ssid": "home", "password": "secret", "rssi": -55, "channel": 6, "join_ms": 300,
#    "behavior": "ok" | "timeout"}      (open network: "password": "" ; "timeout": joins never finish)
# Station status codes are the ESP32 port's; joining takes join_ms of (real) time, like the chip.
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
AUTH_WEP = 1
AUTH_WPA_PSK = 2
AUTH_WPA2_PSK = 3
AUTH_WPA_WPA2_PSK = 4

_JOIN_MS_DEFAULT = 200


def _ms():
    try:
        return time.ticks_ms()
    except AttributeError:
        return int(time.monotonic() * 1000)


def _elapsed(t0):
    try:
        return time.ticks_diff(time.ticks_ms(), t0)
    except AttributeError:
        return _ms() - t0


def air():
    name = vstate.board().get("air", "air.json")
    p = name if name.startswith("/") else vstate.path(name)
    try:
        with open(p) as f:
            import json

            nets = json.loads(f.read())
    except (OSError, ValueError):
        return []
    return [n for n in nets if isinstance(n, dict) and isinstance(n.get("ssid"), str)]


def _find(ssid):
    for n in air():
        if n["ssid"] == ssid:
            return n
    return None


class WLAN:
    _instances = {}

    def __new__(cls, interface=STA_IF):
        # like the port: one object per interface
        if interface not in WLAN._instances:
            obj = object.__new__(cls)
            obj._init(interface)
            WLAN._instances[interface] = obj
        return WLAN._instances[interface]

    def __init__(self, interface=STA_IF):
        pass

    def _init(self, interface):
        self._if = interface
        self._active = False
        self._ssid = None
        self._key = None
        self._t0 = None
        self._status = STAT_IDLE
        self._ap = {"essid": "", "password": "", "authmode": AUTH_OPEN, "channel": 1, "max_clients": 4}

    # -- common
    def active(self, v=None):
        if v is None:
            return self._active
        self._active = bool(v)
        if not v:
            self._ssid = None
            self._status = STAT_IDLE
        if self._if == AP_IF:
            self._publish_ap()
        return None

    def config(self, *args, **kw):
        if args:
            key = args[0]
            if key == "mac":
                m = bytearray(vstate.mac())
                if self._if == AP_IF:
                    m[5] = (m[5] + 1) & 0xFF  # the ESP32 AP MAC is the station MAC + 1
                return bytes(m)
            if self._if == AP_IF and key in self._ap:
                return self._ap[key]
            if key in ("essid", "ssid"):
                return self._ssid or ""
            if key == "channel":
                n = _find(self._ssid) if self._ssid else None
                return n.get("channel", 1) if n else 1
            raise ValueError("unknown config param")
        for key in kw:
            if self._if == AP_IF:
                k = "essid" if key == "ssid" else "password" if key == "key" else key
                if k not in self._ap:
                    raise ValueError("unknown config param")
                self._ap[k] = kw[key]
            elif key not in ("dhcp_hostname", "hostname", "reconnects", "pm", "txpower"):
                raise ValueError("unknown config param")
        if self._if == AP_IF:
            if self._ap["authmode"] != AUTH_OPEN and len(self._ap["password"]) < 8:
                raise OSError("WPA2 needs a password of 8..63 characters")
            self._publish_ap()
        return None

    def ifconfig(self, cfg=None):
        if self._if == AP_IF:
            ip = vstate.board().get("ap_ip", "127.0.0.1")
            return (ip, "255.255.255.0", ip, ip)
        if self.isconnected():
            return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    # -- station
    def scan(self):
        if self._if != STA_IF or not self._active:
            raise OSError("STA must be active")
        out = []
        m = vstate.mac()
        for i, n in enumerate(air()):
            auth = AUTH_WPA2_PSK if n.get("password") else AUTH_OPEN
            bssid = bytes([0x02, 0x00, 0x00, m[3], m[4], i & 0xFF])
            out.append((n["ssid"].encode(), bssid, n.get("channel", 1), n.get("rssi", -60), auth, False))
        return out

    def connect(self, ssid=None, key=None, bssid=None):
        if self._if != STA_IF:
            raise OSError("not a station")
        if not self._active:
            raise OSError("Wifi Not Started")
        if isinstance(ssid, bytes):
            ssid = ssid.decode()
        self._ssid = ssid
        self._key = key or ""
        self._t0 = _ms()
        self._status = STAT_CONNECTING

    def disconnect(self):
        self._ssid = None
        self._status = STAT_IDLE

    def status(self, param=None):
        if param == "rssi":
            n = _find(self._ssid) if self._ssid else None
            return n.get("rssi", -60) if n else 0
        if self._if == AP_IF:
            if param == "stations":
                return []
            return STAT_GOT_IP if self._active else STAT_IDLE
        if self._status in (STAT_CONNECTING, STAT_GOT_IP) and self._ssid is not None:
            n = _find(self._ssid)
            if self._status == STAT_GOT_IP:
                if n is None or n.get("password", "") != self._key:
                    self._status = STAT_BEACON_TIMEOUT  # the network went away / changed its key
            elif _elapsed(self._t0) >= (n.get("join_ms", _JOIN_MS_DEFAULT) if n else _JOIN_MS_DEFAULT):
                if n is None:
                    self._status = STAT_NO_AP_FOUND
                elif n.get("behavior") == "timeout":
                    pass  # the chip keeps trying; the caller's own timeout decides
                elif n.get("password", "") != self._key:
                    self._status = STAT_WRONG_PASSWORD
                else:
                    self._status = STAT_GOT_IP
        return self._status

    def isconnected(self):
        if self._if == AP_IF:
            return False
        return self.status() == STAT_GOT_IP

    # -- access point: what the AP advertises is written to ap.json for tests and tools
    def _publish_ap(self):
        a = self._ap
        info = {
            "active": self._active,
            "essid": a["essid"],
            "authmode": a["authmode"],
            "channel": a["channel"],
            "secured": a["authmode"] != AUTH_OPEN,
        }
        # the AP password is printed on the console by design (like a label); never the STA key
        vstate.write_json("ap.json", info)
