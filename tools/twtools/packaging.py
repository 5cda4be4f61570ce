"""The mip ``package.json`` at the repository root, made from the device sources so it cannot drift:
``mpremote mip install github:ORG/REPO`` puts the app's sources on the board (``lib/twomes/*.py``,
``lib/otaboot.py``, and ``boot.py``/``main.py`` at the filesystem root). Regenerate with
``python -m twtools.packaging`` (a test checks the committed file is current).

URLs are relative to package.json (mip resolves them against where it fetched package.json), so the
file names no GitHub organisation. mip installs into the board's lib directory; ``../boot.py`` lands at
the filesystem root.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twtools import DEVICE_DIR, REPO
from twtools.build import device_sources, read_version
from twtools.deploy import ROOT_FILES  # on the board: /boot.py, /main.py (mip's target is /lib)

PACKAGE_JSON = REPO / "package.json"


def package_json() -> dict[str, Any]:
    urls = [
        [p.relative_to(DEVICE_DIR).as_posix(), "device/" + p.relative_to(DEVICE_DIR).as_posix()]
        for p in device_sources()
    ]
    urls += [["../" + name, name] for name in ROOT_FILES]
    return {"urls": urls, "deps": [], "version": read_version()}


def render() -> str:
    """package.json text: one [board path, source] pair per line."""
    data = package_json()
    pairs = ",\n".join("    " + json.dumps(pair) for pair in data["urls"])
    return f'{{\n  "urls": [\n{pairs}\n  ],\n  "deps": [],\n  "version": {json.dumps(data["version"])}\n}}\n'


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(
            0
            if PACKAGE_JSON.read_text() == render()
            else "package.json is out of date: python -m twtools.packaging"
        )
    PACKAGE_JSON.write_text(render())
    print(f"wrote {PACKAGE_JSON}")
