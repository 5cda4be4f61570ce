# Ed25519 signature verification (RFC 8032, section 5.1.7), pure Python for the device: release
# manifests are signed with an offline key and verified here before anything is written. Verification
# only (no secrets live on the device), no table beyond the SHA-512 constants, big ints only.
#
# verify(key, message, signature) -> True or False. Every malformed input is False: a key or
# signature of the wrong length, S >= L (non-canonical, RFC 8032 5.1.7 step 1), a key that is not a
# point on the curve or not canonically encoded. The check is cofactorless ([S]B == R + [k]A, compared
# as the canonical encoding of R), like most libraries; R's encoding must be the canonical one.
# MicroPython has no SHA-512 in hashlib: sha512() below is the FIPS 180-4 algorithm on 64-bit ints.
import hashlib
from array import array

from micropython import const

# (private constants: folded into the code, their names not interned - docs/heap.md)
# the field prime 2^255 - 19, the group order L, d = -121665/121666, sqrt(-1), the base point B's
# encoding (y = 4/5, x even: RFC 8032 5.1); 2d and B's coordinates are computed when a signature is
# checked (a big int constant is ~128 bytes of heap while the module is loaded, docs/heap.md)
_P = const(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFED)
_L = const(0x1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED)
_D = const(0x52036CEE2B6FFE738CC740797779E89800700A4D4141D8AB75EB4DCA135978A3)
_SQRT_M1 = const(0x2B8324804FC1DF0B2B4D00993DFBD7A72F431806AD2FE478C4EE1B274A0EA0B0)
_B = const(
    b"\x58\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66"
)
_M64 = const(0xFFFFFFFFFFFFFFFF)

# SHA-512: the first 64 bits of the fractional parts of the cube roots of the first 80 primes (_K) and
# of the square roots of the first 8 primes (_H), big-endian; bytes, not 88 big ints: 5 KB less heap
_K = const(
    b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc"
    b"\x39\x56\xc2\x5b\xf3\x48\xb5\x38\x59\xf1\x11\xf1\xb6\x05\xd0\x19\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18"
    b"\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2"
    b"\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1\x9b\xdc\x06\xa7\x25\xc7\x12\x35\xc1\x9b\xf1\x74\xcf\x69\x26\x94"
    b"\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
    b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5"
    b"\x98\x3e\x51\x52\xee\x66\xdf\xab\xa8\x31\xc6\x6d\x2d\xb4\x32\x10\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4"
    b"\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70"
    b"\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed\x53\x38\x0d\x13\x9d\x95\xb3\xdf"
    b"\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
    b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30"
    b"\xd1\x92\xe8\x19\xd6\xef\x52\x18\xd6\x99\x06\x24\x55\x65\xa9\x10\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8"
    b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8"
    b"\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb\x5b\x9c\xca\x4f\x77\x63\xe3\x73\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3"
    b"\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
    b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b"
    b"\xca\x27\x3e\xce\xea\x26\x61\x9c\xd1\x86\xb8\xc7\x21\xc0\xc2\x07\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78"
    b"\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b"
    b"\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc\x43\x1d\x67\xc4\x9c\x10\x0d\x4c"
    b"\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17"
)
_H = const(
    b"\x6a\x09\xe6\x67\xf3\xbc\xc9\x08\xbb\x67\xae\x85\x84\xca\xa7\x3b\x3c\x6e\xf3\x72\xfe\x94\xf8\x2b\xa5\x4f\xf5\x3a\x5f\x1d\x36\xf1"
    b"\x51\x0e\x52\x7f\xad\xe6\x82\xd1\x9b\x05\x68\x8c\x2b\x3e\x6c\x1f\x1f\x83\xd9\xab\xfb\x41\xbd\x6b\x5b\xe0\xcd\x19\x13\x7e\x21\x79"
)


def sha512(*parts):
    """SHA-512 of the bytes of `parts` one after the other; hashlib's where the runtime has it
    (CPython), else the pure version."""
    h = getattr(hashlib, "sha512", None)
    if h is not None:
        h = h()
        for p in parts:
            h.update(p)
        return h.digest()
    return sha512_pure(*parts)


