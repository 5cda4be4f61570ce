# The serial console while the app runs (the update boot and the online phase): a lone Ctrl-C stops the
# app (MicroPython's REPL), and Improv Wi-Fi answers "provisioned" with the device's URL, the firmware's
# chip family, and refuses Wi-Fi settings (twomes.ap.improv, running()).
#
# Ctrl-C is off on the console (kbd_intr(-1)) while this listens: the chip's UART driver turns a 0x03
# into KeyboardInterrupt as it arrives, before any code could see that an Improv frame started, and
# every Improv RPC frame carries a 0x03 (its type byte). So a 0x03 is judged here: outside a frame it is
# Ctrl-C (a person, mpremote), inside one it is data. It is judged when the app's event loop reads it:
# within one step of the loop (a step that blocks, such as a TLS handshake, delays it).
#
# Small on purpose: until an "I" (the start of Improv's magic) comes, only this module is loaded; the
# framing and the RPC core (twomes.ap.improv_serial, twomes.ap.improv, ~4 KB of heap) are loaded then
# and unloaded again after _QUIET_MS of silence.
import asyncio
import sys

from micropython import const

from twomes import VERSION, unload
from twomes.log import log

_QUIET_MS = const(5000)  # silence after which Improv's modules are unloaded
_NOISY_MS = const(100)  # improv_serial's silences (its consts are private to it)
_STALE_MS = const(1000)


async def run(app, url, reader=None, quiet_ms=_QUIET_MS, wait_for=None):
    """Until cancelled, a lone Ctrl-C (then app.interrupted is set) or the console closes (host tests).
    `app`: board, ident, interrupted. `reader` (the console stream), `quiet_ms` and `wait_for`
    (asyncio.wait_for unless given: the silence's clock) are the tests'."""
    b = app.board
    b.kbd_intr(-1)  # 0x03 is data here, not Ctrl-C
    try:
        if reader is None:
            reader = asyncio.StreamReader(b.console_in())
        while True:
            data = await reader.read(1)
            if not data:
                return  # console closed (host tests)
            c = data[0]
            if c == 3:
                app.interrupted = True
                return
            if c == 73:  # "I": maybe an Improv frame
                if not await _improv(app, url, reader, data, quiet_ms, wait_for or asyncio.wait_for):
                    return
    finally:
        b.kbd_intr(3)
        log("improv", "console listener ended")


async def _improv(app, url, reader, data, quiet_ms, wait_for):
    """Improv with its modules loaded, from the byte `data` on, until `quiet_ms` of silence (True) or
    the end (False). No credential test runs here (running() refuses Wi-Fi settings)."""
    before = list(sys.modules)
    ser = None
    from twomes.ap import improv_serial

    try:
        b = app.board
        ser = improv_serial.Serial(app, app.ident, VERSION, b.console_write)
        ser.improv.running(url)
        last = b.ticks_ms()
        while True:
            ser.feed(data)
            if ser.interrupted:
                app.interrupted = True
                return False
            try:
                data = await wait_for(reader.read(1), quiet_ms / 1000)
            except asyncio.TimeoutError:
                return True  # quiet: a partial frame goes with the framing
            if not data:
                return False
            now = b.ticks_ms()
            gap = b.ticks_diff(now, last)
            last = now
            if gap >= _NOISY_MS:  # as improv_serial.console: the framing's silences
                ser.quiet()
                if gap >= _STALE_MS and not ser.idle():
                    ser.drop()
    finally:
        ser = improv_serial = None
        unload(*[n[7:] for n in sys.modules if n[:7] == "twomes." and n not in before])
