# Improv Wi-Fi (version 1), the RPC core: one RPC command in (its bytes), replies out through `send`
# (state, error, RPC result), and the slow part (testing the credentials) through the setup controller.
# Transport-free: the serial framing and the console loop are twomes.ap.improv_serial; a BLE transport
# would map the same replies onto its characteristics.
#
# Two uses: setup mode (`ctl` is the setup controller: scans, credential tests) and the running app
# (running(url) called: the device is provisioned). While running it answers "get state" with
# _PROVISIONED and the device's URL and "get device info" as in setup mode, lists no networks (a scan
# would disturb the station's link) and refuses Wi-Fi settings with "unknown RPC command" (not
# available in this state): a device in the field changes networks only through setup mode, after a
# long button press (docs/setup-mode.md, "Improv"). ESPHome re-provisions here instead.
import sys

from micropython import const

from twomes import wifi
from twomes.ap.creds import listed, shown
from twomes.log import log

# reply kinds (= the serial packet types). Private (_NAME) but for the two the framing sends itself:
# a public const is a global, one more name in the heap for good when Improv is used
_STATE = const(0x01)
ERROR = const(0x02)
_RESULT = const(0x04)
# states
_READY = const(0x02)
_PROVISIONING = const(0x03)
_PROVISIONED = const(0x04)
# errors
_E_NONE = const(0x00)
E_INVALID = const(0x01)
_E_UNKNOWN_RPC = const(0x02)
_E_CONNECT = const(0x03)
_E_UNKNOWN = const(0xFF)
# RPC commands
_C_WIFI = const(0x01)
_C_STATE = const(0x02)
_C_INFO = const(0x03)
_C_SCAN = const(0x04)


def strings(cmd, items):
    """An RPC result's data: command, length, then each string as length + UTF-8 bytes."""
    body = bytearray([cmd, 0])
    for s in items:
        b = s.encode() if isinstance(s, str) else bytes(s)
        body.append(len(b))
        body.extend(b)
    body[1] = len(body) - 2
    return bytes(body)


def chip_family(machine=None):
    """The chip the running firmware was built for, as Improv and ESP Web Tools name it ("ESP32",
    "ESP32-S3", "ESP32-C3"), from MicroPython's machine string ("Generic ESP32S3 module with ESP32S3").
    A firmware that is not built for a chip says what it is: the unix port (the virtual board) gives
    "unix port (linux)", CPython (the host tests) "cpython (linux)"."""
    if machine is None:
        machine = getattr(sys.implementation, "_machine", "")
    i = machine.rfind(" with ")
    if i < 0:
        name = "unix port" if sys.implementation.name == "micropython" else sys.implementation.name
        return "%s (%s)" % (name, sys.platform)
    chip = machine[i + 6 :].strip().upper()
    if chip[:5] == "ESP32" and len(chip) > 5 and chip[5] != "-":
        chip = "ESP32-" + chip[5:]  # ESP32S3 -> ESP32-S3, as esptool and ESP Web Tools write it
    return chip


class Improv:
    def __init__(self, ctl, ident, version, send):
        """`send(kind, data)`: one reply (_STATE, ERROR or _RESULT with its data bytes) to the client."""
        self.ctl = ctl
        self.ident = ident
        self.version = version
        self.send = send
        self.state = _READY
        self.urls = ()  # redirect URL(s) reported once provisioned (none: the device has no local page)
        self.fixed = False  # the app runs: Wi-Fi settings are not taken (running())

    def running(self, url):
        """The app runs (provisioned): answer with `url` (the device's page), refuse Wi-Fi settings."""
        self.fixed = True
        self.state = _PROVISIONED
        self.urls = (url,)

    def rpc(self, data):
        """One RPC command packet (command, length, payload). Returns (ssid, password) when the caller
        must run provision() (never waits itself), else None."""
        if len(data) < 2 or data[1] != len(data) - 2:
            self.send(ERROR, bytes([E_INVALID]))
            return None
        cmd = data[0]
        if cmd == _C_WIFI:
            p = data[2:]
            try:
                ls = p[0]
                lp = p[1 + ls]
                if 2 + ls + lp != len(p):
                    raise ValueError("lengths")
                creds = (bytes(p[1 : 1 + ls]).decode(), bytes(p[2 + ls :]).decode())
            except (IndexError, ValueError):  # (UnicodeError is a ValueError)
                self.send(ERROR, bytes([E_INVALID]))
                return None
            if self.fixed:  # running: Wi-Fi changes go through setup mode (see the top)
                log("improv", "Wi-Fi settings refused while running: hold the button to set up Wi-Fi")
                self.send(ERROR, bytes([_E_UNKNOWN_RPC]))
                return None
            if self.state == _PROVISIONING:  # one attempt at a time
                self.send(_STATE, bytes([_PROVISIONING]))
                return None
            self.send(ERROR, bytes([_E_NONE]))
            self.send(_STATE, bytes([_PROVISIONING]))
            self.state = _PROVISIONING  # (after the replies: if they fail for want of heap, nothing runs)
            return creds
        if cmd == _C_STATE:
            self.send(_STATE, bytes([self.state]))
            if self.state == _PROVISIONED:
                self.send(_RESULT, strings(_C_STATE, self.urls))
        elif cmd == _C_INFO:
            self.send(_RESULT, strings(_C_INFO, ("twomes", self.version, chip_family(), self.ident.name)))
        elif cmd == _C_SCAN:
            nets = b"" if self.fixed else self.ctl.nets
            for ssid, rssi, secured in listed(nets):  # one result per network, as they go
                self.send(_RESULT, strings(_C_SCAN, (ssid, str(rssi), "YES" if secured else "NO")))
            self.send(_RESULT, strings(_C_SCAN, ()))
        else:
            self.send(ERROR, bytes([_E_UNKNOWN_RPC]))
        return None

    async def provision(self, ssid, password):
        """Test the credentials through the controller (which checks them and refuses bad ones or a
        second test with a ValueError) and send the outcome."""
        code = wifi.FAILED
        bad = None
        try:
            log("improv", "testing network %s (password: stored)" % shown(ssid))
            code = await self.ctl.test(ssid, password)
        except ValueError as e:
            bad = str(e)
        except Exception as e:  # noqa: BLE001 - task boundary: report, keep listening
            log("improv", "provisioning failed: %s" % type(e).__name__)
        finally:
            password = None
            self.state = _PROVISIONED if code == wifi.JOINED else _READY  # never left "provisioning"
        if code == wifi.JOINED:
            self.send(_STATE, bytes([_PROVISIONED]))
            self.send(_RESULT, strings(_C_WIFI, self.urls))
            return
        log("improv", "could not join %s: %s" % (shown(ssid), bad or wifi.REASONS.get(code, "error")))
        self.send(ERROR, bytes([_E_CONNECT]))
        self.send(_STATE, bytes([_READY]))
