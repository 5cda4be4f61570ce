"""Host side of the Twomes MicroPython firmware: CLI, reference server, virtual board."""

from pathlib import Path

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("twtools")
except PackageNotFoundError:  # run from a checkout without an install
    __version__ = "0+unknown"

_HERE = Path(__file__).resolve().parent
# REPO holds boot.py, main.py, package.json and device/: the checkout when run from one (make install:
# an editable install), else the copy installed with the package (pip/pipx install .)
_CHECKOUT = (_HERE.parents[1] / "device" / "twomes").is_dir()
REPO = _HERE.parents[1] if _CHECKOUT else _HERE / "_firmware"
DEVICE_DIR = REPO / "device"
# where compiled files and releases are made: build/ in a checkout, else the user's cache
BUILD = REPO / "build" if _CHECKOUT else Path.home() / ".cache" / "twomes"
