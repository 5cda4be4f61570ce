# Improv Wi-Fi serial v1: frames, checksums, RPCs, frames split across reads and mixed with text.
import asyncio

import portal_fakes as pf

import support
from twomes import improv, wifi

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


def _imp():
    board, ident, cfg, ctl = pf.make()
    return improv.Improv(board, ident, ctl, "1.2.3")


def _rpc(cmd, payload=b""):
    return improv.frame(T_RPC, bytes([cmd, len(payload)]) + payload)


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
    assert improv.frame(T_STATE, b"\x02") == b"IMPROV\x01\x01\x01\x02" + bytes(
        [sum(b"IMPROV\x01\x01\x01\x02") & 0xFF]
    )


def test_request_current_state_and_device_info():
    imp = _imp()
    out = imp.feed(REQ_STATE)
    assert [_parse(f) for f in out] == [(T_STATE, b"\x02")]
    out = imp.feed(_rpc(C_INFO))
    t, data = _parse(out[0])
    assert t == T_RESULT and data[0] == C_INFO
    assert _strings(data) == ["twomes", "1.2.3", "ESP32", imp.ident.name]


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
    f = improv.frame(T_RPC, bytes([C_STATE, 5]))
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
    """Console stand-in: hands out the scripted chunks (a number means: pause that long)."""

    def __init__(self, script):
        self.script = list(script)
        self.buf = b""

    async def read(self, n):
        while not self.buf:
            if not self.script:
                return b""
            item = self.script.pop(0)
            if isinstance(item, (int, float)):
                await asyncio.sleep(item)
            else:
                self.buf = item
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


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
        imp = improv.Improv(con, ident, ctl, "1.2.3")
        w = _wifi_rpc("home", "secret-pass")
        script = [b"some text\n", REQ_STATE[:4], 0.05, REQ_STATE[4:] + w[:7], w[7:], 0.5, REQ_STATE]
        await imp.run(_Reader(script))
        got = _frames(con.written)
        assert got[0] == (T_STATE, b"\x02")
        assert got[1:3] == [(T_ERROR, b"\x00"), (T_STATE, b"\x03")]
        assert got[3] == (T_STATE, b"\x04") and got[4][0] == T_RESULT
        assert got[5] == (T_STATE, b"\x04")
        assert con.intr == [-1, 3]  # Ctrl-C off while listening, restored after
        assert ctl.saved == ("home", "secret-pass", None) and ctl.wifi == wifi.JOINED

    support.run(main())


def test_ctrl_c_between_frames_hands_the_console_back():
    """0x03 inside a frame is data (the RPC type byte is 3); a lone 0x03 between frames is a person's
    or mpremote's Ctrl-C: Improv stops listening, Ctrl-C is restored and the app goes to the REPL."""

    async def main():
        board, ident, cfg, ctl = pf.make()
        con = _Console(board)
        imp = improv.Improv(con, ident, ctl, "1.2.3")
        await imp.run(_Reader([REQ_STATE, b"\x03", REQ_STATE]))
        assert imp.interrupted
        assert _frames(con.written) == [(T_STATE, b"\x02")]  # the second request was not read
        assert con.intr == [-1, 3]

    support.run(main())


def test_stale_partial_frame_is_dropped():
    async def main():
        board, ident, cfg, ctl = pf.make()
        con = _Console(board)
        imp = improv.Improv(con, ident, ctl, "1.2.3")
        # a stray "IMPROV" with a huge length, then (after a pause) a real request
        await imp.run(_Reader([b"IMPROV\x01\x03\xf0abc", 1.3, REQ_STATE]))
        assert _frames(con.written) == [(T_STATE, b"\x02")]

    support.run(main())
