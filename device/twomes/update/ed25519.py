# Ed25519 signature verification (RFC 8032, section 5.1.7), pure Python for the device: release
# manifests are signed with an offline key and verified here before anything is written. Verification
# only (no secrets live on the device), no table beyond the SHA-512 constants, big ints only.
#
# verify(public_key, message, signature) -> True or False. Every malformed input is False: a key or
# signature of the wrong length, S >= L (non-canonical, RFC 8032 5.1.7 step 1), a key that is not a
# point on the curve or not canonically encoded. The check is cofactorless ([S]B == R + [k]A, compared
# as the canonical encoding of R), like most libraries; R's encoding must be the canonical one.
# MicroPython has no SHA-512 in hashlib: sha512() below is the FIPS 180-4 algorithm on 64-bit ints.
import hashlib

# the field prime 2^255 - 19, the group order L, d = -121665/121666, 2d, sqrt(-1), the base point B
_P = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFED
_L = 0x1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED
_D = 0x52036CEE2B6FFE738CC740797779E89800700A4D4141D8AB75EB4DCA135978A3
_D2 = 0x2406D9DC56DFFCE7198E80F2EEF3D13000E0149A8283B156EBD69B9426B2F159
_SQRT_M1 = 0x2B8324804FC1DF0B2B4D00993DFBD7A72F431806AD2FE478C4EE1B274A0EA0B0
_BX = 0x216936D3CD6E53FEC0A4E231FDD6DC5C692CC7609525A7B2C9562D608F25D51A
_BY = 0x6666666666666666666666666666666666666666666666666666666666666658
_M64 = 0xFFFFFFFFFFFFFFFF

# SHA-512: the first 64 bits of the fractional parts of the cube roots of the first 80 primes (_K) and
# of the square roots of the first 8 primes (_H)
_K = (
    0x428A2F98D728AE22,
    0x7137449123EF65CD,
    0xB5C0FBCFEC4D3B2F,
    0xE9B5DBA58189DBBC,
    0x3956C25BF348B538,
    0x59F111F1B605D019,
    0x923F82A4AF194F9B,
    0xAB1C5ED5DA6D8118,
    0xD807AA98A3030242,
    0x12835B0145706FBE,
    0x243185BE4EE4B28C,
    0x550C7DC3D5FFB4E2,
    0x72BE5D74F27B896F,
    0x80DEB1FE3B1696B1,
    0x9BDC06A725C71235,
    0xC19BF174CF692694,
    0xE49B69C19EF14AD2,
    0xEFBE4786384F25E3,
    0x0FC19DC68B8CD5B5,
    0x240CA1CC77AC9C65,
    0x2DE92C6F592B0275,
    0x4A7484AA6EA6E483,
    0x5CB0A9DCBD41FBD4,
    0x76F988DA831153B5,
    0x983E5152EE66DFAB,
    0xA831C66D2DB43210,
    0xB00327C898FB213F,
    0xBF597FC7BEEF0EE4,
    0xC6E00BF33DA88FC2,
    0xD5A79147930AA725,
    0x06CA6351E003826F,
    0x142929670A0E6E70,
    0x27B70A8546D22FFC,
    0x2E1B21385C26C926,
    0x4D2C6DFC5AC42AED,
    0x53380D139D95B3DF,
    0x650A73548BAF63DE,
    0x766A0ABB3C77B2A8,
    0x81C2C92E47EDAEE6,
    0x92722C851482353B,
    0xA2BFE8A14CF10364,
    0xA81A664BBC423001,
    0xC24B8B70D0F89791,
    0xC76C51A30654BE30,
    0xD192E819D6EF5218,
    0xD69906245565A910,
    0xF40E35855771202A,
    0x106AA07032BBD1B8,
    0x19A4C116B8D2D0C8,
    0x1E376C085141AB53,
    0x2748774CDF8EEB99,
    0x34B0BCB5E19B48A8,
    0x391C0CB3C5C95A63,
    0x4ED8AA4AE3418ACB,
    0x5B9CCA4F7763E373,
    0x682E6FF3D6B2B8A3,
    0x748F82EE5DEFB2FC,
    0x78A5636F43172F60,
    0x84C87814A1F0AB72,
    0x8CC702081A6439EC,
    0x90BEFFFA23631E28,
    0xA4506CEBDE82BDE9,
    0xBEF9A3F7B2C67915,
    0xC67178F2E372532B,
    0xCA273ECEEA26619C,
    0xD186B8C721C0C207,
    0xEADA7DD6CDE0EB1E,
    0xF57D4F7FEE6ED178,
    0x06F067AA72176FBA,
    0x0A637DC5A2C898A6,
    0x113F9804BEF90DAE,
    0x1B710B35131C471B,
    0x28DB77F523047D84,
    0x32CAAB7B40C72493,
    0x3C9EBE0A15C9BEBC,
    0x431D67C49C100D4C,
    0x4CC5D4BECB3E42B6,
    0x597F299CFC657E2A,
    0x5FCB6FAB3AD6FAEC,
    0x6C44198C4A475817,
)
_H = (
    0x6A09E667F3BCC908,
    0xBB67AE8584CAA73B,
    0x3C6EF372FE94F82B,
    0xA54FF53A5F1D36F1,
    0x510E527FADE682D1,
    0x9B05688C2B3E6C1F,
    0x1F83D9ABFB41BD6B,
    0x5BE0CD19137E2179,
)


