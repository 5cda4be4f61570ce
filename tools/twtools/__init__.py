"""Host side of the Twomes MicroPython firmware: CLI, reference server, virtual board."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEVICE_DIR = REPO / "device"
