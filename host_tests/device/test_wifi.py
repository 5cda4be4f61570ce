# The Wi-Fi credential rule the portal, Improv and `twomes provision` all use (twomes.ap.creds).
import support
from twomes.ap import creds


def test_credential_rule_matches_the_esp32_driver():
    ok = creds.check
    assert ok("home", "") is None  # open network
    assert ok("home", "12345678") is None and ok("home", "x" * 63) is None
    assert ok("home", "ab" * 32) is None  # 64 hex digits: a raw PSK
    assert "8 to 63" in ok("home", "short")
    assert "64 hex digits" in ok("home", "z" * 64)  # 64 characters must be hex
    assert "64 hex digits" in ok("home", "a" * 65)
    assert "1 to 32 bytes" in ok("", "12345678")
    assert "1 to 32 bytes" in ok("\u00e9" * 17, "12345678")  # 34 bytes of UTF-8
    assert ok("\u00e9" * 16, "p&ss w%rd+#1") is None


def test_credentials_are_stored_as_one_unit_and_forgotten():
    import vesp32
    from twomes import store, wifi

    support.new_board()
    st = store.Store(vesp32.NVS("twomes"))
    assert wifi.saved(st) is None
    wifi.save(st, 'caf\u00e9 "net"', "p&ss w%rd+#1")
    assert wifi.saved(store.Store(vesp32.NVS("twomes"))) == ('caf\u00e9 "net"', "p&ss w%rd+#1")
    wifi.save(st, "open", "")  # an open network: empty password
    assert wifi.saved(st) == ("open", "")
    wifi.forget(st)
    assert wifi.saved(store.Store(vesp32.NVS("twomes"))) is None


def test_credentials_of_firmware_1_0_are_read_then_replaced():
    import vesp32
    from twomes import store, wifi

    support.new_board()
    st = store.Store(vesp32.NVS("twomes"))
    st.put(store.OLD_SSID, "home")
    st.put(store.OLD_PASS, "12345678")
    st.commit()
    assert wifi.saved(st) == ("home", "12345678")
    wifi.save(st, "new", "abcdefgh")
    assert st.get(store.OLD_SSID) is None and st.get(store.OLD_PASS) is None
    assert wifi.saved(st) == ("new", "abcdefgh")


def test_damaged_credentials_read_as_none():
    import vesp32
    from twomes import store, wifi

    support.new_board()
    st = store.Store(vesp32.NVS("twomes"))
    for raw in ("not json", "[1, 2]", '["", "x"]', '"x"'):
        st.put(store.WIFI, raw)
        assert wifi.saved(st) is None, raw


def test_shown_text_does_not_intern_its_characters():
    """shown() (every SSID and name a client or the air sends goes through it to the console) walks
    the text's UTF-8 bytes: walking the str itself makes MicroPython intern each new character for good
    (qstr pools, ~18 bytes a character): 2,000 distinct characters in SSIDs cost 36 KB of heap, and a
    client sending new ones would run the device out of heap. Same output as a walk of the characters."""
    import gc

    texts = []
    for k in range(100):  # CJK characters no other test uses, made from bytes (chr() would intern them)
        raw = bytearray()
        for cp in range(0x9000 + 20 * k, 0x9000 + 20 * k + 20):
            raw += bytes([0xE0 | cp >> 12, 0x80 | cp >> 6 & 0x3F, 0x80 | cp & 0x3F])
        texts.append(bytes(raw).decode())
    out = []
    gc.collect()
    free = getattr(gc, "mem_free", lambda: 0)()
    for t in texts:
        out.append(len(creds.shown(t)))
    gc.collect()
    lost = free - getattr(gc, "mem_free", lambda: 0)()
    assert lost < 4096, lost  # the list of lengths; interning: ~36,000
    assert out == [120] * 100  # "\\uXXXX" for each of the 20
    assert creds.shown("a\\b\x1b[31m\n\u00e9\u07ff\u0800\U0001f600 ~") == (
        "a\\x5cb\\x1b[31m\\x0a\\xe9\\u07ff\\u0800\\u1f600 ~"
    )


def test_text_from_outside_is_shown_escaped_and_never_interned():
    """shown() (console lines about a client's or the air's text), printable() (a server's text) and the
    hex rule look at UTF-8 bytes: on MicroPython, iterating a str interns every character it hands out
    as a qstr, for good, so a client sending new characters with each request would grow the heap."""
    import gc
    import sys

    from twomes.log import printable

    assert creds.shown("Caf\u00e9 \u2615\\\x1b[1m\U0001f600 ok") == "Caf\\xe9 \\u2615\\x5c\\x1b[1m\\u1f600 ok"
    assert creds.shown("") == "" and creds.shown("plain text") == "plain text"
    assert printable("ok\x1b[31m\x85red\u00e9\u2615\x7f") == "ok?[31m?red\u00e9\u2615?"
    assert printable("x" * 70, 8) == "xxxxxxxx..."
    assert creds.check("home", "0123456789abcdefABCDEF" * 2 + "0" * 20) is None  # 64 hex digits
    assert "64 hex digits" in creds.check("home", "\u4e00" + "a" * 61)  # 64 bytes, not hex
    # 400 characters nobody sent before (made from bytes: chr() itself interns what it returns)
    texts = [bytes([0xE5, 0x80 + (i >> 6), 0x80 + (i & 63)]).decode() for i in range(400)]
    gc.collect()
    before = gc.mem_alloc() if sys.implementation.name == "micropython" else 0
    for t in texts:
        creds.shown(t + "!")
        printable(t + "?")
        creds.check("home", t * 21 + "a")  # 64 bytes: the hex rule looks at it
    gc.collect()
    if sys.implementation.name == "micropython":
        # interned, they would hold 400 qstrs (a pool entry each, and a new pool of 640 entries)
        assert gc.mem_alloc() - before < 1024, gc.mem_alloc() - before
