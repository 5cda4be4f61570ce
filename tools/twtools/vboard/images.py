"""ESP32 app images for the virtual board: a real ESP-IDF image layout whose code is the frozen app.

Layout (what ``esptool image-info``, ``twtools.esp32image`` and the ESP-IDF bootloader read)::

    header (8)            0xE9, segment count, SPI mode, SPI speed/size, entry address
    extended header (16)  WP pin, pin drive, chip id (ESP32 = 0), chip revisions, hash_appended = 1
    segment 0 (DROM)      esp_app_desc_t (256 bytes: magic 0xABCD5432, version, project name, ...)
                          followed by an app bundle (tools/twtools/build.py format): the frozen app
    segment 1 (IROM)      filler standing in for the MicroPython runtime (deterministic bytes)
    padding + checksum    zeros up to the last byte of a 16-byte block: XOR of all segment data ^ 0xEF
    SHA-256 (32)          over everything before it

The header, app description, checksum and hash come from ``twtools.esp32image`` (the host tools' image
parser/builder); this module only decides what the segments hold. ``vboard/hw/vimage.py`` checks such
an image like the bootloader does and, when its partition boots, unpacks the bundle as the board's
``.frozen``: the code in the image is what runs after the reboot.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from twtools import DEVICE_DIR, esp32image
from twtools.build import BUILD_DIR, build_bundle

DROM_ADDR = 0x3F400020
IROM_ADDR = 0x400D0020
# A MicroPython ESP32 app is ~1.5 MB; the simulated runtime is smaller (fast tests) but large enough
# that a download spans several resume checkpoints (64 KB) and hundreds of flash writes.
DEFAULT_RUNTIME = 192 * 1024


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def filler(size: int, seed: str) -> bytes:
    """Deterministic bytes standing in for the MicroPython runtime (different per version)."""
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    n = 0
    while len(out) < size:
        out += hashlib.sha256(block + n.to_bytes(4, "little")).digest()
        n += 1
    return bytes(out[:size])


def build_sim_image_bytes(
    version: str, src: Path = DEVICE_DIR, runtime: int = DEFAULT_RUNTIME, chip: str = "esp32"
) -> bytes:
    """The image: all of the device code (otaboot too: an image is the whole firmware) + filler."""
    if not 0 < len(version.encode()) <= 31:
        raise ValueError("the version must be 1..31 bytes to fit esp_app_desc_t")
    work = BUILD_DIR / "image-work"
    work.mkdir(parents=True, exist_ok=True)
    # one name per process and thread: parallel test workers build the same version at the same time
    bundle_path = work / f"{version}-{os.getpid()}-{threading.get_ident()}.bundle"
    build_bundle(bundle_path, version, src, exclude=())
    bundle = bundle_path.read_bytes()
    bundle_path.unlink()
    desc = esp32image.build_app_description(
        version=version, project_name="twomes", app_elf_sha256=hashlib.sha256(bundle).digest()
    )
    segments = [(DROM_ADDR, _pad4(desc + bundle))]
    if runtime:
        segments.append((IROM_ADDR, _pad4(filler(runtime, "micropython-runtime/" + version))))
    return esp32image.build_image(segments, chip=chip)


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
