"""Updates from a real gooseBit (a hawkBit DDI server) on virtual boards: the device registers
(configData), sees the rollout's deployment, takes it (feedback "proceeding"), installs it and closes
the action with success after the new version runs; a failing install is closed with failure and its
details; an image download cut by a power cut resumes where it stopped.

The install steps need the update job to take its release through the DDI seam (`job.run(app, server)`
with a twomes.online.ddi.Ddi when updates = "hawkbit"): the tests marked `needs_job` run once the
update package (device/twomes/update/job.py) replaces device/twomes/update.py; until then they are
skipped, saying so.
gooseBit has no cancelAction (it never cancels an action): cancel is tested with the scripted DDI
server in host_tests/device/test_ddi.py."""

from __future__ import annotations

import os
import re
import time
from typing import Any

import pytest

from twtools import DEVICE_DIR, keys
from twtools.build import build_bundle, build_romfs, read_version
from twtools.ddipublish import signed_artifact
from twtools.goosebit import GooseBit, make_swu
from twtools.heapbench import QSTR_MAIN, qstr_pools
from twtools.powercut import Identity, Lab, device_name
from twtools.vboard.images import build_sim_image

BASE = read_version()
# the update boot of this base (device/twomes/update.py) fetches releases from the Twomes server only;
# the update package that replaces it (device/twomes/update/job.py) runs the job with the seam
_OLD_JOB = DEVICE_DIR / "twomes" / "update.py"
needs_job = pytest.mark.skipif(
    _OLD_JOB.exists(),
    reason="the update job installs through the DDI seam (job.run(app, app.server()) with a Ddi)",
)


def _identity(lab: Lab, gb: GooseBit, mac: str) -> tuple[Identity, str]:
    """A board on version 1, activated on the reference server, registered with gooseBit (strict
    device tokens: the operator creates the target with its token; its own feed for its rollout)."""
    name = device_name(mac)
    token = "tok-" + name.lower()
    gb.client.put_devices([name], auth_token=token, feed=name)
    lab.config["ddi_token"] = token
    ident = lab.make_identity(mac)
    lab.config.pop("ddi_token")
    dev = gb.client.device(name)
    assert dev["last_state"] == "Registered" and dev["sw_version"] == lab.old  # configData answered
    assert dev["hardware"]["model"] == "Generic-Test"
    return ident, token


def _rollout(lab: Lab, gb: GooseBit, name: str, kind: str, version: str, sha: str | None = None) -> int:
    path = lab.work / f"{version}.{kind}"
    if kind == "bundle":  # the .mpy overlay: runs from the heap
        build_bundle(path, version)
        fname = f"twomes-{version}.bundle"
    elif kind == "romfs":  # the shipping form: a ROMFS image, run in place from the romfs partition
        build_romfs(path, version)
        fname = f"twomes-{version}.romfs"
        kind = "bundle"
    else:
        build_sim_image(path, version, DEVICE_DIR, runtime=256 * 1024)
        fname = f"twomes-{version}.bin"
    manifest, signature = lab.sign(path, kind, version)
    if sha is not None:  # signed as it says (an operator's mistake): the download's check finds it out
        manifest = keys.manifest_text("Generic-Test", kind, version, 1, path.stat().st_size, sha)
        signature = keys.sign_text(keys.load_key(lab.key_file), manifest)
    data = make_swu(path.read_bytes(), fname, version, "Generic-Test", signed_artifact(manifest, signature))
    if sha is not None:  # a release whose file does not match what its description says
        good = re.search(rb'sha256 = "([0-9a-f]{64})"', data)
        assert good
        data = data.replace(good.group(1), sha.encode())
    sw = gb.client.upload(data, f"twomes-{version}.swu")
    gb.client.rollout(f"{name}-{version}", name, sw)
    return sw


def _board(lab: Lab, ident: Identity, token: str, tag: str, **kw: Any):  # noqa: ANN202 - a VirtualBoard
    board = lab.fresh(ident, tag, **kw)
    board.write_config(ddi_token=token)  # the template's config has the token it was made with
    return board


