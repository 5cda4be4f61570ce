# Improv Wi-Fi serial v1: frames, checksums, RPCs, frames split across reads and mixed with text
# (twomes.ap.improv: the RPC core; twomes.ap.improv_serial: the framing and the console loop).
import asyncio

import portal_fakes as pf

import support
from twomes import wifi
from twomes.ap import improv_serial

# the protocol's numbers (private consts in the device module)
T_STATE = 1
T_ERROR = 2
T_RPC = 3
T_RESULT = 4
READY = 2
PROVISIONING = 3
PROVISIONED = 4
C_WIFI = 1
C_STATE = 2
C_INFO = 3
C_SCAN = 4
REQ_STATE = bytes(
    [0x49, 0x4D, 0x50, 0x52, 0x4F, 0x56, 0x01, 0x03, 0x02, 0x02, 0x00, 0xE5]
)  # the spec's example


class _Imp:
    """The serial framing with its RPC core; feed() returns the reply frames (without their newline)."""

    def __init__(self):
        board, ident, cfg, self.ctl = pf.make()
        self.ident = ident
        self.out = []
        self.ser = improv_serial.Serial(self.ctl, ident, "1.2.3", self.out.append)

    def _take(self):
        frames = []
        for f in self.out:
            assert f[-1:] == b"\n"
            frames.append(f[:-1])
        del self.out[:]
        return frames

    def feed(self, data):
        self.ser.feed(data)
        return self._take()

    @property
    def state(self):
        return self.ser.improv.state

    @property
    def pending(self):
        return self.ser.pending

    async def provision(self):
        ssid, password = self.ser.pending
        self.ser.pending = None
        await self.ser.improv.provision(ssid, password)
        return self._take()


def _imp():
    return _Imp()


def _rpc(cmd, payload=b""):
    return improv_serial.frame(T_RPC, bytes([cmd, len(payload)]) + payload)


def _wifi_rpc(ssid, password):
    s, p = ssid.encode(), password.encode()
    return _rpc(C_WIFI, bytes([len(s)]) + s + bytes([len(p)]) + p)


def _parse(f):
    """(type, data) of one frame, checking magic, version, length and checksum."""
    assert f[:6] == b"IMPROV" and f[6] == 1 and f[8] == len(f) - 10
    assert sum(f[:-1]) & 0xFF == f[-1]
    return f[7], f[9:-1]


def _strings(data):
    out = []
    i = 2
    assert data[1] == len(data) - 2
    while i < len(data):
        n = data[i]
        out.append(bytes(data[i + 1 : i + 1 + n]).decode())
        i += 1 + n
    return out


def test_frame_format_matches_the_spec_example():
    assert _rpc(C_STATE) == REQ_STATE
    assert improv_serial.frame(T_STATE, b"\x02") == b"IMPROV\x01\x01\x01\x02" + bytes(
        [sum(b"IMPROV\x01\x01\x01\x02") & 0xFF]
    )


def test_request_current_state_and_device_info():
    imp = _imp()
    out = imp.feed(REQ_STATE)
    assert [_parse(f) for f in out] == [(T_STATE, b"\x02")]
    out = imp.feed(_rpc(C_INFO))
    t, data = _parse(out[0])
    assert t == T_RESULT and data[0] == C_INFO
    # the chip family of the running firmware: here not a chip, the runtime the tests run on
    import sys

    runtime = "unix port" if sys.implementation.name == "micropython" else "cpython"
    assert _strings(data) == ["twomes", "1.2.3", "%s (%s)" % (runtime, sys.platform), imp.ident.name]


def test_chip_family_from_micropythons_machine_string():
    from twomes.ap.improv import chip_family

    assert chip_family("Generic ESP32 module with ESP32") == "ESP32"
    assert chip_family("Generic ESP32S3 module with Octal-SPIRAM with ESP32S3") == "ESP32-S3"
    assert chip_family("ESP32C3 module with ESP32C3") == "ESP32-C3"
    assert chip_family("Olimex ESP32-POE with ESP32") == "ESP32"
    assert chip_family("ESP module with ESP8266") == "ESP8266"


