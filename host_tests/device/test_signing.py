# Signed release manifests (twomes/update/signing.py) on both runtimes: a trusted key's signature over
# the exact manifest bytes, key rotation, refusals with a clear reason (unsigned, bad signature or
# unknown key, other device type, malformed fields, control characters), the release object against its
# manifest, and the anti-rollback rule.
from binascii import hexlify

import edsign

import support
from twomes.errors import Error
from twomes.update import signing

_OLD = b"\x01" * 32  # throw-away seeds: the fleet's old and new release keys, and an attacker's
_NEW = b"\x02" * 32
_EVIL = b"\x03" * 32
_SHA = "ab" * 32


def _hex(b):
    return hexlify(b).decode()


def _keys(*seeds):
    return [_hex(edsign.public_key(s)) for s in seeds]


def _manifest(**kw):
    m = {
        "device_type": "Generic-Test",
        "kind": "bundle",
        "version": "1.2.0",
        "counter": 3,
        "size": 12345,
        "sha256": _SHA,
    }
    m.update(kw)
    return m


def _signed(seed=_OLD, **kw):
    text = edsign.canonical(_manifest(**kw))
    return text, _hex(edsign.sign(seed, text.encode()))


def _release(seed=_OLD, **kw):
    text, sig = _signed(seed, **kw)
    m = _manifest(**kw)
    return {
        "id": 4,
        "version": m["version"],
        "kind": m["kind"],
        "device_type": m["device_type"],
        "size": m["size"],
        "sha256": m["sha256"],
        "url": "/device/firmware/releases/4/image",
        "manifest": text,
        "signature": sig,
    }


def _reason(fn, *args):
    e = support.raises(Error, fn, *args)
    assert e is not None, "not refused"
    assert e.status == -1
    return str(e)


def test_signed_manifest_verifies_and_is_parsed():
    text, sig = _signed()
    m = signing.verify(text, sig, _keys(_OLD), "Generic-Test")
    assert m == _manifest()
    # bytes keys work as well as their hex form
    assert signing.verify(text, sig, [edsign.public_key(_OLD)], "Generic-Test")["counter"] == 3


def test_canonical_text_is_sorted_and_compact():
    assert edsign.canonical(_manifest()) == (
        '{"counter":3,"device_type":"Generic-Test","kind":"bundle","sha256":"' + _SHA + '","size":12345,'
        '"version":"1.2.0"}'
    )


def test_key_rotation_two_trusted_keys():
    keys = _keys(_OLD, _NEW)
    for seed in (_OLD, _NEW):
        text, sig = _signed(seed)
        assert signing.verify(text, sig, keys, "Generic-Test")["version"] == "1.2.0"
    # after the old key is retired, its releases are refused
    text, sig = _signed(_OLD)
    assert "bad signature or unknown key" in _reason(signing.verify, text, sig, _keys(_NEW), "Generic-Test")


def test_unsigned_is_refused():
    text, sig = _signed()
    for t, s in ((text, None), (None, sig), ("", sig), (text, ""), (None, None)):
        assert _reason(signing.verify, t, s, _keys(_OLD), "Generic-Test") == "unsigned release"


def test_wrong_key_and_tampering_are_refused():
    text, sig = _signed(_EVIL)
    assert "unknown key" in _reason(signing.verify, text, sig, _keys(_OLD, _NEW), "Generic-Test")
    text, sig = _signed()
    for bad in (
        text.replace('"counter":3', '"counter":4'),
        text.replace(_SHA, "cd" * 32),
        text + " ",
        " " + text,
        text.replace("1.2.0", "1.2.1"),
    ):
        assert "bad signature" in _reason(signing.verify, bad, sig, _keys(_OLD), "Generic-Test"), bad
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    assert "bad signature" in _reason(signing.verify, text, flipped, _keys(_OLD), "Generic-Test")


def test_malformed_signature_or_manifest_text():
    text, sig = _signed()
    for bad in (sig[:-2], sig + "00", sig.upper(), "zz" + sig[2:], 12345, b"\x00" * 64):
        assert _reason(signing.verify, text, bad, _keys(_OLD), "Generic-Test") == "malformed signature"
    assert _reason(signing.verify, "x" * 513, sig, _keys(_OLD), "Generic-Test") == "malformed manifest"
    assert _reason(signing.verify, text.encode(), sig, _keys(_OLD), "Generic-Test") == "malformed manifest"
    assert "no release keys" in _reason(signing.verify, text, sig, [], "Generic-Test")
    # a key in the list that is not a key (wrong length, not hex) never matches; the right one still does
    assert signing.verify(text, sig, ["nothex", "00" * 31] + _keys(_OLD), "Generic-Test")


def test_other_device_type_is_refused():
    text, sig = _signed(device_type="DSMR-P1")
    r = _reason(signing.verify, text, sig, _keys(_OLD), "Generic-Test")
    assert r == "release for device type DSMR-P1, not Generic-Test"


