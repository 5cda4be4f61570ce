# Ed25519 SIGNING for the device tests (RFC 8032 5.1.5/5.1.6), on both runtimes, built on the device
# verifier's curve arithmetic: tests sign manifests of their own with throw-away seeds. Test code only:
# the device never signs. test_ed25519 checks it against the RFC 8032 signatures.
from twomes.update import ed25519 as e

# RFC 8032 5.1: the field prime, the group order L, the base point B and 2d (the verifier's are private
# constants, folded into its code on MicroPython: not module attributes there)
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
_D2 = 2 * (-121665 * pow(121666, _P - 2, _P)) % _P  # 2d, as the verifier's _add takes it


def _mul(n, pt):
    # (the verifier's addition doubles too: RFC 8032's formulas for edwards25519 are complete)
    q = (0, 1, 1, 0)
    while n:
        if n & 1:
            q = e._add(q, pt, _D2)
        pt = e._add(pt, pt, _D2)
        n >>= 1
    return q


def _encode(pt):
    """A point's 32-byte encoding (RFC 8032 5.1.2): y, and x's lowest bit as the top bit."""
    x, y, z, _ = pt
    zi = pow(z, _P - 2, _P)
    x = x * zi % _P
    return (y * zi % _P | (x & 1) << 255).to_bytes(32, "little")


def _base():
    return (_BX, _BY, 1, _BX * _BY % _P)


def _secret(seed):
    h = e.sha512(bytes(seed))
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def public_key(seed):
    a, _ = _secret(seed)
    return _encode(_mul(a, _base()))


def sign(seed, message):
    a, prefix = _secret(seed)
    pub = _encode(_mul(a, _base()))
    r = int.from_bytes(e.sha512(prefix + message), "little") % _L
    rb = _encode(_mul(r, _base()))
    k = int.from_bytes(e.sha512(rb + pub + message), "little") % _L
    return rb + ((r + k * a) % _L).to_bytes(32, "little")


def canonical(manifest):
    """The text `twomes release` signs: sorted keys, no spaces, ASCII (the host uses json.dumps with
    sort_keys; this is the same on both runtimes for the manifest's ASCII values)."""
    import json

    parts = []
    for name in sorted(manifest):
        parts.append(json.dumps(name) + ":" + json.dumps(manifest[name]))
    return "{" + ",".join(parts) + "}"