def test_running_app_answers_provisioned_with_its_url_and_refuses_wifi_settings():
    """After provisioning (the app runs): state PROVISIONED and the URL, device info as in setup mode,
    no networks listed, Wi-Fi settings refused (changed through setup mode), nothing stored."""
    imp = _imp()
    imp.ser.improv.running("https://srv.example/admin/devices/dev-1")
    out = [_parse(f) for f in imp.feed(REQ_STATE)]
    assert out[0] == (T_STATE, bytes([PROVISIONED]))
    assert out[1][0] == T_RESULT and _strings(out[1][1]) == ["https://srv.example/admin/devices/dev-1"]
    assert len(out) == 2
    t, data = _parse(imp.feed(_rpc(C_INFO))[0])
    assert t == T_RESULT and _strings(data)[0] == "twomes" and _strings(data)[3] == imp.ident.name
    assert [_parse(f) for f in imp.feed(_rpc(C_SCAN))] == [(T_RESULT, bytes([C_SCAN, 0]))]
    out = [_parse(f) for f in imp.feed(_wifi_rpc("other", "secret-pass"))]
    assert out == [(T_ERROR, b"\x02")]  # unknown RPC command: not in this state
    assert imp.pending is None and imp.state == PROVISIONED and imp.ctl.submitted == []
    assert [_parse(f)[1] for f in imp.feed(REQ_STATE)][0] == bytes([PROVISIONED])


def test_scanned_networks_one_result_each_then_empty():
    imp = _imp()
    out = imp.feed(_rpc(C_SCAN))
    parsed = [_parse(f) for f in out]
    assert all(t == T_RESULT and d[0] == C_SCAN for t, d in parsed)
    rows = [_strings(d) for _, d in parsed]
    assert rows[0] == ["home", "-52", "YES"] and rows[2] == [pf.HOSTILE, "-71", "YES"]
    assert rows[1] == [pf.CAFE, "-60", "YES"] and rows[4] == ["open-net", "-88", "NO"]
    assert rows[-1] == [] and len(rows) == 6


def test_bad_checksum_unknown_rpc_and_bad_lengths():
    imp = _imp()
    bad = bytearray(REQ_STATE)
    bad[-1] ^= 0x55
    assert [_parse(f) for f in imp.feed(bytes(bad))] == [(T_ERROR, b"\x01")]
    assert [_parse(f) for f in imp.feed(_rpc(0x09))] == [(T_ERROR, b"\x02")]
    # RPC length byte disagreeing with the frame
    f = improv_serial.frame(T_RPC, bytes([C_STATE, 5]))
    assert [_parse(x) for x in imp.feed(f)] == [(T_ERROR, b"\x01")]
    # Wi-Fi settings with inconsistent inner lengths / invalid UTF-8
    f = _rpc(C_WIFI, b"\x09home\x03abc")
    assert [_parse(x) for x in imp.feed(f)] == [(T_ERROR, b"\x01")]
    f = _rpc(C_WIFI, b"\x02\xff\xfe\x00")
    assert [_parse(x) for x in imp.feed(f)] == [(T_ERROR, b"\x01")]
    assert imp.pending is None and imp.state == READY
    # still in sync afterwards
    assert [_parse(f) for f in imp.feed(REQ_STATE)] == [(T_STATE, b"\x02")]


def test_split_frames_text_and_garbage_between():
    imp = _imp()
    stream = (
        b"hello from the terminal\r\nIMPRO IMPROVE? \x03\x00\xff"
        + REQ_STATE
        + b"\n>>> print(1)\nIIMPROV"[:-6]
        + _rpc(C_INFO)
        + b"\r\n"
        + b"IMPROV\x02\x03\x00\x00"  # version 2: ignored
        + REQ_STATE
    )
    whole = imp.feed(stream)
    imp2 = _imp()
    pieces = []
    for i in range(len(stream)):  # one byte at a time
        pieces.extend(imp2.feed(stream[i : i + 1]))
    imp3 = _imp()
    chunked = []
    for i in range(0, len(stream), 5):
        chunked.extend(imp3.feed(stream[i : i + 5]))
    types = [_parse(f)[0] for f in whole]
    assert types == [T_STATE, T_RESULT, T_STATE], types
    assert whole == pieces == chunked


def test_wifi_settings_provisioned_with_special_characters():
    async def main():
        imp = _imp()
        out = imp.feed(_wifi_rpc(pf.CAFE, pf.SPECIAL_PW))
        assert [_parse(f) for f in out] == [(T_ERROR, b"\x00"), (T_STATE, b"\x03")]
        assert imp.state == PROVISIONING
        # a second request while testing: only the state
        assert [_parse(f) for f in imp.feed(_wifi_rpc("home", "secret-pass"))] == [(T_STATE, b"\x03")]
        out = await imp.provision()
        assert imp.ctl.submitted == [(pf.CAFE, pf.SPECIAL_PW, None)]
        parsed = [_parse(f) for f in out]
        assert parsed[0] == (T_STATE, b"\x04")
        assert parsed[1][0] == T_RESULT and parsed[1][1][0] == C_WIFI and _strings(parsed[1][1]) == []
        # current state when provisioned: state + the URL result
        parsed = [_parse(f) for f in imp.feed(REQ_STATE)]
        assert parsed[0] == (T_STATE, b"\x04") and parsed[1][1][0] == C_STATE

    support.run(main())