def _state(gb: GooseBit, name: str, want: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        dev = gb.client.device(name)
        if dev["last_state"] == want:
            return dev
        if time.monotonic() > deadline:
            raise AssertionError(f"gooseBit says {dev['last_state']} for {name}, not {want}")
        time.sleep(0.5)


def test_device_sees_the_rollout_and_takes_the_action(lab: Lab, goosebit: GooseBit) -> None:
    ident, token = _identity(lab, goosebit, "24:6F:28:DD:10:01")
    v2 = f"{BASE}-ddi.2"
    _rollout(lab, goosebit, ident.name, "bundle", v2)
    board = _board(lab, ident, token, "seen")
    try:
        board.start()
        board.wait_for(
            rf"target {re.escape(v2)} \(signature verified, counter \d+\), running {re.escape(lab.old)}: updating in the next boot",
            60,
        )
        _state(goosebit, ident.name, "Running")  # the "proceeding" feedback reached gooseBit
        assert f"{v2} saved: installing it in the next boot" in goosebit.client.device_log(ident.name)
        assert not [ln for ln in board.lines if token in ln]  # the token is never printed
    finally:
        board.stop()


def test_a_wrong_token_is_refused_and_said_so(lab: Lab, goosebit: GooseBit) -> None:
    ident, token = _identity(lab, goosebit, "24:6F:28:DD:10:02")
    board = _board(lab, ident, "not-the-token", "badtoken")
    try:
        board.start()
        board.wait_for(r"firmware: check failed: HTTP 401", 60)
        board.wait_for(rf"state: running - firmware {re.escape(lab.old)}", 30)
    finally:
        board.stop()


@needs_job
def test_update_succeeds_and_the_action_is_closed_after_the_new_version_runs(
    lab: Lab, goosebit: GooseBit
) -> None:
    ident, token = _identity(lab, goosebit, "24:6F:28:DD:10:03")
    v2 = f"{BASE}-ddi.3"
    _rollout(lab, goosebit, ident.name, "bundle", v2)
    board = _board(lab, ident, token, "ok")
    try:
        board.start()
        board.wait_for(rf"state: running - firmware {re.escape(v2)}", 120)
        dev = _state(goosebit, ident.name, "Finished")
        assert dev["sw_version"] == v2
    finally:
        board.stop()


# 4K above the smallest heap that passes (72K: docs/heap.md, "hawkBit (DDI) mode"); TW_DDI_HEAP to
# measure at another (`pytest -s` prints the names and free heap per state)
DDI_HEAP = os.getenv("TW_DDI_HEAP") or "76K"
NAMES_MAX = 610  # 10 below the qstr pool's edge (620 names): room for what a request interns


def test_a_shipping_board_takes_a_romfs_bundle_within_five_qstr_pools(lab: Lab, goosebit: GooseBit) -> None:
    """As it ships: the app in the romfs partition, the update a ROMFS bundle, at DDI_HEAP. Every name a
    module holds is interned for good (docs/heap.md, "The qstr pool"): the 621st allocates a sixth pool
    of 640 entries, 7.4 KB at once, which took DDI mode to 84K (the check ran out in the signature
    check). In every state - the check that finds the release, the update boot, the confirmation and
    the running polls - the app stays within five pools, and the update goes through at this heap."""
    if lab.code != "romfs":
        pytest.skip("a ROMFS bundle is for boards that run their app from the romfs partition")
    ident, token = _identity(lab, goosebit, "24:6F:28:DD:10:07")
    v2 = f"{BASE}-ddi.7"
    _rollout(lab, goosebit, ident.name, "romfs", v2)
    board = _board(lab, ident, token, "romfs", heap=DDI_HEAP)
    (board.fs / "main.py").write_text(QSTR_MAIN)
    try:
        board.start()
        board.wait_for(r"ota: installing .* into slot rom-\w \(ROMFS", 60)
        board.wait_for(rf"state: running - firmware {re.escape(v2)}", 120)
        for _ in range(2):  # two of the running state's polls (every 2 s in the lab)
            board.wait_for(r"state: checking", 30, start=board.last_index + 1)
        board.wait_for(r"state: running", 30, start=board.last_index + 1)
        board.wait_for(r"^qstr pool", 10, start=board.last_index)
    except TimeoutError as e:
        raise AssertionError(
            f"{e}\nmost names seen (names, pools, state): {max(qstr_pools(board.lines), default=None)}"
        ) from e
    finally:
        board.stop()
    assert not any("MemoryError" in line for line in board.lines), board.lines[-30:]
    assert _state(goosebit, ident.name, "Finished")["sw_version"] == v2
    seen = qstr_pools(board.lines)
    assert len(seen) >= 10, seen  # check boot, update boot, v2's confirmation, check and running
    names, pools, at, _ = max(seen)
    print(f"\nDDI mode at {DDI_HEAP}: at most {names} names in {pools} qstr pools ({at}); per state change:")
    print("\n".join(f"  {s:<12} {n} names, {p} pools, {f} bytes free" for n, p, s, f in seen))
    assert all(p == 5 for _, p, _, _ in seen) and names <= NAMES_MAX, (
        f"{names} names, {pools} pools ({at}): {seen}"
    )


@needs_job
def test_a_failing_install_is_reported_as_failure(lab: Lab, goosebit: GooseBit) -> None:
    ident, token = _identity(lab, goosebit, "24:6F:28:DD:10:04")
    v2 = f"{BASE}-ddi.4"
    _rollout(lab, goosebit, ident.name, "bundle", v2, sha="0" * 64)
    board = _board(lab, ident, token, "fail")
    try:
        board.start()
        board.wait_for(rf"update to {re.escape(v2)} failed", 120)
        _state(goosebit, ident.name, "Error")
        assert "sha256" in goosebit.client.device_log(ident.name)
        board.wait_for(rf"state: running - firmware {re.escape(lab.old)}", 60)
    finally:
        board.stop()


@needs_job
def test_an_interrupted_image_download_resumes(lab: Lab, goosebit: GooseBit) -> None:
    ident, token = _identity(lab, goosebit, "24:6F:28:DD:10:05")
    v2 = f"{BASE}-ddi.5"
    _rollout(lab, goosebit, ident.name, "image", v2)
    board = _board(lab, ident, token, "resume")
    try:
        # The plug is pulled at a durable write in the middle of the download, not after a wait: the
        # second boot is the update boot; each 4 KB block is an erase and four 1 KB writes, a resume
        # point is committed every 64 KB (80 writes), the image is ~400 KB: write 250 is past three
        # resume points and far from the end (a wait-then-cut lost the race once the flash got fast).
        board.env = {"VBOARD_CUT": "2:250"}
        board.start()
        board.wait_for(rf"state: updating - {re.escape(v2)}", 120)
        board.wait_for(r"\[vboard: power cut at durable write 250 of boot 2", 120)
        deadline = time.monotonic() + 15
        while board.running:
            assert time.monotonic() < deadline, "the board did not die at the cut"
            time.sleep(0.02)
        board.power_cut()  # (what is left of the board: its supervisor ends)
        assert board.nvs().get("twomes", {}).get("dl_state"), "no resume point saved before the cut"
        board.env = {}
        board.start()
        board.wait_for(rf"resuming the download of {re.escape(v2)} at [1-9]\d* of", 120)
        board.wait_for(rf"state: running - firmware {re.escape(v2)}", 120)
        assert _state(goosebit, ident.name, "Finished")["sw_version"] == v2
    finally:
        board.stop()


def test_twomes_release_publishes_to_goosebit_and_rolls_out(
    lab: Lab, goosebit: GooseBit, tmp_path, capsys, monkeypatch
) -> None:
    from twtools.cli import main
    from twtools.goosebit import ADMIN

    ident, token = _identity(lab, goosebit, "24:6F:28:DD:10:06")
    v2 = f"{BASE}-ddi.6"
    monkeypatch.setenv("TWOMES_DDI_USER", ADMIN[0])
    monkeypatch.setenv("TWOMES_DDI_PASSWORD", ADMIN[1])
    argv = ["release", "--version", v2, "--out", str(tmp_path / "b.bundle"), "--ddi", goosebit.url]
    argv += ["--key", str(lab.key_file), "--counter", "1"]
    assert main([*argv, "--rollout", ident.name]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"published software \d+ \(twomes-{re.escape(v2)}.bundle in an SWUpdate archive\)", out)
    assert f"to feed '{ident.name}'" in out
    # the device sees it: the rollout reached its feed
    board = _board(lab, ident, token, "released")
    try:
        board.start()
        board.wait_for(
            rf"target {re.escape(v2)} \(signature verified, counter \d+\), running {re.escape(lab.old)}: updating in the next boot",
            60,
        )
    finally:
        board.stop()
    # the same version again: gooseBit refuses it, in plain words
    assert main(argv) == 2
    assert "409" in capsys.readouterr().err
    # wrong credentials
    monkeypatch.setenv("TWOMES_DDI_PASSWORD", "wrong")
    assert main([argv[0], argv[1], f"{v2}.x", *argv[3:]]) == 2
    assert "login refused" in capsys.readouterr().err


def test_a_release_published_while_the_board_runs_is_taken_within_the_heap(
    lab: Lab, goosebit: GooseBit
) -> None:
    """The check that finds a release in the running state (every poll) has the running state's modules
    and data in the heap besides the check's own: the update must go through there too, at DDI_HEAP,
    with no MemoryError (docs/heap.md, "The online phase at 68K")."""
    if lab.code != "romfs":
        pytest.skip("a ROMFS bundle is for boards that run their app from the romfs partition")
    ident, token = _identity(lab, goosebit, "24:6F:28:DD:10:08")
    v2 = f"{BASE}-ddi.8"
    board = _board(lab, ident, token, "running", heap=DDI_HEAP)
    (board.fs / "main.py").write_text(QSTR_MAIN)
    try:
        board.start()
        board.wait_for(r"state: running - firmware", 60)
        board.wait_for(r"state: checking", 30, start=board.last_index + 1)  # a poll of the running state
        _rollout(lab, goosebit, ident.name, "romfs", v2)
        board.wait_for(rf"state: running - firmware {re.escape(v2)}", 120)
    finally:
        board.stop()
    assert not any("MemoryError" in line for line in board.lines), "\n".join(board.lines)
    lines = board.lines
    found = next(i for i, ln in enumerate(lines) if f"target {v2}" in ln)
    boot = max(i for i in range(found) if "boot: twomes firmware" in lines[i])
    assert any("state: running" in ln for ln in lines[boot:found]), "not found by a running state's poll"
    seen = qstr_pools(lines)
    print(f"\nDDI mode at {DDI_HEAP}, a release found by a running state's poll; per state change:")
    print("\n".join(f"  {s:<12} {n} names, {p} pools, {f} bytes free" for n, p, s, f in seen))
