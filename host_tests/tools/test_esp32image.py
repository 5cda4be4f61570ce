"""esp32image on synthetic images, cross-checked with the real esptool's image-info."""

from __future__ import annotations

import subprocess
import sys

import pytest

from twtools import esp32image as e


def test_app_image_round_trip():
    data = e.build_app_image("v1.29.0", chip="esp32", project_name="micropython", idf_ver="v5.4.1")
    img = e.parse_image(data + b"\xff" * 100)  # flash padding after the image is ignored
    assert img.header.magic == 0xE9
    assert img.header.segment_count == 2
    assert img.header.chip_id == 0 and img.chip == "esp32"
    assert img.header.hash_appended
    assert img.length == len(data)
    assert [s.load_addr for s in img.segments] == [0x3F400020, 0x400D0020]
    assert img.segments[0].data_offset == 24 + 8
    assert img.checksum_ok and img.sha256_ok and img.valid
    assert img.app is not None
    assert (img.app.version, img.app.project_name, img.app.idf_ver) == ("v1.29.0", "micropython", "v5.4.1")


def test_esptool_agrees_with_the_builder(tmp_path):
    path = tmp_path / "app.bin"
    path.write_bytes(e.build_app_image("v9.8.7", chip="esp32s3"))
    out = subprocess.run(
        [sys.executable, "-m", "esptool", "image-info", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "Chip ID: 9 (ESP32-S3)" in out
    assert "Checksum: " in out and "(valid)" in out
    assert "App version: v9.8.7" in out


def test_without_hash_and_checksum_alignment():
    for n in range(1, 20):  # every padding length
        data = e.build_image([(0x3FFB0000, bytes(range(n)))], hash_appended=False)
        assert len(data) % 16 == 0
        img = e.parse_image(data)
        assert img.sha256 is None and img.sha256_ok is None and img.valid
        assert img.app is None


def test_damage_is_detected():
    data = bytearray(e.build_app_image())
    data[e.parse_image(bytes(data)).segments[1].data_offset] ^= 0x01  # code byte: checksum and digest break
    img = e.parse_image(bytes(data))
    assert not img.checksum_ok and img.sha256_ok is False and not img.valid
    good = bytearray(e.build_app_image())
    good[-1] ^= 0xFF  # only the appended digest
    img = e.parse_image(bytes(good))
    assert img.checksum_ok and img.sha256_ok is False


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "too short"),
        (b"PK\x03\x04" + bytes(40), "first byte is 0x50"),
        (bytes([0xE9, 0]) + bytes(40), "0 segments"),
        (bytes([0xE9, 40]) + bytes(40), "40 segments"),
        (e.build_app_image()[:100], "truncated"),
    ],
)
def test_invalid_images_raise_with_a_reason(data, words):
    with pytest.raises(e.ImageError, match=words):
        e.parse_image(data)


def test_merged_firmware_esp32():
    app = e.build_app_image("v1.29.0")
    fw = e.inspect_firmware(e.build_merged_firmware(app, chip="esp32"))
    assert fw.kind == "merged" and fw.chip == "esp32" and fw.flash_offset == 0x1000
    assert fw.image.app is None  # the bootloader
    assert [p.label for p in fw.app_slots] == ["ota_0", "ota_1"] and fw.ota_capable
    assert fw.version == "v1.29.0"
    assert [p.label for p in fw.partitions][:3] == ["nvs", "otadata", "phy_init"]


def test_merged_firmware_esp32s3_offset_zero_and_non_ota_table():
    table = [
        ("nvs", 1, 2, 0x9000, 0x6000),
        ("factory", 0, 0, 0x10000, 0x1F0000),
        ("vfs", 1, 0x81, 0x200000, 0x200000),
    ]
    fw = e.inspect_firmware(e.build_merged_firmware(e.build_app_image(chip="esp32s3"), "esp32s3", table))
    assert fw.flash_offset == 0 and fw.chip == "esp32s3"
    assert not fw.ota_capable


def test_app_only_firmware():
    fw = e.inspect_firmware(e.build_app_image("2.0.0", chip="esp32c3"))
    assert fw.kind == "app" and fw.flash_offset == 0x10000 and fw.chip == "esp32c3" and fw.version == "2.0.0"
    assert fw.partitions == ()


def test_inspect_refuses_with_an_explanation():
    with pytest.raises(e.ImageError, match="merged firmware.bin"):
        e.inspect_firmware(b"hello world" * 10)
    boot_only = e.build_image([(0x3FFF0030, bytes(48))])
    with pytest.raises(e.ImageError, match="bootloader alone"):
        e.inspect_firmware(boot_only)
    merged = bytearray(e.build_merged_firmware(e.build_app_image()))
    merged[0x10000 - 0x1000] = 0  # app magic gone
    with pytest.raises(e.ImageError, match="no valid app image at 0x10000"):
        e.inspect_firmware(bytes(merged))
    mixed = e.build_merged_firmware(e.build_app_image(chip="esp32s3"), chip="esp32")
    with pytest.raises(e.ImageError, match="bootloader is for esp32 but the app is for esp32s3"):
        e.inspect_firmware(mixed)
    damaged = bytearray(e.build_app_image())
    damaged[e.parse_image(bytes(damaged)).segments[1].data_offset + 3] ^= 1
    with pytest.raises(e.ImageError, match="damaged"):
        e.inspect_firmware(bytes(damaged))


def test_partition_table_parse():
    parts = e.parse_partition_table(e.build_partition_table(e.OTA_4MIB))
    assert len(parts) == 6
    ota0 = parts[3]
    assert (ota0.label, ota0.offset, ota0.size, ota0.is_app, ota0.is_ota_slot) == (
        "ota_0",
        0x10000,
        0x180000,
        True,
        True,
    )
    assert not parts[0].is_app
    with pytest.raises(e.ImageError, match="no partition table"):
        e.parse_partition_table(b"\xff" * 64)


def test_chip_helpers():
    assert e.bootloader_offset("esp32") == 0x1000
    assert e.bootloader_offset("esp32c3") == 0
    assert e.chip_name(9) == "esp32s3"
    assert "unknown" in e.chip_name(999)
    with pytest.raises(e.ImageError):
        e.bootloader_offset("esp8266")
