"""ESP32 firmware images: parse, check and (for tests and simulators) build them.

An ESP-IDF image (bootloader or app) is laid out as

    header (8 bytes)          magic 0xE9, segment count, SPI mode, SPI speed/size, entry address
    extended header (16)      WP pin, SPI pin drive, chip id, min/max chip revision, hash-appended flag
    segments                  each: load address (u32), length (u32), data
    padding + checksum        zero bytes up to the last byte of a 16-byte block, which is the
                              XOR of all segment data bytes seeded with 0xEF
    SHA-256 (optional)        32 bytes over everything before it, when hash_appended == 1

An app image carries ``esp_app_desc_t`` (magic 0xABCD5432: version, project name, IDF version...) at the
start of its first (DROM) segment. A MicroPython ``firmware.bin`` for ESP32 is a *merged* flash image:
bootloader at the chip's bootloader offset (0x1000 on the ESP32), partition table at 0x8000 and the app
at its partition's offset, with the gaps padded; an *app-only* image is what OTA installs into a slot.

Pure functions over bytes; nothing here touches a serial port. Raises :class:`ImageError` (a
ValueError) with a sentence a person can act on.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Literal

IMAGE_MAGIC = 0xE9
CHECKSUM_SEED = 0xEF
APP_DESC_MAGIC = 0xABCD5432
BOOTLOADER_DESC_MAGIC = 0x50
HEADER_SIZE = 8
EXT_HEADER_SIZE = 16
SEGMENT_HEADER_SIZE = 8
APP_DESC_SIZE = 256
MAX_SEGMENTS = 16  # ESP_IMAGE_MAX_SEGMENTS in ESP-IDF
PARTITION_TABLE_OFFSET = 0x8000  # flash address of the partition table (CONFIG_PARTITION_TABLE_OFFSET)
PARTITION_TABLE_SIZE = 0xC00
PARTITION_MAGIC = b"\xaa\x50"
PARTITION_MD5_MAGIC = b"\xeb\xeb"
DEFAULT_APP_OFFSET = 0x10000  # first app partition of every MicroPython ESP32 partition table

# esp_chip_id_t -> (esptool chip name, bootloader flash offset)
CHIPS: dict[int, tuple[str, int]] = {
    0: ("esp32", 0x1000),
    2: ("esp32s2", 0x1000),
    5: ("esp32c3", 0x0),
    9: ("esp32s3", 0x0),
    12: ("esp32c2", 0x0),
    13: ("esp32c6", 0x0),
    16: ("esp32h2", 0x0),
    18: ("esp32p4", 0x2000),
    20: ("esp32c61", 0x0),
    23: ("esp32c5", 0x2000),
    25: ("esp32h21", 0x0),
    28: ("esp32h4", 0x2000),
}
CHIP_IDS: dict[str, int] = {name: cid for cid, (name, _) in CHIPS.items()}

_HEADER = struct.Struct("<BBBBI")
_EXT_HEADER = struct.Struct("<B3sHBHH4sB")
_SEGMENT = struct.Struct("<II")
_APP_DESC = struct.Struct("<II8s32s32s16s16s32s32sHHB3s72s")
_PARTITION = struct.Struct("<2sBBII16sI")

# Partition types/subtypes (ESP-IDF partition table)
PART_TYPE_APP = 0x00
PART_TYPE_DATA = 0x01
APP_SUBTYPE_FACTORY = 0x00
APP_SUBTYPE_OTA_MIN = 0x10
APP_SUBTYPE_OTA_MAX = 0x1F
APP_SUBTYPE_TEST = 0x20


class ImageError(ValueError):
    """The bytes are not the ESP32 image that was expected; the message says what is wrong."""


def chip_name(chip_id: int) -> str:
    return CHIPS[chip_id][0] if chip_id in CHIPS else f"unknown chip id {chip_id}"


def bootloader_offset(chip: str) -> int:
    """Flash address of the second-stage bootloader for an esptool chip name ("esp32", "esp32s3"...)."""
    if chip not in CHIP_IDS:
        raise ImageError(f"unknown chip {chip!r}; known: {', '.join(sorted(CHIP_IDS))}")
    return CHIPS[CHIP_IDS[chip]][1]


@dataclass(frozen=True)
class ImageHeader:
    magic: int
    segment_count: int
    spi_mode: int
    spi_speed: int  # low nibble of byte 3
    spi_size: int  # high nibble of byte 3
    entry_addr: int
    wp_pin: int
    spi_pin_drv: bytes
    chip_id: int
    min_chip_rev: int
    min_chip_rev_full: int
    max_chip_rev_full: int
    hash_appended: bool

    @property
    def chip(self) -> str:
        return chip_name(self.chip_id)


@dataclass(frozen=True)
class Segment:
    load_addr: int
    data_offset: int  # offset of the segment's data from the start of the image
    length: int


@dataclass(frozen=True)
class AppDescription:
    """``esp_app_desc_t``: what ``idf.py`` (and MicroPython's build) stamps into every app."""

    secure_version: int
    version: str
    project_name: str
    time: str
    date: str
    idf_ver: str
    app_elf_sha256: bytes


@dataclass(frozen=True)
class Image:
    header: ImageHeader
    segments: tuple[Segment, ...]
    length: int  # bytes the image occupies, checksum and appended hash included
    checksum: int  # stored checksum byte
    computed_checksum: int
    sha256: bytes | None  # stored digest when hash_appended
    computed_sha256: bytes | None
    app: AppDescription | None  # None for a bootloader (or an app without a description)

    @property
    def chip(self) -> str:
        return self.header.chip

    @property
    def checksum_ok(self) -> bool:
        return self.checksum == self.computed_checksum

    @property
    def sha256_ok(self) -> bool | None:
        """True/False when a hash is appended, None when the image carries none."""
        if self.sha256 is None:
            return None
        return self.sha256 == self.computed_sha256

    @property
    def valid(self) -> bool:
        return self.checksum_ok and self.sha256_ok is not False


@dataclass(frozen=True)
class Partition:
    label: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int

    @property
    def is_app(self) -> bool:
        return self.type == PART_TYPE_APP

    @property
    def is_ota_slot(self) -> bool:
        return self.is_app and APP_SUBTYPE_OTA_MIN <= self.subtype <= APP_SUBTYPE_OTA_MAX


@dataclass(frozen=True)
class Firmware:
    """What a file to flash contains and where it goes."""

    kind: Literal["merged", "app"]
    chip: str
    flash_offset: int  # where the file's first byte is written
    image: Image  # the bootloader for a merged file, the app for an app-only file
    app: Image | None  # the app image (for a merged file: the first app partition's image)
    partitions: tuple[Partition, ...]  # empty for an app-only file

    @property
    def app_slots(self) -> list[Partition]:
        return [p for p in self.partitions if p.is_ota_slot]

    @property
    def ota_capable(self) -> bool:
        """Two or more OTA app slots (e.g. MicroPython's ESP32_GENERIC-OTA)."""
        return len(self.app_slots) >= 2

    @property
    def version(self) -> str | None:
        return self.app.app.version if self.app and self.app.app else None


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_header(data: bytes, offset: int = 0) -> ImageHeader:
    """Header and extended header of the image at ``data[offset:]``."""
    need = HEADER_SIZE + EXT_HEADER_SIZE
    if len(data) - offset < need:
        raise ImageError(f"too short for an ESP32 image header ({len(data) - offset} bytes, need {need})")
    magic, count, mode, speed_size, entry = _HEADER.unpack_from(data, offset)
    if magic != IMAGE_MAGIC:
        raise ImageError(f"not an ESP32 image: first byte is {magic:#04x}, an ESP32 image starts with 0xe9")
    if not 0 < count <= MAX_SEGMENTS:
        raise ImageError(f"not an ESP32 image: {count} segments (an image has 1..{MAX_SEGMENTS})")
    wp, drv, chip_id, min_rev, min_full, max_full, _reserved, hashed = _EXT_HEADER.unpack_from(
        data, offset + HEADER_SIZE
    )
    if hashed not in (0, 1):
        raise ImageError(f"not an ESP32 image: hash_appended flag is {hashed} (0 or 1 expected)")
    return ImageHeader(
        magic=magic,
        segment_count=count,
        spi_mode=mode,
        spi_speed=speed_size & 0x0F,
        spi_size=speed_size >> 4,
        entry_addr=entry,
        wp_pin=wp,
        spi_pin_drv=drv,
        chip_id=chip_id,
        min_chip_rev=min_rev,
        min_chip_rev_full=min_full,
        max_chip_rev_full=max_full,
        hash_appended=bool(hashed),
    )


def parse_app_description(segment_data: bytes) -> AppDescription | None:
    """``esp_app_desc_t`` at the start of ``segment_data``, or None when its magic is absent."""
    if len(segment_data) < APP_DESC_SIZE:
        return None
    magic, secure, _r1, version, project, time, date, idf, elf_sha, *_rest = _APP_DESC.unpack_from(
        segment_data
    )
    if magic != APP_DESC_MAGIC:
        return None
    return AppDescription(
        secure_version=secure,
        version=_cstr(version),
        project_name=_cstr(project),
        time=_cstr(time),
        date=_cstr(date),
        idf_ver=_cstr(idf),
        app_elf_sha256=elf_sha,
    )


def parse_image(data: bytes, offset: int = 0) -> Image:
    """Parse the image at ``data[offset:]``: segments, checksum, appended SHA-256, app description.

    Bytes after the image (flash padding) are ignored. A bad checksum or digest does not raise: look at
    ``checksum_ok``/``sha256_ok``/``valid``; a truncated or malformed image raises ImageError.
    """
    header = parse_header(data, offset)
    pos = offset + HEADER_SIZE + EXT_HEADER_SIZE
    segments = []
    checksum = CHECKSUM_SEED
    app = None
    for i in range(header.segment_count):
        if pos + SEGMENT_HEADER_SIZE > len(data):
            raise ImageError(f"truncated ESP32 image: segment {i} header is past the end of the file")
        load, length = _SEGMENT.unpack_from(data, pos)
        pos += SEGMENT_HEADER_SIZE
        if pos + length > len(data):
            raise ImageError(
                f"truncated ESP32 image: segment {i} ({length} bytes at {pos - offset:#x}) "
                f"runs past the end of the file ({len(data) - offset} bytes)"
            )
        body = data[pos : pos + length]
        segments.append(Segment(load, pos - offset, length))
        if app is None:
            app = parse_app_description(body)
        checksum = _xor(checksum, body)
        pos += length
    # checksum byte: the last byte of a 16-byte block
    pos += 15 - ((pos - offset) % 16)
    if pos >= len(data):
        raise ImageError("truncated ESP32 image: the checksum byte is past the end of the file")
    stored = data[pos]
    pos += 1
    digest = computed = None
    if header.hash_appended:
        if pos + 32 > len(data):
            raise ImageError("truncated ESP32 image: the appended SHA-256 is past the end of the file")
        computed = hashlib.sha256(data[offset:pos]).digest()
        digest = bytes(data[pos : pos + 32])
        pos += 32
    return Image(
        header=header,
        segments=tuple(segments),
        length=pos - offset,
        checksum=stored,
        computed_checksum=checksum,
        sha256=digest,
        computed_sha256=computed,
        app=app,
    )


def _xor(seed: int, data: bytes) -> int:
    # XOR of all bytes, a machine word at a time (images are megabytes)
    n = len(data) - len(data) % 8
    acc = 0
    for (word,) in struct.iter_unpack("<Q", data[:n]):
        acc ^= word
    for shift in range(0, 64, 8):
        seed ^= (acc >> shift) & 0xFF
    for b in data[n:]:
        seed ^= b
    return seed


def parse_partition_table(data: bytes, offset: int = 0) -> tuple[Partition, ...]:
    """Entries of the partition table at ``data[offset:]`` (up to the end marker or MD5 entry)."""
    entries = []
    end = min(len(data), offset + PARTITION_TABLE_SIZE)
    pos = offset
    while pos + _PARTITION.size <= end:
        magic, ptype, subtype, poff, size, label, flags = _PARTITION.unpack_from(data, pos)
        if magic != PARTITION_MAGIC:
            if magic in (b"\xff\xff", PARTITION_MD5_MAGIC):
                break
            raise ImageError(f"bad partition table entry at {pos - offset:#x} (magic {magic.hex()})")
        entries.append(Partition(_cstr(label), ptype, subtype, poff, size, flags))
        pos += _PARTITION.size
    if not entries:
        raise ImageError("no partition table (expected entries starting with bytes AA 50)")
    return tuple(entries)


def inspect_firmware(data: bytes) -> Firmware:
    """Decide what a file to flash is and where it goes; raises ImageError explaining what was expected.

    - merged (MicroPython's ``firmware.bin``): bootloader image at offset 0 of the file, partition table
      at 0x8000 - bootloader offset; written at the chip's bootloader offset (0x1000 on ESP32).
    - app-only (``micropython.bin``, an OTA image): an app image with ``esp_app_desc_t``; written at the
      first app partition, 0x10000 (the chip must already have a bootloader and partition table).
    """
    expected = (
        "expected a MicroPython ESP32 firmware: either the merged firmware.bin (bootloader, partition "
        "table and app, flashed at 0x1000 on an ESP32) or an app-only image (flashed at 0x10000)"
    )
    try:
        first = parse_image(data)
    except ImageError as e:
        raise ImageError(f"{e}; {expected}") from None
    if first.header.chip_id not in CHIPS:
        raise ImageError(f"the image is for {first.chip}, which this tool does not know; {expected}")
    chip, boot_off = CHIPS[first.header.chip_id]
    table_at = PARTITION_TABLE_OFFSET - boot_off
    if first.app is None and data[table_at : table_at + 2] == PARTITION_MAGIC:
        partitions = parse_partition_table(data, table_at)
        app_parts = [p for p in partitions if p.is_app]
        if not app_parts:
            raise ImageError("the merged image's partition table has no app partition")
        app_at = app_parts[0].offset - boot_off
        try:
            app = parse_image(data, app_at)
        except ImageError as e:
            raise ImageError(
                f"merged image: no valid app image at {app_parts[0].offset:#x} "
                f"(partition {app_parts[0].label!r}): {e}"
            ) from None
        if app.header.chip_id != first.header.chip_id:
            raise ImageError(f"merged image: bootloader is for {chip} but the app is for {app.chip}")
        if not (first.valid and app.valid):
            raise ImageError("merged image: checksum or SHA-256 mismatch (the file is damaged)")
        return Firmware("merged", chip, boot_off, first, app, partitions)
    if first.app is None:
        raise ImageError(
            "this is an ESP32 image without an app description and without a partition table after it "
            f"(a bootloader alone?); {expected}"
        )
    if not first.valid:
        raise ImageError("app image: checksum or SHA-256 mismatch (the file is damaged)")
    return Firmware("app", chip, DEFAULT_APP_OFFSET, first, first, ())


# ---- building images (tests, simulators) -------------------------------------------------------------


def build_app_description(
    version: str = "1.0.0",
    project_name: str = "micropython",
    idf_ver: str = "v5.2.2",
    time: str = "12:00:00",
    date: str = "Jan  1 2025",
    secure_version: int = 0,
    app_elf_sha256: bytes = bytes(32),
) -> bytes:
    """The 256 bytes of an ``esp_app_desc_t``."""
    return _APP_DESC.pack(
        APP_DESC_MAGIC,
        secure_version,
        bytes(8),
        version.encode()[:31],
        project_name.encode()[:31],
        time.encode()[:15],
        date.encode()[:15],
        idf_ver.encode()[:31],
        app_elf_sha256,
        0,
        0,
        0,
        bytes(3),
        bytes(72),
    )


def build_image(
    segments: list[tuple[int, bytes]],
    chip: str = "esp32",
    entry_addr: int = 0x40080000,
    hash_appended: bool = True,
    spi_mode: int = 2,
    spi_speed: int = 0,
    spi_size: int = 2,
) -> bytes:
    """An image with the given (load address, data) segments, correct checksum and optional SHA-256."""
    out = bytearray(
        _HEADER.pack(IMAGE_MAGIC, len(segments), spi_mode, (spi_size << 4) | spi_speed, entry_addr)
    )
    out += _EXT_HEADER.pack(0xEE, bytes(3), CHIP_IDS[chip], 0, 0, 0xFFFF, bytes(4), int(hash_appended))
    checksum = CHECKSUM_SEED
    for load, body in segments:
        out += _SEGMENT.pack(load, len(body)) + body
        checksum = _xor(checksum, body)
    out += bytes(15 - len(out) % 16)
    out.append(checksum)
    if hash_appended:
        out += hashlib.sha256(out).digest()
    return bytes(out)


# (DROM, IROM) load addresses of the first two app segments, so esptool's image-info recognises them
_APP_SEGMENT_ADDRS = {
    "esp32": (0x3F400020, 0x400D0020),
    "esp32s2": (0x3F000020, 0x40080020),
    "esp32s3": (0x3C000020, 0x42000020),
    "esp32c3": (0x3C000020, 0x42000020),
    "esp32c2": (0x3C000020, 0x42000020),
}


def build_app_image(
    version: str = "1.0.0", chip: str = "esp32", code: bytes = b"\x00" * 64, **kw: str
) -> bytes:
    """A small app image: DROM segment starting with ``esp_app_desc_t``, then one code segment."""
    desc = build_app_description(version=version, **kw)  # type: ignore[arg-type]
    drom, irom = _APP_SEGMENT_ADDRS.get(chip, (0x42800020, 0x42000020))
    return build_image([(drom, desc + bytes(32)), (irom, code)], chip=chip)


def build_partition_table(partitions: list[tuple[str, int, int, int, int]]) -> bytes:
    """Table bytes for (label, type, subtype, offset, size) entries, padded with 0xFF to 0xC00."""
    out = bytearray()
    for label, ptype, subtype, off, size in partitions:
        out += _PARTITION.pack(PARTITION_MAGIC, ptype, subtype, off, size, label.encode()[:15], 0)
    return bytes(out) + b"\xff" * (PARTITION_TABLE_SIZE - len(out))


# MicroPython's ESP32_GENERIC-OTA layout (partitions-4MiB-ota.csv)
OTA_4MIB = [
    ("nvs", PART_TYPE_DATA, 0x02, 0x9000, 0x4000),
    ("otadata", PART_TYPE_DATA, 0x00, 0xD000, 0x2000),
    ("phy_init", PART_TYPE_DATA, 0x01, 0xF000, 0x1000),
    ("ota_0", PART_TYPE_APP, 0x10, 0x10000, 0x180000),
    ("ota_1", PART_TYPE_APP, 0x11, 0x190000, 0x180000),
    ("vfs", PART_TYPE_DATA, 0x81, 0x310000, 0xF0000),
]


def build_merged_firmware(
    app: bytes,
    chip: str = "esp32",
    partitions: list[tuple[str, int, int, int, int]] | None = None,
    bootloader: bytes | None = None,
) -> bytes:
    """A merged flash image as MicroPython's build makes it: bootloader, partition table, app, 0xFF gaps."""
    boot_off = bootloader_offset(chip)
    table = partitions or OTA_4MIB
    boot = bootloader or build_image([(0x3FFF0030, bytes(48)), (0x40078000, bytes(64))], chip=chip)
    app_off = next(p[3] for p in table if p[1] == PART_TYPE_APP)
    out = bytearray(b"\xff" * (app_off - boot_off))
    out[: len(boot)] = boot
    tpos = PARTITION_TABLE_OFFSET - boot_off
    out[tpos : tpos + PARTITION_TABLE_SIZE] = build_partition_table(table)
    return bytes(out) + app