def _refused_field(field, **kw):
    text, sig = _signed(**kw)
    return _reason(signing.verify, text, sig, _keys(_OLD), "Generic-Test")


def test_malformed_fields_are_refused_even_when_signed():
    cases = (
        ("version", {"version": "1.2.0\nfirmware: running 9.9.9, confirmed"}),
        ("version", {"version": "1.2\x1b[2J"}),
        ("version", {"version": "v" * 65}),
        ("version", {"version": ""}),
        ("version", {"version": ".hidden"}),
        ("version", {"version": 120}),
        ("kind", {"kind": "script"}),
        ("counter", {"counter": -1}),
        ("counter", {"counter": 1 << 31}),
        ("counter", {"counter": True}),
        ("counter", {"counter": "3"}),
        ("size", {"size": 0}),
        ("size", {"size": 1.5}),
        ("sha256", {"sha256": "AB" * 32}),
        ("sha256", {"sha256": "ab" * 31}),
        ("device_type", {"device_type": "Generic\r\nTest"}),
        ("device_type", {"device_type": "x" * 65}),
    )
    for field, kw in cases:
        assert _refused_field(field, **kw) == "malformed manifest: " + field, kw
    # the bounds themselves are fine: counter 0 and 2^31-1, size 1, a 64-character version
    for kw in ({"counter": 0}, {"counter": (1 << 31) - 1}, {"size": 1}, {"version": "v" * 64}):
        text, sig = _signed(**kw)
        m = signing.verify(text, sig, _keys(_OLD), "Generic-Test")
        for k in kw:
            assert m[k] == kw[k]


def test_missing_or_extra_fields_are_refused():
    m = _manifest()
    del m["counter"]
    text = edsign.canonical(m)
    sig = _hex(edsign.sign(_OLD, text.encode()))
    assert "malformed manifest" in _reason(signing.verify, text, sig, _keys(_OLD), "Generic-Test")
    m = _manifest(url="/x")
    text = edsign.canonical(m)
    sig = _hex(edsign.sign(_OLD, text.encode()))
    assert _reason(signing.verify, text, sig, _keys(_OLD), "Generic-Test") == "malformed manifest"
    for text in ("[1,2]", "{nope"):
        sig = _hex(edsign.sign(_OLD, text.encode()))
        assert _reason(signing.verify, text, sig, _keys(_OLD), "Generic-Test") == "malformed manifest"


def test_release_object_checked_against_its_manifest():
    keys = _keys(_OLD)
    assert signing.check_release(_release(), keys, "Generic-Test") == _manifest()
    for field, value in (("version", "1.2.1"), ("size", 12346), ("sha256", "cd" * 32), ("kind", "image")):
        rel = _release()
        rel[field] = value
        assert _reason(signing.check_release, rel, keys, "Generic-Test") == (
            "release %s differs from its signed manifest" % field
        )


def test_release_urls_and_versions_with_control_characters_are_malformed():
    keys = _keys(_OLD)
    for url in (
        "/device/firmware/releases/4/image\r\nX-Evil: 1",
        "/a b",
        "/\x1b[31m",
        "http://evil.example/x",
        "//evil.example/x",
        "/" + "a" * 200,
        "",
        None,
    ):
        rel = _release()
        rel["url"] = url
        assert _reason(signing.check_release, rel, keys, "Generic-Test") == "malformed release: url", url
    rel = _release()
    rel["version"] = "1.2.0\n"
    assert _reason(signing.check_release, rel, keys, "Generic-Test") == "malformed release: version"
    assert _reason(signing.check_release, "nope", keys, "Generic-Test") == "malformed release"


def test_unsigned_release_only_with_allow_unsigned():
    rel = _release()
    del rel["manifest"]
    del rel["signature"]
    assert _reason(signing.check_release, rel, _keys(_OLD), "Generic-Test") == "unsigned release"
    assert signing.check_release(rel, _keys(_OLD), "Generic-Test", True) is None
    # allow_unsigned never lets a bad signature through, nor a malformed release
    rel = _release(_EVIL)
    assert "unknown key" in _reason(signing.check_release, rel, _keys(_OLD), "Generic-Test", True)
    rel = {"version": "1.0", "kind": "bundle", "size": 1, "sha256": _SHA, "url": "/x\n"}
    assert "url" in _reason(signing.check_release, rel, _keys(_OLD), "Generic-Test", True)


def test_anti_rollback_counter():
    m = _manifest(counter=5)
    signing.rollback_ok(m, None)
    signing.rollback_ok(m, 4)
    signing.rollback_ok(m, 5)  # the same security level: allowed
    r = _reason(signing.rollback_ok, m, 6)
    assert r == "security counter 5 below the installed 6: rollback refused"