def test_wifi_settings_failures_report_unable_to_connect():
    async def main():
        imp = _imp()
        for ssid, pw in (("home", "wrong-password"), ("absent", "whatever1"), ("home", "short")):
            imp.feed(_wifi_rpc(ssid, pw))
            out = await imp.provision()
            assert [_parse(f) for f in out] == [(T_ERROR, b"\x03"), (T_STATE, b"\x02")], ssid
            assert imp.state == READY
        assert [s for s, _, _ in imp.ctl.submitted] == ["home", "absent"]  # "short" refused before trying

    support.run(main())


class _Reader:
    """Console stand-in: hands out the scripted chunks (a number means: pause that long; with a
    `clock` (portal_fakes.TestClock) it is milliseconds on that clock, no real time)."""

    def __init__(self, script, clock=None):
        self.script = list(script)
        self.buf = b""
        self.clock = clock

    async def read(self, n):
        while not self.buf:
            if not self.script:
                return b""
            item = self.script.pop(0)
            if isinstance(item, (int, float)):
                if self.clock is None:
                    await asyncio.sleep(item)
                else:
                    self.clock.advance(item)
                    for _ in range(10):  # a waiter on that clock may give up now
                        await asyncio.sleep(0)
            else:
                self.buf = item
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class _Watch(_Reader):
    """A _Reader that notes at every read whether Improv's framing is loaded (`loaded`)."""

    def __init__(self, script, clock=None):
        super().__init__(script, clock)
        self.loaded = []

    async def read(self, n):
        import sys

        self.loaded.append("twomes.ap.improv_serial" in sys.modules)
        return await super().read(n)


class _Console:
    def __init__(self, board):
        self.board = board
        self.written = bytearray()
        self.intr = []

    def __getattr__(self, name):
        return getattr(self.board, name)

    def console_write(self, data):
        self.written.extend(data)

    def kbd_intr(self, ch):
        self.intr.append(ch)


def _frames(raw):
    out = []
    i = raw.find(b"IMPROV")
    while i >= 0:
        n = raw[i + 8]
        f = bytes(raw[i : i + 10 + n])
        assert raw[i + 10 + n : i + 11 + n] == b"\n"  # a newline after every frame
        out.append(_parse(f))
        i = raw.find(b"IMPROV", i + 10 + n)
    return out


def test_run_reads_the_console_and_answers():
    async def main():
        board, ident, cfg, ctl = pf.make()
        con = _Console(board)
        w = _wifi_rpc("home", "secret-pass")
        script = [b"some text\n", REQ_STATE[:4], 0.05, REQ_STATE[4:] + w[:7], w[7:], 0.5, REQ_STATE]
        await improv_serial.console(con, ctl, ident, "1.2.3", _Reader(script))
        got = _frames(con.written)
        assert got[0] == (T_STATE, b"\x02")
        assert got[1:3] == [(T_ERROR, b"\x00"), (T_STATE, b"\x03")]
        assert got[3] == (T_STATE, b"\x04") and got[4][0] == T_RESULT
        assert got[5] == (T_STATE, b"\x04")
        assert con.intr == [-1, 3]  # Ctrl-C off while listening, restored after
        assert ctl.saved == ("home", "secret-pass") and ctl.wifi_result == wifi.JOINED

    support.run(main())


def test_ctrl_c_between_frames_hands_the_console_back():
    """0x03 inside a frame is data (the RPC type byte is 3); a lone 0x03 between frames is a person's
    or mpremote's Ctrl-C: Improv stops listening, Ctrl-C is restored and the app goes to the REPL."""

    async def main():
        board, ident, cfg, ctl = pf.make()
        con = _Console(board)
        await improv_serial.console(con, ctl, ident, "1.2.3", _Reader([REQ_STATE, b"\x03", REQ_STATE]))
        assert ctl.interrupted
        assert _frames(con.written) == [(T_STATE, b"\x02")]  # the second request was not read
        assert con.intr == [-1, 3]

    support.run(main())


