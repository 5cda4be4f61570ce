# The one module that touches hardware. Everything else gets a Board (constructor injection), so the
# virtual board and the CPython fakes plug in here and nowhere else. Nothing happens at import time.
#
# It is also the one place where MicroPython and CPython (the host tests) differ: the clock, the free
# heap, TLS sockets and stream reads. Production code elsewhere has no hasattr() for the runtime.
import asyncio
import gc
import sys
import time

MICROPYTHON = sys.implementation.name == "micropython"


def mem_free():
    """Free MicroPython heap in bytes; -1 on CPython (host tests)."""
    return gc.mem_free() if MICROPYTHON else -1


# The host's side of the differences (the CPython clock, its client connection) lives with the host
# tests, host_tests/shims/hosthw.py: in device code its functions' records would be heap on the device.
if MICROPYTHON:
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
else:  # CPython: a monotonic millisecond clock with the same three calls (no wrap-around)
    from hosthw import ticks_add, ticks_diff, ticks_ms  # noqa: F401  # pyright: ignore[reportMissingImports]


def uncancel(task):
    """After a cancellation we turned into an error: CPython counts cancellations per task."""
    if not MICROPYTHON:
        task.uncancel()


def tls_context(cadata):
    """A TLS client context that verifies the server's certificate chain against `cadata` (DER) and,
    with the server_hostname given at connect, its name. (MicroPython's `ssl` defaults to CERT_NONE.)
    On MicroPython the port's `tls` module itself: `ssl` is a Python wrapper of it (1 KB more heap)."""
    if not MICROPYTHON:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=cadata)
        return ctx
    import tls

    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED  # pyright: ignore[reportAttributeAccessIssue] - not in the stubs
    ctx.load_verify_locations(cadata)
    return ctx


# ---- client connections (the HTTP client, twomes/online/http.py) ----------------------------------
# A connection is [socket, stream]: on MicroPython a non-blocking socket and asyncio's Stream over it
# (the public way to wait for a socket; the socket is kept next to it, not read from the Stream's
# attributes), on CPython (the host tests) the pair of _host_conn (host_tests/shims/hosthw.py). No class of our own per connection on
# the device and no coroutine per read: read_now() takes what has arrived from the socket, wait_read()
# and write() return asyncio's own awaitables. An https connection is wrapped with the TLS context its
# caller gives (tls_context(): 3 KB of heap on the 64-bit unix port, made once per phase by the server
# seam, twomes/online/server.py tls()); the wrap names the server, so every connection verifies the
# certificate chain and the name again. close() empties the list, so a finished coroutine that still
# holds the list does not hold the socket (docs/heap.md).


def connect(host, port, context):
    """A TCP connection -> [socket, stream], at once: the TCP connect and the TLS handshake complete in
    the background, the first write waits for them. `context`: None (plain TCP) or a tls_context(): the
    handshake verifies the server's certificate chain against its CA and the certificate's name
    against `host` (server_hostname), in every connection made with it."""
    if not MICROPYTHON:
        return _host_conn(host, port, context)
    import socket

    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], ai[1], ai[2])
    try:
        s.setblocking(False)
        try:
            s.connect(ai[-1])
        except OSError as e:
            if e.errno != 115:  # EINPROGRESS
                raise
        ai = None
        if context is not None:
            s = context.wrap_socket(s, server_hostname=host, do_handshake_on_connect=False)
            s.setblocking(False)
        return [s, asyncio.StreamReader(s)]
    except BaseException:
        s.close()
        raise


def read_now(conn, mv):
    """What the connection already holds, into mv, without waiting or allocating: bytes read, 0 when
    the peer closed, None when nothing is there yet - or when the read failed: the awaited read meets
    the failure again and names it. (No `except ... as e` and no tuple: either would put this frame on
    the heap at every call.)"""
    try:
        return conn[0].readinto(mv)
    except OSError:
        return None
    except ValueError:  # MicroPython's TLS
        return None


def wait_read(conn, mv):
    """An awaitable: wait until the connection is readable, then read into mv -> bytes read (0: closed),
    or None when nothing could be read after all (TLS: a partial record)."""
    return conn[1].readinto(mv)


def write(conn, data):
    """Send data (a buffer) -> an awaitable that waits until it is out (asyncio: it yields to the other
    tasks once even then). What is not sent at once is copied: data may change after the call."""
    st = conn[1]
    st.write(data)
    return st.drain()