def sha512_pure(*parts):
    m = _M64
    n = 0
    for p in parts:
        n += len(p)
    # padding: 0x80, zeros up to 112 mod 128, the length in bits as 128-bit big-endian
    parts += (b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big"),)
    # the state and the message schedule (a window of its last 16 words) as arrays of 64-bit words:
    # a word held in a list is a big int object of its own (~64 bytes on the 64-bit unix port), in an
    # array it is 8 bytes inline (24 objects, ~1.4 KB, less live at the check's peak: docs/heap.md)
    h = array("Q", [int.from_bytes(_H[i : i + 8], "big") for i in range(0, 64, 8)])
    w = array("Q", [0] * 16)
    k = _K
    # each 128-byte block is copied from the parts into one buffer: the message is never joined
    block = bytearray(128)
    at = off = 0  # the part and the offset in it where the next block starts
    for _ in range((n + len(parts[-1])) // 128):
        got = 0
        while got < 128:
            p = parts[at]
            take = min(128 - got, len(p) - off)
            block[got : got + take] = memoryview(p)[off : off + take]
            got += take
            off += take
            if off == len(p):
                at += 1
                off = 0
        for t in range(16):
            w[t] = int.from_bytes(block[8 * t : 8 * t + 8], "big")
        a, b, c, d, e, f, g, hh = h
        for i in range(80):
            j = i & 15
            if i >= 16:
                x = w[(i - 15) & 15]
                y = w[(i - 2) & 15]
                s0 = ((x >> 1 | x << 63) ^ (x >> 8 | x << 56) ^ (x >> 7)) & m
                s1 = ((y >> 19 | y << 45) ^ (y >> 61 | y << 3) ^ (y >> 6)) & m
                w[j] = (w[j] + s0 + w[(i - 7) & 15] + s1) & m
            s1 = ((e >> 14 | e << 50) ^ (e >> 18 | e << 46) ^ (e >> 41 | e << 23)) & m
            t1 = hh + s1 + ((e & f) ^ ((e ^ m) & g)) + int.from_bytes(k[8 * i : 8 * i + 8], "big") + w[j]
            s0 = ((a >> 28 | a << 36) ^ (a >> 34 | a << 30) ^ (a >> 39 | a << 25)) & m
            t2 = s0 + ((a & b) ^ (a & c) ^ (b & c))
            hh = g
            g = f
            f = e
            e = (d + t1) & m
            d = c
            c = b
            b = a
            a = (t1 + t2) & m
        h[0] = (h[0] + a) & m
        h[1] = (h[1] + b) & m
        h[2] = (h[2] + c) & m
        h[3] = (h[3] + d) & m
        h[4] = (h[4] + e) & m
        h[5] = (h[5] + f) & m
        h[6] = (h[6] + g) & m
        h[7] = (h[7] + hh) & m
    return b"".join(x.to_bytes(8, "big") for x in h)


# Points in extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, x*y = T/Z (RFC 8032 5.1.4)


def _add(p1, p2, d2):
    p = _P
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    # RFC 8032 5.1.4's A..H, four live at a time (each a big int: the signature check's peak)
    a = (y1 - x1) * (y2 - x2) % p
    b = (y1 + x1) * (y2 + x2) % p
    a, b = b - a, b + a  # E, H
    c = t1 * d2 % p * t2 % p
    d = 2 * z1 * z2 % p
    c, d = d - c, d + c  # F, G
    return (a * c % p, d * b % p, c * d % p, a * b % p)  # (E*F, G*H, F*G, E*H)


def _decode(s):
    """32 bytes -> point, or None if not a canonical encoding of a point on the curve (RFC 8032 5.1.3)."""
    p = _P
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= p:
        return None
    yy = y * y % p
    u = (yy - 1) % p
    v = (_D * yy + 1) % p
    v3 = v * v % p * v % p
    x = u * v3 % p * pow(u * v3 % p * v3 % p * v % p, (p - 5) // 8, p) % p
    vxx = v * x % p * x % p
    if vxx != u:
        if vxx != p - u:
            return None
        x = x * _SQRT_M1 % p
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = p - x
    return (x, y, 1, x * y % p)


def verify(key, message, signature):
    """True if signature (64 bytes) is a valid Ed25519 signature of message under the public key `key`
    (32 bytes). (The doubling and the encoding of the result are written out here, where they are
    used: a function of their own is a name interned for good, docs/heap.md.)"""
    if len(key) != 32 or len(signature) != 64:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    r = bytes(signature[:32])
    # the hash first: SHA-512 is the largest working set of the check, and nothing of the curve is
    # live meanwhile (docs/heap.md)
    k = int.from_bytes(sha512(r, key, message), "little") % _L
    a = _decode(key)
    if a is None:
        return False
    na = (_P - a[0], a[1], 1, _P - a[3])
    a = None
    # [S]B + [k](-A), both scalars at once (Straus-Shamir): one doubling per bit, an addition per bit
    # set (B - A is not kept for the bits set in both: one point less live); then R must be its
    # canonical encoding
    b = _decode(_B)
    p = _P
    d2 = 2 * _D % p
    q = None
    i = 253
    while i >= 0:
        if q is not None:  # q = 2q (RFC 8032 5.1.4's doubling: A..H)
            x1, y1, z1, _ = q
            q = x1 * x1 % p
            a = y1 * y1 % p
            q, a = q + a, q - a  # H, G
            c = 2 * z1 * z1 % p + a  # F
            e = q - (x1 + y1) * (x1 + y1) % p  # E
            q = (e * c % p, a * q % p, c * a % p, e * q % p)  # (E*F, G*H, F*G, E*H)
            x1 = y1 = z1 = e = c = a = None
        if s >> i & 1:
            q = b if q is None else _add(q, b, d2)
        if k >> i & 1:
            q = na if q is None else _add(q, na, d2)
        i -= 1
    if q is None:
        q = (0, 1, 1, 0)  # the neutral element
    # its encoding: y, and x's lowest bit as the top bit (RFC 8032 5.1.2)
    z = pow(q[2], p - 2, p)
    x = q[0] * z % p
    return (q[1] * z % p | (x & 1) << 255).to_bytes(32, "little") == r
