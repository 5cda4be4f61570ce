"""ESP32 app images for the virtual board: a real ESP-IDF image layout whose code is the frozen app.

Layout (what ``esptool image-info`` and the ESP-IDF bootloader read)::

    header (8)            0xE9, segment count, SPI mode, SPI speed/size, entry address
    extended header (16)  WP pin, pin drive, chip id (ESP32 = 0), chip revisions, hash_appended = 1
    segment 0 (DROM)      esp_app_desc_t (256 bytes: magic 0xABCD5432, version, project name, ...)
                          followed by an app bundle (tools/twtools/build.py format): the frozen app
    segment 1 (IROM)      filler standing in for the MicroPython runtime (deterministic bytes)
    padding + checksum    zeros up to the last byte of a 16-byte block: XOR of all segment data ^ 0xEF
    SHA-256 (32)          over everything before it

``vboard/hw/vimage.py`` checks such an image like the bootloader does and, when its partition boots,
unpacks the bundle as the board's ``.frozen``: the code in the image is what runs after the reboot.

The full ESP32 image parser/builder of the host tools (``tools/twtools/esp32image.py``, branch
``hosttools``) covers merged firmware files and partition tables; this module is the small subset the
virtual board needs, kept separate so the board does not depend on that branch.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from twtools import DEVICE_DIR
from twtools.build import BUILD_DIR, build_bundle

IMAGE_MAGIC = 0xE9
CHECKSUM_SEED = 0xEF
APP_DESC_MAGIC = 0xABCD5432
CHIP_ESP32 = 0
APP_DESC_SIZE = 256
DROM_ADDR = 0x3F400020
IROM_ADDR = 0x400D0020
ENTRY_ADDR = 0x40081000
# A MicroPython ESP32 app is ~1.5 MB; the simulated runtime is smaller (fast tests) but large enough
# that a download spans several resume checkpoints (64 KB) and hundreds of flash writes.
DEFAULT_RUNTIME = 192 * 1024

_HEADER = struct.Struct("<BBBBI")
_EXT_HEADER = struct.Struct("<B3sHBHH4sB")
_SEGMENT = struct.Struct("<II")
_APP_DESC = struct.Struct("<II8s32s32s16s16s32s32sHHB3s72s")


def app_desc(version: str, project: str = "twomes", idf: str = "v5.4.1") -> bytes:
    """``esp_app_desc_t`` (256 bytes) as ESP-IDF stamps it into every app."""
    if len(version.encode()) > 31:
        raise ValueError("version longer than 31 bytes does not fit esp_app_desc_t")
    return _APP_DESC.pack(
        APP_DESC_MAGIC,
        0,  # secure_version
        b"\0" * 8,
        version.encode(),
        project.encode()[:31],
        b"00:00:00",
        b"Jan  1 2026",
        idf.encode(),
        hashlib.sha256(version.encode()).digest(),  # app_elf_sha256 (no ELF here)
        0,
        0xFFFF,
        16,  # mmu_page_size: log2(64 KB)
        b"\0" * 3,
        b"\0" * 72,
    )


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def filler(size: int, seed: str) -> bytes:
    """Deterministic bytes standing in for the MicroPython runtime (differs per version)."""
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    n = 0
    while len(out) < size:
        out += hashlib.sha256(block + n.to_bytes(4, "little")).digest()
        n += 1
    return bytes(out[:size])


def build_image(segments: list[tuple[int, bytes]], chip_id: int = CHIP_ESP32) -> bytes:
    """An ESP-IDF app image from (load address, data) segments: checksum and SHA-256 appended."""
    out = bytearray(_HEADER.pack(IMAGE_MAGIC, len(segments), 2, 0x20, ENTRY_ADDR))
    out += _EXT_HEADER.pack(0xEE, b"\0\0\0", chip_id, 0, 0, 0xFFFF, b"\0" * 4, 1)
    checksum = CHECKSUM_SEED
    for addr, data in segments:
        data = _pad4(data)
        out += _SEGMENT.pack(addr, len(data)) + data
        checksum ^= _xor(data)
    out += b"\0" * (15 - len(out) % 16)
    out.append(checksum)
    out += hashlib.sha256(out).digest()
    return bytes(out)


def _xor(data: bytes) -> int:
    x = 0
    # fold 8 bytes at a time, then the bytes of the result
    n = len(data) - len(data) % 8
    for (v,) in struct.iter_unpack("<Q", data[:n]):
        x ^= v
    r = 0
    for b in x.to_bytes(8, "little") + data[n:]:
        r ^= b
    return r


def build_sim_image_bytes(
    version: str, src: Path = DEVICE_DIR, runtime: int = DEFAULT_RUNTIME, chip_id: int = CHIP_ESP32
) -> bytes:
    """The image bytes: the device code (all of it, otaboot too: an image is the whole firmware)."""
    work = BUILD_DIR / "image-work"
    work.mkdir(parents=True, exist_ok=True)
    bundle_path = work / f"{version}.bundle"
    build_bundle(bundle_path, version, src, exclude=())
    bundle = bundle_path.read_bytes()
    bundle_path.unlink()
    segments = [(DROM_ADDR, app_desc(version) + bundle)]
    if runtime:
        segments.append((IROM_ADDR, filler(runtime, "micropython-runtime/" + version)))
    return build_image(segments, chip_id)


def build_sim_image(
    dest: Path, version: str, src: Path = DEVICE_DIR, runtime: int = DEFAULT_RUNTIME
) -> tuple[int, str]:
    """Write a virtual-board app image of the device code stamped ``version``; returns (size, sha256).

    This is what ``twomes release --image`` publishes for virtual boards (kind "image").
    """
    data = build_sim_image_bytes(version, src, runtime)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return len(data), hashlib.sha256(data).hexdigest()