def close(conn):
    """Close the connection's socket and let go of it; never raises. What a finished coroutine still
    holds (MicroPython keeps a coroutine's dead stack slots until it is freed) - the list, asyncio's
    Stream - no longer leads to the socket, and neither does asyncio's poller: MicroPython's
    select.poll keeps the last (object, events) pair its ipoll() handed out until it hands out another,
    so it holds the last socket it woke a task for - a closed socket and its TLS state, ~0.7 KB on the
    64-bit unix port - until another stream has an event, which in the running state can be minutes
    away (docs/heap.md). One ipoll(0) with an always-writable UDP socket registered hands
    out a pair that is not the closed socket; poll is level-triggered, so any other event it passes is
    handed to asyncio again by its next poll. (MicroPython's asyncio has no public way to its poller:
    asyncio.core._io_queue.) Only with 1 KB free (after a collection): a MemoryError inside poll.register() leaves the
    poller a table entry without its object, and its next poll dereferences it (MicroPython's
    extmod/modselect.c: "may crash. This case is not handled"; seen as a segfault in asyncio's next
    ipoll on the unix port with ~1.5 KB free). Short of that the poller keeps the closed socket until
    its next event. The TLS context stays with its owner (the seam) for the next connection."""
    try:
        conn[0].close()
    except Exception:  # noqa: BLE001 - closing must never raise
        pass
    if MICROPYTHON:
        conn[1].s = None
        if gc.mem_free() < 1024:
            gc.collect()  # (garbage is most of what is not free after a request)
            if gc.mem_free() < 1024:
                conn[0] = conn[1] = None
                return
        import select
        import socket

        try:
            poller = asyncio.core._io_queue.poller  # pyright: ignore[reportAttributeAccessIssue]
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                poller.register(s, select.POLLOUT)
                for _ in poller.ipoll(0):
                    pass
                poller.unregister(s)
            finally:
                s.close()
        except Exception:  # noqa: BLE001 - closing must never raise (the poller keeps the socket then)
            pass
    conn[0] = conn[1] = None


def put(buf, at, text, i=0, j=-1):
    """Copy text[i:j] (str: its UTF-8 bytes; j=-1: to the end) into buf at `at` -> where it ends, or -1
    when it does not fit (buf never grows). MicroPython copies from the str itself (no bytes copy)."""
    if at < 0:
        return -1
    mv = memoryview(text) if MICROPYTHON else memoryview(text.encode())  # pyright: ignore[reportArgumentType]
    if j < 0:
        j = len(mv)
    end = at + j - i
    if end > len(buf):
        return -1
    buf[at:end] = mv[i:j]
    return end


def _host_conn(host, port, ctx):
    """CPython (host tests only): the host's own [socket stand-in, stream] pair with the device's calls
    (host_tests/shims/hosthw.py; not device code: its classes would cost the device ~0.4K of heap
    for their functions' records, docs/heap.md)."""
    from hosthw import conn  # pyright: ignore[reportMissingImports]

    return conn(host, port, ctx)


def sleep_ms(ms):
    """asyncio's sleep in milliseconds (MicroPython: allocates nothing)."""
    if MICROPYTHON:
        return asyncio.sleep_ms(ms)  # pyright: ignore[reportAttributeAccessIssue]
    return asyncio.sleep(ms / 1000)


async def readinto(stream, mv):
    """Read what is there (at least one byte, waiting for it) into memoryview `mv`; 0 at end of stream."""
    if MICROPYTHON:
        return await stream.readinto(mv) or 0
    data = await stream.read(len(mv))
    mv[: len(data)] = data
    return len(data)


def sock_readinto(sock, buf):
    """What a non-blocking socket has (up to len(buf)) into `buf`, without waiting: bytes read, 0 when
    the peer closed (or reset) it, None when nothing is there yet."""
    try:
        if MICROPYTHON:
            return sock.readinto(buf)  # (None: EAGAIN)
        return sock.recv_into(buf)
    except OSError as e:
        return None if e.errno == 11 else 0  # EAGAIN (CPython: BlockingIOError)


async def stream(sock):
    """(reader, writer) asyncio streams over an accepted, non-blocking socket."""
    import asyncio

    if MICROPYTHON:
        s = asyncio.StreamReader(sock)  # one Stream reads and writes
        return s, s
    return await asyncio.open_connection(sock=sock)


async def recvfrom(sock, n, waiter=None):
    """(data, peer) of the next datagram of a non-blocking UDP socket, waiting on the socket (asyncio
    poll), not on a timer: a task waiting here costs nothing while nothing arrives. `waiter`: the
    socket's asyncio stream (MicroPython), made once by the caller with datagram_waiter(); its read(0)
    returns as soon as the socket is readable and takes nothing from it (public asyncio only)."""
    if not MICROPYTHON:
        # CPython only (host tests): the stubs describe MicroPython's asyncio
        return await asyncio.get_running_loop().sock_recvfrom(sock, n)  # pyright: ignore[reportAttributeAccessIssue]
    while True:
        try:
            got = sock.recvfrom(n)
            if got is not None:
                return got
        except OSError as e:
            if e.args[0] != 11:  # EAGAIN: nothing yet
                raise
        await waiter.read(0)  # pyright: ignore[reportOptionalMemberAccess] - not None on MicroPython


def datagram_waiter(sock):
    """What recvfrom() waits on: the socket's asyncio stream (None on CPython)."""
    return asyncio.StreamReader(sock) if MICROPYTHON else None


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
        # (the stubs' Partition takes a label only; the firmware also takes Partition.RUNNING)
        if which == "running":
            return p(p.RUNNING)  # pyright: ignore[reportArgumentType]
        if which == "next":
            return p(p.RUNNING).get_next_update()  # pyright: ignore[reportArgumentType]
        found = p.find(p.TYPE_APP, label=which) or p.find(p.TYPE_DATA, label=which)
        return found[0] if found else None

    # console
    def console_in(self):
        return sys.stdin.buffer

    def console_write(self, data):
        # binary: on the chip sys.stdout.write turns "\n" into "\r\n", even inside an Improv frame
        out = getattr(sys.stdout, "buffer", sys.stdout)
        out.write(data)
