# Simulated `machine`: Pin (button and LED wired to files in the state directory) and reset().
# The button file holds "1" while pressed; the LED file holds "<value> <changes>" so a test can tell a
# blinking LED (changes keep growing) from a solid one.
import sys

import vstate

REBOOT_EXIT = 93  # exit code the runner reads as "machine.reset(): start me again"
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = mode
        self.pull = pull
        b = vstate.board()
        self._role = (
            "button" if id == b.get("button_pin", 0) else "led" if id == b.get("led_pin", 2) else None
        )
        self._value = 0 if value is None else value
        self._changes = 0
        if self._role == "led":
            led = vstate.read_text("led").split()
            if len(led) == 2:
                self._changes = int(led[1])
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            if self._role == "button":
                return 0 if vstate.read_text("button").strip() == "1" else 1
            return self._value
        v = 1 if v else 0
        if self._role == "led" and v != self._value:
            self._changes += 1
            self._value = v
            vstate.write_bytes("led", b"%d %d" % (v, self._changes))
        self._value = v

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


def reset():
    try:
        sys.stdout.flush()
    except AttributeError:
        pass
    raise SystemExit(REBOOT_EXIT)


def reset_cause():
    return HARD_RESET if vstate.read_text("reset_cause").strip() == "reset" else PWRON_RESET


def unique_id():
    return vstate.mac()


def freq(hz=None):
    return 240000000