def sha512(data):
    """SHA-512 of bytes; hashlib's where the runtime has it (CPython), else the pure version."""
    h = getattr(hashlib, "sha512", None)
    if h is not None:
        return h(data).digest()
    return sha512_pure(data)


def sha512_pure(data):
    m = _M64
    n = len(data)
    # padding: 0x80, zeros up to 112 mod 128, the length in bits as 128-bit big-endian
    tail = b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big")
    h = list(_H)
    w = [0] * 80
    k = _K
    total = n + len(tail)
    for off in range(0, total, 128):
        if off + 128 <= n:
            block = data[off : off + 128]
        else:
            block = (data[off:] if off < n else b"") + tail[max(0, off - n) : off + 128 - n]
        for i in range(16):
            w[i] = int.from_bytes(block[8 * i : 8 * i + 8], "big")
        for i in range(16, 80):
            x = w[i - 15]
            y = w[i - 2]
            s0 = ((x >> 1 | x << 63) ^ (x >> 8 | x << 56) ^ (x >> 7)) & m
            s1 = ((y >> 19 | y << 45) ^ (y >> 61 | y << 3) ^ (y >> 6)) & m
            w[i] = (w[i - 16] + s0 + w[i - 7] + s1) & m
        a, b, c, d, e, f, g, hh = h
        for i in range(80):
            s1 = ((e >> 14 | e << 50) ^ (e >> 18 | e << 46) ^ (e >> 41 | e << 23)) & m
            t1 = hh + s1 + ((e & f) ^ ((e ^ m) & g)) + k[i] + w[i]
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


def _add(p1, p2):
    p = _P
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % p
    b = (y1 + x1) * (y2 + x2) % p
    c = t1 * _D2 % p * t2 % p
    d = 2 * z1 * z2 % p
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def _double(p1):
    p = _P
    x1, y1, z1, _ = p1
    a = x1 * x1 % p
    b = y1 * y1 % p
    c = 2 * z1 * z1 % p
    h = a + b
    s = x1 + y1
    e = h - s * s % p
    g = a - b
    f = c + g
    return (e * f % p, g * h % p, f * g % p, e * h % p)


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


def _encode(pt):
    p = _P
    x, y, z, _ = pt
    zi = pow(z, p - 2, p)
    x = x * zi % p
    y = y * zi % p
    return (y | (x & 1) << 255).to_bytes(32, "little")


def valid_key(public_key):
    """True if the bytes are a 32-byte canonical encoding of a curve point (a usable public key)."""
    return (
        isinstance(public_key, (bytes, bytearray))
        and len(public_key) == 32
        and _decode(public_key) is not None
    )


def verify(public_key, message, signature):
    """True if signature (64 bytes) is a valid Ed25519 signature of message under public_key (32 bytes)."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    a = _decode(public_key)
    if a is None:
        return False
    r = bytes(signature[:32])
    k = int.from_bytes(sha512(r + bytes(public_key) + bytes(message)), "little") % _L
    # [S]B + [k](-A), both scalars at once (Straus-Shamir): one doubling per bit, one addition where
    # either bit is set; then R must be its canonical encoding
    b = (_BX, _BY, 1, _BX * _BY % _P)
    na = (_P - a[0], a[1], 1, _P - a[3])
    both = _add(b, na)
    q = None
    i = 253
    while i >= 0:
        if q is not None:
            q = _double(q)
        bit = (s >> i & 1) | (k >> i & 1) << 1
        if bit:
            add = b if bit == 1 else na if bit == 2 else both
            q = add if q is None else _add(q, add)
        i -= 1
    if q is None:
        q = (0, 1, 1, 0)  # the neutral element
    return _encode(q) == r