def test_setup_console_loads_improv_when_a_frame_starts_and_a_lone_ctrl_c_stops_the_app():
    """Setup mode's console (Controller.console): until an "I" comes nothing of Improv is loaded and a
    lone 0x03 is Ctrl-C; the first frame loads the framing and the RPC core, which answer it (its
    first byte included) and provision, and stay loaded for the rest of setup mode."""
    import sys

    from twomes import unload

    async def main():
        board, ident, cfg, ctl = pf.make()
        unload("ap.improv_serial", "ap.improv")  # as when setup mode starts
        ctl.app.board = con = _Console(board)
        reader = _Watch([b"boot text\n", b"\x03"])
        await ctl.console(reader)
        assert ctl.interrupted and con.intr == [-1, 3]
        assert True not in reader.loaded and "twomes.ap.improv_serial" not in sys.modules
        ctl.interrupted = False
        con.intr = []
        w = _wifi_rpc("home", "secret-pass")
        reader = _Watch([b"text\n", REQ_STATE[:1], 0.05, REQ_STATE[1:], w, 0.5, b"\x03"])
        await ctl.console(reader)
        loaded = reader.loaded
        got = _frames(con.written)
        assert got[0] == (T_STATE, bytes([READY]))  # the frame whose "I" loaded it is answered
        assert got[1:3] == [(T_ERROR, b"\x00"), (T_STATE, bytes([PROVISIONING]))]
        assert got[3] == (T_STATE, bytes([PROVISIONED])) and got[4][0] == T_RESULT
        assert ctl.saved == ("home", "secret-pass") and ctl.wifi_result == wifi.JOINED
        assert ctl.interrupted and con.intr == [-1, -1, 3]
        assert loaded[0] is False and loaded[-1] is True  # loaded at the frame, kept

    support.run(main())


SETUP_QUIET_MS = 5000  # controller._QUIET_MS: setup mode's console unloads Improv after this silence


class _Seen(_Reader):
    """A _Reader on a TestClock that also runs callables of the script (awaited: the test acting
    between two bytes) and notes, for every chunk it hands out, whether Improv's framing was loaded."""

    def __init__(self, script, clock):
        super().__init__(script, clock)
        self.seen = []  # (chunk, loaded)

    async def read(self, n):
        import sys

        while not self.buf and self.script and callable(self.script[0]):
            await self.script.pop(0)()
        got = await _Reader.read(self, n)
        self.seen.append((got, "twomes.ap.improv_serial" in sys.modules))
        return got


def test_setup_console_unloads_improv_after_its_quiet_time_but_never_during_a_provisioning():
    """Setup mode's console (Controller.console) unloads Improv's framing and RPC core after
    SETUP_QUIET_MS of silence (still loaded at 4,999 ms, gone at 5,000: the next frame loads them again
    and is answered), but not while a provisioning runs (however long the credential test takes: its
    outcome goes out) nor after one that joined (its state stays "provisioned"); after one that failed
    they go at the next silence. Ctrl-C is off all along until a lone 0x03. On the test's clock,
    across the wrap-around, both runtimes."""
    import sys

    from twomes import unload

    def first_of(seen, chunk, k=0):
        """Whether Improv was loaded when the k-th chunk starting with `chunk`'s first byte came."""
        hits = [ld for got, ld in seen if got == chunk[:1]]
        return hits[k]

    async def main(t0, password, joined):
        clock = pf.TestClock(t0)
        board, ident, cfg, ctl = pf.make(clock=clock)
        unload("ap.improv_serial", "ap.improv")  # as when setup mode starts
        ctl.app.board = con = _Console(board)
        ctl.hold = True  # the credential test runs until release()

        async def release():
            ctl.hold = False
            for _ in range(500):  # the simulated join (30 ms of real time), bounded
                if ctl.testing is None:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("the credential test did not end")

        w = _wifi_rpc("home", password)
        script = [REQ_STATE, SETUP_QUIET_MS - 1, REQ_STATE, SETUP_QUIET_MS, REQ_STATE, w]
        script += [3 * SETUP_QUIET_MS, REQ_STATE, release, SETUP_QUIET_MS - 1, REQ_STATE]
        script += [SETUP_QUIET_MS, b"\x03"]
        reader = _Seen(script, clock)
        await ctl.console(reader, sleep=clock.sleep)
        seen = reader.seen
        got = _frames(con.written)
        # the frames' first bytes: loaded for the first, still at 4,999 ms, unloaded at 5,000 ms
        assert [first_of(seen, REQ_STATE, k) for k in range(3)] == [False, True, False], seen
        assert got[:3] == [(T_STATE, bytes([READY]))] * 3
        assert got[3:5] == [(T_ERROR, b"\x00"), (T_STATE, bytes([PROVISIONING]))]
        # 15 s of silence during the credential test: still loaded, it answers "provisioning"
        assert first_of(seen, REQ_STATE, 3) is True and got[5] == (T_STATE, bytes([PROVISIONING]))
        if joined:
            assert got[6] == (T_STATE, bytes([PROVISIONED])) and got[7][0] == T_RESULT
            assert ctl.saved == ("home", password)
            rest = got[8:]
            state = PROVISIONED
        else:
            assert got[6:8] == [(T_ERROR, b"\x03"), (T_STATE, bytes([READY]))]
            rest = got[8:]
            state = READY
        assert first_of(seen, REQ_STATE, 4) is True and rest[0] == (T_STATE, bytes([state]))
        # the last silence: gone unless it joined; the lone 0x03 is Ctrl-C either way
        assert seen[-1] == (b"\x03", joined), seen[-3:]
        assert ("twomes.ap.improv_serial" in sys.modules) is False  # the console ended: unloaded
        assert ctl.interrupted and con.intr[0] == -1 and con.intr[-1] == 3 and 3 not in con.intr[:-1]

    for t0 in (5000, WRAP - 3 * SETUP_QUIET_MS):
        support.run(main(t0, "wrong-pass", False))
        support.run(main(t0, "secret-pass", True))


