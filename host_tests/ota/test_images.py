"""Virtual-board ESP32 app images: the host builder makes images esptool accepts, and the board's
bootloader check (vimage.check) and frozen-app loader (vimage.load) read them like the chip would."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from twtools import esp32image
from twtools.build import BUNDLE_MAGIC
from twtools.vboard.images import build_sim_image, build_sim_image_bytes

HW = Path(__file__).resolve().parents[2] / "tools" / "twtools" / "vboard" / "hw"
if str(HW) not in sys.path:
    sys.path.insert(0, str(HW))

import vimage  # noqa: E402
import vstate  # noqa: E402

PART = 0x180000


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build_sim_image_bytes("3.1.4-test", runtime=16 * 1024)


def _board(tmp: Path, images: dict[str, bytes]) -> Path:
    (tmp / "board.json").write_text(json.dumps({"mac": "24:6F:28:00:00:01"}))
    for label, data in images.items():
        (tmp / f"flash_{label}.bin").write_bytes(data + b"\xff" * (PART - len(data)))
    vstate.configure(str(tmp))
    return tmp


def _bundle_files(bundle: bytes) -> list[str]:
    """The paths in a bundle (format 2: header lines, then "file PATH SIZE SHA256" + data)."""
    lines = bundle.split(b"\n", 4)
    count, rest = int(lines[3].split()[1]), lines[4]
    names = []
    for _ in range(count):
        line, rest = rest.split(b"\n", 1)
        _, path, size, _sha = line.decode().split()
        names.append(path)
        rest = rest[int(size) :]
    return names


def test_esptool_accepts_the_image(tmp_path: Path) -> None:
    size, sha = build_sim_image(tmp_path / "img.bin", "3.1.4-test", runtime=16 * 1024)
    data = (tmp_path / "img.bin").read_bytes()
    assert size == len(data) and data[0] == 0xE9
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "esptool"),
            "--chip",
            "esp32",
            "image-info",
            str(tmp_path / "img.bin"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"Checksum: 0x[0-9a-f]+ \(valid\)", out), out
    assert re.search(r"Validation hash: [0-9a-f]+ \(valid\)", out), out
    assert "Chip ID: 0 (ESP32)" in out
    assert "App version: 3.1.4-test" in out and "Project name: twomes" in out


def test_bootloader_check(tmp_path: Path, image: bytes) -> None:
    bad_data = bytearray(image)
    bad_data[400] ^= 1  # one bit in the frozen app
    bad_sum = bytearray(image)
    bad_sum[-33] ^= 0xFF  # the checksum byte
    other_chip = esp32image.build_image([(0x3F400020, image[32:288] + b"x" * 64)], chip="esp32s3")
    _board(
        tmp_path,
        {"ota_0": image, "ota_1": bytes(bad_data), "factory": bytes(bad_sum), "nvs": other_chip},
    )
    assert vimage.check("ota_0") is True
    assert vimage.check("ota_1") is False
    assert vimage.check("factory") is False
    assert vimage.check("nvs") is False
    assert vimage.version("ota_0") == "3.1.4-test"
    (tmp_path / "flash_ota_1.bin").write_bytes(b"\xff" * PART)  # erased partition
    assert vimage.check("ota_1") is False


def test_load_unpacks_the_frozen_app_once(tmp_path: Path, image: bytes) -> None:
    _board(tmp_path, {"ota_0": image})
    assert vimage.load("factory") is None  # the factory app is the filesystem's /lib
    path = Path(vimage.load("ota_0"))
    assert path.parent == tmp_path / "frozen" and path.name.startswith("ota_0-")
    assert image.index(BUNDLE_MAGIC) == 32 + 256  # the bundle follows esp_app_desc_t
    listed = sorted(_bundle_files(image[288:]))
    names = sorted(str(p.relative_to(path)) for p in path.rglob("*.mpy"))
    assert names == listed and "otaboot.mpy" in names and "twomes/update/image.mpy" in names
    stamp = (path / "twomes" / "__init__.mpy").stat().st_mtime_ns
    assert Path(vimage.load("ota_0")) == path
    assert (path / "twomes" / "__init__.mpy").stat().st_mtime_ns == stamp  # cached, not unpacked again
    other = build_sim_image_bytes("3.1.5-test", runtime=0)
    _board(tmp_path, {"ota_0": other})
    again = Path(vimage.load("ota_0"))
    assert again != path and not path.exists()  # the old image's app is gone


def test_host_tools_parse_the_image_and_release_accepts_it(tmp_path: Path) -> None:
    from twtools.release import prepare_image

    build_sim_image(tmp_path / "img.bin", "3.1.6-test", runtime=8 * 1024)
    fw = esp32image.inspect_firmware((tmp_path / "img.bin").read_bytes())
    assert fw.kind != "merged" and fw.chip == "esp32"
    assert fw.app is not None and fw.app.app is not None and fw.app.app.version == "3.1.6-test"
    path, what = prepare_image(tmp_path / "img.bin", "3.1.6-test", None)
    assert path == tmp_path / "img.bin" and "3.1.6-test" in what


def test_release_refuses_an_image_whose_own_version_differs(tmp_path: Path) -> None:
    """The device refuses such an image (it would reinstall it at every check): so does the tool."""
    from twtools.release import ReleaseError, prepare_image

    build_sim_image(tmp_path / "img.bin", "3.1.6-test", runtime=8 * 1024)
    with pytest.raises(ReleaseError, match="image says version '3.1.6-test' but the release is '3.1.7'"):
        prepare_image(tmp_path / "img.bin", "3.1.7", None)
    assert not (tmp_path / "release").exists()
