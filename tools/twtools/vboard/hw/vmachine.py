# Simulated `machine`: Pin (button and LED wired to files in the state directory) and reset().
# The button file holds "1" while pressed; the LED file holds "<value> <changes>" so a test can tell a
# blinking LED (changes keep growing) from a solid one. Kept small: on the chip this is C, not heap.
import vstate

REBOOT_EXIT = 93  # exit code the runner reads as "machine.reset(): start me again"


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        b = vstate.board()
        self.role = "button" if id == b.get("button_pin", 0) else "led" if id == b.get("led_pin", 2) else ""
        self.v = 0
        self.changes = 0
        if self.role == "led":
            led = vstate.read_text("led").split()
            self.changes = int(led[1]) if len(led) == 2 else 0

    def value(self, v=None):
        if v is None:
            if self.role == "button":
                return 0 if vstate.read_text("button").strip() == "1" else 1
            return self.v
        v = 1 if v else 0
        if self.role == "led" and v != self.v:
            self.changes += 1
            vstate.write_bytes("led", b"%d %d" % (v, self.changes))
        self.v = v


def reset():
    raise SystemExit(REBOOT_EXIT)