class _Raising(_Reader):
    """A _Reader whose script may hold exceptions: the read that meets one raises it."""

    async def read(self, n):
        if not self.buf and self.script and isinstance(self.script[0], BaseException):
            raise self.script.pop(0)
        return await _Reader.read(self, n)


def _oom():
    return MemoryError("memory allocation failed, allocating 64 bytes")


def test_setup_console_after_a_failure_takes_a_0x03_for_ctrl_c_only_after_a_silence():
    """Setup mode's console fails mid-frame (a bug; its supervisor starts it again): Ctrl-C stays off
    meanwhile, and the new listener may start inside the frame whose bytes it lost, so a 0x03 is
    Ctrl-C only after 100 ms of silence on the line (not at 99), as after a frame with a bad checksum.
    A console that ended normally leaves the next one sure again. On the test's clock, both runtimes."""
    from twomes import unload

    async def main(t0, gap):
        clock = pf.TestClock(t0)
        board, ident, cfg, ctl = pf.make(clock=clock)
        unload("ap.improv_serial", "ap.improv")
        ctl.app.board = con = _Console(board)
        seen = []  # whether the lone 0x03 was Ctrl-C, per failure
        for lost_at in (4, 0):  # inside Improv's framing (loaded), or in the listener before it
            try:
                script = [b"text"] + ([REQ_STATE[:lost_at]] if lost_at else []) + [RuntimeError("a bug")]
                await ctl.console(_Raising(script, clock), sleep=clock.sleep)
            except RuntimeError:
                pass
            assert 3 not in con.intr and not ctl.interrupted, con.intr  # Ctrl-C stays off
            # the rest of the frame (its type byte is 0x03), then a lone 0x03 after `gap` of silence
            await ctl.console(_Reader([REQ_STATE[7:], gap, b"\x03", REQ_STATE], clock), sleep=clock.sleep)
            seen.append(ctl.interrupted)
            assert con.intr[-1] == 3  # it ended normally (Ctrl-C, or the console closed)
            ctl.interrupted = False
            con.intr = []
        # a console that ended normally: the next one takes a lone 0x03 at once
        await ctl.console(_Reader([b"\x03"], clock), sleep=clock.sleep)
        seen.append(ctl.interrupted)
        return seen

    for t0 in (5000, WRAP):
        assert support.run(main(t0, 99)) == [False, False, True], t0
        assert support.run(main(t0, 100)) == [True, True, True], t0


