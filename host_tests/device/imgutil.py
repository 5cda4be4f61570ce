# ESP32 app images for the device tests, built here so both runtimes can (the host-side builder is
# tools/twtools/vboard/images.py). Layout: header + extended header, one segment (esp_app_desc_t and
# filler), zero padding, checksum byte, SHA-256.
import hashlib
import struct


def app_desc(version):
    v = version.encode()
    return (
        struct.pack("<II", 0xABCD5432, 0)
        + b"\0" * 8
        + v
        + b"\0" * (32 - len(v))
        + b"twomes"
        + b"\0" * 26
        + b"\0" * (256 - 80)
    )


def _xor(data):
    acc = 0
    for i in range(0, len(data), 512):
        acc ^= int.from_bytes(bytes(data[i : i + 512]), "little")
    x = 0xEF
    for b in acc.to_bytes(512, "little"):
        x ^= b
    return x


def make_image(version, size=80000, chip=0, seed=1):
    """An app image of about `size` bytes (a multiple of 16 plus 32) for chip id `chip`. Built in one
    bytearray: the MicroPython side of the tests has a small heap."""
    pattern = bytes((i * 31 + seed) & 0xFF for i in range(256))
    n = max(0, size - 24 - 8 - 256 - 48)
    n -= n % 4
    out = bytearray(struct.pack("<BBBBI", 0xE9, 1, 2, 0x20, 0x40081000))
    out += struct.pack("<B3sHBHH4sB", 0xEE, b"\0\0\0", chip, 0, 0, 0xFFFF, b"\0" * 4, 1)
    out += struct.pack("<II", 0x3F400020, 256 + n)
    start = len(out)
    out += app_desc(version)
    while n > 0:
        out += pattern[: min(256, n)]
        n -= 256
    x = _xor(memoryview(out)[start:])
    out += b"\0" * (15 - len(out) % 16)
    out.append(x)
    out += hashlib.sha256(out).digest()
    return bytes(out)
