# Bench and test material, NOT device code: the stand-in board that the onboarding's heap figures run on
# (`micropython -X heapsize=N`, unix port): benchdata/portal_main.py (`twomes bench --only portal`) and
# host_tests/portal/heap_main.py (test_portal_heap.py). Its station joins after 300 ms on a simulated air
# given by the main: {ssid: (password, rssi)}; a network whose password is None never answers. This
# module doubles as the `network` module (constants) of the board. Ident and St: the device identity
# and the NVS store's interface (twomes.wifi saves the working credentials in it).
import sys
import time

_MAC = b"\x24\x6f\x28\xd3\xad\x48"
STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
AUTH_OPEN = 0
AUTH_WPA2_PSK = 3


class WLAN:
    def __init__(self, air):
        self.air = air
        self.st = STAT_IDLE
        self.ssid = self.key = None
        self.t0 = 0

    def active(self, v=None):
        return True

    def config(self, *args, **kw):
        return _MAC

    def scan(self):
        return [(s.encode(), _MAC, 1, self.air[s][1], 3, False) for s in self.air]

    def connect(self, ssid, key):
        self.ssid, self.key, self.t0, self.st = ssid, key, time.ticks_ms(), STAT_CONNECTING

    def disconnect(self):
        self.st = STAT_IDLE

    def isconnected(self):
        return self.status() == STAT_GOT_IP

    def ifconfig(self):
        return ("127.0.0.1", "255.255.255.0", "127.0.0.1", "127.0.0.1")

    def status(self):
        if self.st == STAT_CONNECTING and time.ticks_diff(time.ticks_ms(), self.t0) > 300:
            net = self.air.get(self.ssid)
            if net is None:
                self.st = STAT_NO_AP_FOUND
            elif net[0] is not None:
                self.st = STAT_GOT_IP if net[0] == self.key else STAT_WRONG_PASSWORD
        return self.st


class Board:
    """The parts of twomes.hw.Board the onboarding uses."""

    def __init__(self, air):
        self.network = sys.modules[__name__]
        self.sta = WLAN(air)
        self.ap = WLAN(air)

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, a, b):
        return time.ticks_add(a, b)

    def console_in(self):
        return sys.stdin.buffer

    def console_write(self, data):
        sys.stdout.write(data)

    def kbd_intr(self, ch):
        pass


class Ident:
    name = "TWOMES-D3AD48"
    device_type = "Generic-Test"
    ap_password = "abcdefgh23"


class St:
    def __init__(self):
        self.d = {}

    def get(self, k):
        return self.d.get(k)

    def put(self, k, v):
        self.d[k] = v

    def delete(self, k):
        self.d.pop(k, None)

    def commit(self):
        pass