def test_setup_console_goes_on_in_step_when_the_heap_runs_out():
    """No heap for a read of the console (in the listener or inside a frame) or for a reply: not a
    failure, the console waits a moment and reads on, in step (no byte of a frame taken for Ctrl-C,
    the next request answered). No heap to load Improv at a frame's "I": that frame is lost, its 0x03
    is not Ctrl-C (a lone 0x03 is, after 100 ms of silence), the next frame loads it and is answered."""
    from twomes import unload

    async def main():
        clock = pf.TestClock(5000)
        board, ident, cfg, ctl = pf.make(clock=clock)
        unload("ap.improv_serial", "ap.improv")
        ctl.app.board = con = _Console(board)
        script = [b"x", _oom(), REQ_STATE[:5], _oom(), REQ_STATE[5:], b"x", _oom(), REQ_STATE, 100, b"\x03"]
        await ctl.console(_Raising(script, clock), sleep=clock.sleep)
        assert _frames(con.written) == [(T_STATE, bytes([READY]))] * 2 and ctl.interrupted
        assert con.intr[0] == -1 and con.intr[-1] == 3 and 3 not in con.intr[:-1]
        # Improv cannot be loaded at the first frame
        ctl.interrupted = False
        con.written = bytearray()
        import twomes.ap

        calls = []

        class _Starved:  # what the first import finds: its console has no heap
            @staticmethod
            async def console(*args):
                calls.append(1)
                raise _oom()

        twomes.ap.improv_serial = _Starved  # (the console unloads it: the next frame imports the real one)
        script = [REQ_STATE, 99, b"\x03", REQ_STATE, 100, b"\x03"]
        await ctl.console(_Reader(script, clock), sleep=clock.sleep)
        assert calls == [1] and _frames(con.written) == [(T_STATE, bytes([READY]))] and ctl.interrupted
        assert "improv_serial" not in twomes.ap.__dict__

    support.run(main())


def test_setup_console_hands_back_after_a_silence_also_while_its_reads_find_no_heap():
    """The silence's watch may cancel the console while it waits out a MemoryError (no heap for a read
    for 5 s): that is still the hand-back (Improv unloaded, the listener goes on, Ctrl-C stays off),
    never the end of the console. On the test's clock, both runtimes."""
    import sys

    from twomes import unload

    class _NoHeap(_Reader):
        async def read(self, n):
            if not self.buf and self.script and self.script[0] == "oom":
                self.script.pop(0)
                self.clock.advance(1000)  # (then straight to the console's wait)
                raise _oom()
            return await _Reader.read(self, n)

    async def main():
        clock = pf.TestClock(5000)
        board, ident, cfg, ctl = pf.make(clock=clock)
        unload("ap.improv_serial", "ap.improv")
        ctl.app.board = con = _Console(board)
        reader = _NoHeap([REQ_STATE] + ["oom"] * 6 + [REQ_STATE], clock)
        seen = []

        async def read(n):
            got = await _NoHeap.read(reader, n)
            seen.append((got, "twomes.ap.improv_serial" in sys.modules))
            return got

        reader.read = read
        await ctl.console(reader, sleep=clock.sleep)
        assert _frames(con.written) == [(T_STATE, bytes([READY]))] * 2
        assert [ld for got, ld in seen if got == b"I"] == [False, False], seen  # unloaded in between
        assert not ctl.interrupted and con.intr[-1] == 3 and 3 not in con.intr[:-1]

    support.run(main())


def test_running_console_answers_provisioned_and_a_lone_ctrl_c_stops_the_app():
    """The running app's console (twomes.ap.improv_run): provisioned with the URL; Improv's modules are
    loaded when a frame starts and unloaded after the quiet time; 0x03 inside frames is data, a lone
    0x03 sets the app's `interrupted` and Ctrl-C is restored."""
    import sys

    from twomes import unload
    from twomes.ap import improv_run

    class _App:
        interrupted = False

    async def main():
        clock = pf.TestClock(5000)  # (the quiet time to the tick: the next test)
        board, ident, cfg, ctl = pf.make(clock=clock)
        unload("ap.improv_serial", "ap.improv", "ap.creds")  # as in the running app: not loaded
        app = _App()
        app.board = _Console(board)
        app.ident = ident
        url = "https://127.0.0.1:8443/admin/devices/" + ident.name
        w = _wifi_rpc("home", "secret-pass")
        script = [b"text\n", REQ_STATE, w, 400, b"\x03", REQ_STATE]
        reader = _Watch(script, clock)
        await improv_run.run(app, url, reader, quiet_ms=200, wait_for=clock.wait_for)
        loaded = reader.loaded
        got = _frames(app.board.written)
        assert got[0] == (T_STATE, bytes([PROVISIONED])) and _strings(got[1][1]) == [url]
        assert got[2:] == [(T_ERROR, b"\x02")]  # Wi-Fi refused; the request after Ctrl-C not read
        assert app.interrupted and app.board.intr == [-1, 3]
        assert loaded[0] is False and True in loaded  # loaded for the frames only
        assert loaded[-1] is False and "twomes.ap.improv_serial" not in sys.modules  # gone when quiet
        assert ctl.saved is None  # nothing stored

    support.run(main())


