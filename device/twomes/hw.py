# The one module that touches hardware. Everything else gets a Board (constructor injection), so the
# virtual board and the CPython fakes plug in here and nowhere else. Nothing happens at import time.
import sys
import time

# The runtime differences the device code meets, settled here once: MicroPython's asyncio streams read
# into a buffer without allocating and wrap a plain socket; CPython's (host tests) do neither.
MICROPYTHON = sys.implementation.name == "micropython"


async def readinto(stream, mv):
    """Read what is there (at least one byte, waiting for it) into memoryview `mv`; 0 at end of stream."""
    if MICROPYTHON:
        return await stream.readinto(mv) or 0
    data = await stream.read(len(mv))
    mv[: len(data)] = data
    return len(data)


def sock_readinto(sock, buf):
    """What a non-blocking socket has (up to len(buf)) into `buf`, without waiting; 0 if nothing."""
    try:
        if MICROPYTHON:
            return sock.readinto(buf) or 0
        return sock.recv_into(buf)
    except OSError:
        return 0


async def stream(sock):
    """(reader, writer) asyncio streams over an accepted, non-blocking socket."""
    import asyncio

    if MICROPYTHON:
        s = asyncio.StreamReader(sock)  # one Stream reads and writes
        return s, s
    return await asyncio.open_connection(sock=sock)


def mem_free():
    """Free heap after a collection; -1 where the runtime does not say (CPython)."""
    import gc

    gc.collect()
    return gc.mem_free() if MICROPYTHON else -1


def reset():
    """Reset without a Board (when building the Board itself failed)."""
    import machine

    machine.reset()


class Board:
    """Wi-Fi interfaces, NVS, flash partitions, button, LED, clock, console and reset of one ESP32.

    `machine`, `network` and `esp32` default to the firmware's own modules; the virtual board and the
    host tests pass simulations with the same API.
    """

    def __init__(self, cfg, machine=None, network=None, esp32=None, clock=None):
        if machine is None:
            import machine
        if network is None:
            import network
        if esp32 is None:
            import esp32
        self.machine = machine
        self.network = network
        self.esp32 = esp32
        self.cfg = cfg
        # Calls that need nothing of ours are the modules' own functions, bound here (a method of our
        # own for each would cost heap for nothing). Ticks wrap (after ~12 days on the chip): callers
        # use ticks_add/ticks_diff, never plain + and -. Host fakes pass their own clock.
        clock = clock or time
        self.ticks_ms = clock.ticks_ms
        self.ticks_diff = clock.ticks_diff
        self.ticks_add = clock.ticks_add
        self.nvs = esp32.NVS  # nvs(namespace)
        self.reset = machine.reset
        import micropython

        self.kbd_intr = micropython.kbd_intr  # kbd_intr(-1): 0x03 is data (Improv), 3: Ctrl-C again
        self.sta = network.WLAN(network.STA_IF)
        self.ap = network.WLAN(network.AP_IF)
        pin = machine.Pin
        self.button = pin(cfg.button_pin, pin.IN, pin.PULL_UP)
        self.led = pin(cfg.led_pin, pin.OUT)
        self._led_on = 0 if cfg.led_active_low else 1
        self.led_set(False)

    # identity
    def mac(self):
        self.sta.active(True)
        return self.sta.config("mac")

    # outputs / inputs
    def led_set(self, on):
        self.led.value(self._led_on if on else 1 - self._led_on)

    def button_pressed(self):
        return self.button.value() == 0  # BOOT button: pulled up, pressed pulls to ground

    # storage
    def partition(self, which):
        """`which` is "running", "next" (next OTA slot) or a label."""
        p = self.esp32.Partition
        if which == "running":
            return p(p.RUNNING)
        if which == "next":
            return p(p.RUNNING).get_next_update()
        found = p.find(p.TYPE_APP, label=which) or p.find(p.TYPE_DATA, label=which)
        return found[0] if found else None

    # console
    def console_in(self):
        return sys.stdin.buffer

    def console_write(self, data):
        # binary: on the chip sys.stdout.write turns "\n" into "\r\n", even inside an Improv frame
        out = getattr(sys.stdout, "buffer", sys.stdout)
        out.write(data)
