# Signed release manifests: what the device checks before it writes a byte of a new release.
#
# A release carries `manifest` (text) and `signature` (128 lower-case hex: an Ed25519 signature of the
# manifest's exact UTF-8 bytes, made offline by `twomes release --key FILE`). The manifest is canonical
# JSON (sorted keys, no spaces) with exactly these fields:
#   device_type  1..64 printable characters: the type of device the release is for
#   kind         "bundle" or "image"
#   version      1..64 of [0-9A-Za-z._+-], starting with a letter or digit
#   counter      the security counter, 0..2^31-1: a device never installs a release whose counter is
#                below the highest counter it has installed (anti-rollback, see rollback_ok)
#   size         bytes of the release file, 1..2^31-1
#   sha256       64 lower-case hex: the release file's SHA-256
# The signature is checked first (only authenticated bytes are parsed), against every trusted key
# (several keys: rotation). Pure functions: nothing here touches NVS, files or the network; every
# refusal is errors.Error(-1, reason) with a short reason that quotes no unchecked server text.
import json

from micropython import const

from twomes.errors import Error

_BAD = const(-1)
_MANIFEST_MAX = const(512)
_INT_MAX = const(0x7FFFFFFF)
_URL_MAX = const(200)
_FIELDS = const(("counter", "device_type", "kind", "sha256", "size", "version"))


def _hex(text, n):
    """bytes of a hex string of exactly n lower-case digits, or None."""
    if not isinstance(text, str) or len(text) != n:
        return None
    for c in text.encode():  # bytes: iterating a str interns every character it hands out (heap.md)
        if not (48 <= c <= 57 or 97 <= c <= 102):  # 0-9 a-f
            return None
    from binascii import unhexlify

    return unhexlify(text)


def _chars(s, n, lo):
    """s is a str of 1..n characters from the code `lo` to "~" (printable ASCII; lo 33, "!", also
    excludes spaces)."""
    if not isinstance(s, str) or not 0 < len(s) <= n:
        return False
    for c in s.encode():  # (bytes, as in _hex)
        if not lo <= c <= 126:  # "~"
            return False
    return True


def _ok(name, v):
    """Is v a well-formed value of the manifest or release field `name`? (Each field's rule is written
    here, not in a function of its own: every function's name is interned for good, docs/heap.md.)"""
    if name == "counter" or name == "size":
        return isinstance(v, int) and not isinstance(v, bool) and (name == "size") <= v <= _INT_MAX
    if name == "kind":
        return v in ("bundle", "image")
    if name == "sha256":
        return _hex(v, 64) is not None
    if name == "version":  # 1..64 of [0-9A-Za-z._+-], starting with a letter or digit
        if not _chars(v, 64, 33):
            return False
        b = v.encode()  # (bytes, as in _hex)
        if b[0] in b"._+-":
            return False
        for c in b:
            if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c in b"._+-"):
                return False
        return True
    if name == "url":  # a path on the same server, printable ASCII without spaces, bounded
        return _chars(v, _URL_MAX, 33) and v[0] == "/" and v[1:2] != "/"
    return _chars(v, 64, 32)  # device_type


def verify(text, signature, keys, device_type):
    """The parsed manifest (dict) if `signature` is a trusted key's signature of the manifest's `text`
    and the manifest is well formed and for `device_type`; else raises Error(-1, reason). `keys`:
    32-byte public keys (bytes) or their 64-hex-digit form."""
    if not text or not signature:
        raise Error(_BAD, "unsigned release")
    what = "malformed manifest"
    if not isinstance(text, str) or len(text) > _MANIFEST_MAX:
        raise Error(_BAD, what)
    sig = _hex(signature, 128)
    if sig is None:
        raise Error(_BAD, "malformed signature")
    if not keys:
        raise Error(_BAD, "no release keys configured")
    data = text.encode()
    from twomes.update import ed25519

    for key in keys:
        if isinstance(key, str):
            key = _hex(key, 64)
        if key is not None and ed25519.verify(key, data, sig):
            break
    else:
        raise Error(_BAD, "bad signature or unknown key")
    try:
        m = json.loads(text)
    except ValueError:
        raise Error(_BAD, what)
    if not isinstance(m, dict) or len(m) != len(_FIELDS):
        raise Error(_BAD, what)
    for name in _FIELDS:
        if name not in m:
            raise Error(_BAD, "malformed manifest: no %s" % name)
        if not _ok(name, m[name]):
            raise Error(_BAD, "malformed manifest: %s" % name)
    if m["device_type"] != device_type:
        raise Error(_BAD, "release for device type %s, not %s" % (m["device_type"], device_type))
    return m


def check_release(rel, keys, device_type, allow_unsigned=False):
    """Validate a release object from the server (GET /device/firmware/target) and its signed manifest.
    Returns the manifest; or None for an unsigned release when `allow_unsigned` (lab only: the caller
    says so on the console). The release's version, kind, size and sha256 must equal the manifest's.
    Raises Error(-1, reason) otherwise."""
    if not isinstance(rel, dict):
        raise Error(_BAD, "malformed release")
    for name in ("version", "url", "kind", "size", "sha256"):
        if not _ok(name, rel.get(name)):
            raise Error(_BAD, "malformed release: " + name)
    if not rel.get("manifest") and not rel.get("signature") and allow_unsigned:
        return None
    m = verify(rel.get("manifest"), rel.get("signature"), keys, device_type)
    for name in ("version", "kind", "size", "sha256"):
        if rel[name] != m[name]:
            raise Error(_BAD, "release %s differs from its signed manifest" % name)
    return m


def rollback_ok(manifest, counter):
    """Anti-rollback: raises Error(-1) if the manifest's security counter is below the highest counter
    installed so far (`counter`, None before the first signed install). An equal counter is allowed:
    releases of one security level may replace each other in any order."""
    if counter is not None and manifest["counter"] < counter:
        raise Error(
            _BAD,
            "security counter %d below the installed %d: rollback refused" % (manifest["counter"], counter),
        )