# ---- the framing's silences on a clock the test moves (portal_fakes.TestClock): each at its tick and
# not one tick before, across the tick wrap-around; no real time passes
STALE_MS = 1000  # improv_serial._STALE_MS: a partial frame is dropped after this much silence
QUIET_MS = 100  # improv_serial._QUIET_MS: silence that ends the "noisy" state after a broken frame
PARTIAL = b"IMPROV\x01\x03\xf0abc"  # a stray magic with a huge length byte (the frame never ends)
WRAP = (1 << 30) - 300  # the ESP32's ticks wrap 300 ms after this


def _console_on_clock(script, t0):
    """What the setup console answered to `script` on a TestClock starting at t0, and the controller."""
    got = []

    async def main():
        clock = pf.TestClock(t0)
        board, ident, cfg, ctl = pf.make(clock=clock)
        con = _Console(board)
        await improv_serial.console(con, ctl, ident, "1.2.3", _Reader(script, clock))
        got.append(_frames(con.written))
        got.append(ctl)

    support.run(main())
    return got


def test_stale_partial_frame_is_dropped_after_its_silence_and_not_one_tick_before():
    for t0 in (5000, WRAP):
        # 999 ms of silence: the request is more data of the partial frame (no answer)
        assert _console_on_clock([PARTIAL, STALE_MS - 1, REQ_STATE], t0)[0] == [], t0
        # 1000 ms: the partial frame is dropped and the request answered
        assert _console_on_clock([PARTIAL, STALE_MS, REQ_STATE], t0)[0] == [(T_STATE, b"\x02")], t0
        # a frame sent slowly (999 ms between its bytes) is still one frame
        slow = [REQ_STATE[:3], STALE_MS - 1, REQ_STATE[3:9], STALE_MS - 1, REQ_STATE[9:]]
        assert _console_on_clock(slow, t0)[0] == [(T_STATE, b"\x02")], t0


def test_a_ctrl_c_right_after_a_broken_frame_counts_only_after_its_quiet_time():
    bad = REQ_STATE[:-1] + bytes([REQ_STATE[-1] ^ 1])  # a wrong checksum: the bytes are misaligned
    for t0 in (5000, WRAP + 250):
        frames, ctl = _console_on_clock([bad, QUIET_MS - 1, b"\x03", REQ_STATE], t0)
        assert not ctl.interrupted and frames == [(T_ERROR, b"\x01"), (T_STATE, b"\x02")], t0
        frames, ctl = _console_on_clock([bad, QUIET_MS, b"\x03", REQ_STATE], t0)
        assert ctl.interrupted and frames == [(T_ERROR, b"\x01")], t0  # the request after it not read


def test_running_console_drops_a_stale_partial_frame_at_the_same_tick():
    """twomes.ap.improv_run judges the framing's silences itself (its quiet time, after which Improv's
    modules are unloaded, is a real-time wait_for; these reads never wait)."""
    from twomes.ap import improv_run

    class _App:
        interrupted = False

    for t0 in (5000, WRAP):
        for gap, answered in ((STALE_MS - 1, False), (STALE_MS, True)):

            async def main(t0, gap):
                clock = pf.TestClock(t0)
                board, ident, cfg, ctl = pf.make(clock=clock)
                app = _App()
                app.board = _Console(board)
                app.ident = ident
                await improv_run.run(app, "https://x/", _Reader([PARTIAL, gap, REQ_STATE], clock))
                return _frames(app.board.written)

            got = support.run(main(t0, gap))
            assert (got[:1] == [(T_STATE, bytes([PROVISIONED]))]) == answered, (t0, gap, got)


# ---- hostile input (issue #17): no byte of a frame is ever Ctrl-C; the parser stays in sync -----------
ISSUE_FRAMES = [
    b"IMPROV\x02\x03\x02\x02\x00\xe6",  # a state request with version byte 2
    b"IMPROV\x00\x03\x02\x02\x00\xe4",  # version 0
    b"IMPROV\xff\x03\x02\x02\x00\xe3",  # version 255
    b"IMPROVIMPROV\x01\x03\x02\x02\x00\xe5",  # the magic repeated (the real request is answered)
]


def test_the_issues_frames_never_stop_the_app_and_the_next_request_is_answered():
    for f in ISSUE_FRAMES:
        imp = _imp()
        out = imp.feed(f)
        assert not imp.ser.interrupted, f
        if f.startswith(b"IMPROVIMPROV"):
            assert [_parse(x) for x in out] == [(T_STATE, b"\x02")]
        else:
            assert out == [], f  # another version: not for us
        assert imp.ser.idle(), f  # the frame is over: in sync
        assert [_parse(x) for x in imp.feed(REQ_STATE)] == [(T_STATE, b"\x02")], f
        imp.feed(b"\x03")  # a lone Ctrl-C after it still stops the app
        assert imp.ser.interrupted, f


def test_a_0x03_in_any_position_of_a_frame_is_data():
    # every byte of a frame set to 0x03 in turn (version, type, length, data, checksum), of this or
    # another version: never an interrupt
    for base in (REQ_STATE, b"IMPROV\x02\x03\x02\x02\x00\xe6", _wifi_rpc("home", "secret-pass")):
        for i in range(6, len(base)):
            f = bytearray(base)
            f[i] = 3
            imp = _imp()
            imp.feed(bytes(f))
            assert not imp.ser.interrupted, (base, i)


def _count(default):
    import os

    return int(os.getenv("TW_HOSTILE_N") or default)


def test_generated_inputs_never_interrupt_inside_frames_and_every_reply_is_well_formed():
    # TW_HOSTILE_N inputs (make hostile: 10,000): frames with random versions, types, lengths, 0x03s,
    # cut short, glued together, with text between. Each must leave the parser in sync: a real
    # request after it (and a pause the console loop would see as staleness) is answered.
    import os

    n = _count(300)
    kinds = [b"\x01", b"\x02", b"\x03", b"\x00", b"\xff", b"I"]
    imp = _imp()
    for k in range(n):
        r = os.urandom(24)
        imp.ser.drop()  # each input from a clean start (one parser: a board per input costs too much)
        imp.ser.quiet()
        imp.ser.pending = None
        imp.ser.improv.state = READY
        data = bytearray()
        whole = True  # every frame complete: then no 0x03 of them may interrupt
        for j in range(1 + r[0] % 3):
            body = bytearray(os.urandom(r[j + 1] % 12))
            for m in range(len(body)):
                if r[(m + j) % 24] % 3 == 0:
                    body[m] = 3
            f = bytearray(
                b"IMPROV" + kinds[r[j + 4] % 6] + bytes([3 if r[j + 8] % 2 else r[j + 8], len(body)]) + body
            )
            f.append(sum(f) & 0xFF if r[j + 12] % 2 else r[j + 12])
            cut = len(f) if r[j + 16] % 4 else r[j + 16] % len(f)
            whole = whole and cut == len(f)
            data += f[:cut]
            data += b"text\n" if r[j + 20] % 2 else b""
        imp.ser.feed(bytes(data))
        for x in imp.out:
            assert x[-1:] == b"\n"
            _parse(x[:-1])  # well-formed
        del imp.out[:]
        assert not (whole and imp.ser.interrupted), bytes(data)
        imp.ser.interrupted = False
        imp.ser.drop()  # the console loop's staleness rule (1 s of silence)
        assert [_parse(x) for x in imp.feed(REQ_STATE)] == [(T_STATE, b"\x02")], (k, bytes(data))


def test_running_console_unloads_improv_at_its_quiet_time_and_not_one_tick_before():
    """twomes.ap.improv_run's quiet time (5 s) on the test's clock (its wait_for, TestClock.wait_for):
    Improv's modules stay for a frame that starts 4,999 ms after the last byte, and are unloaded after
    5,000 ms (the next "I" loads them again); every request is answered either way."""
    import sys

    from twomes import unload
    from twomes.ap import improv_run

    quiet = 5000  # improv_run._QUIET_MS

    class _App:
        interrupted = False

    async def main(t0, gap):
        clock = pf.TestClock(t0)
        board, ident, cfg, ctl = pf.make(clock=clock)
        unload("ap.improv_serial", "ap.improv", "ap.creds")  # as in the running app: not loaded
        app = _App()
        app.board = _Console(board)
        app.ident = ident
        seen = []  # (byte, Improv's framing loaded when it came)

        class _Watch(_Reader):
            async def read(self, n):
                got = await _Reader.read(self, n)
                seen.append((got, "twomes.ap.improv_serial" in sys.modules))
                return got

        await improv_run.run(
            app, "https://x/", _Watch([REQ_STATE, gap, REQ_STATE], clock), wait_for=clock.wait_for
        )
        got = _frames(app.board.written)
        assert [f[0] for f in got] == [T_STATE, T_RESULT, T_STATE, T_RESULT], got
        assert "twomes.ap.improv_serial" not in sys.modules  # the console closed: unloaded
        return seen

    for t0 in (5000, WRAP - 2500):
        seen = support.run(main(t0, quiet - 1))
        assert seen[0] == (b"I", False) and seen[len(REQ_STATE)] == (b"I", True), seen  # still loaded
        seen = support.run(main(t0, quiet))
        assert seen[len(REQ_STATE)] == (b"I", False), seen  # unloaded at the tick: loaded again
