# The update boot. The firmware check (check.py) saves the release it chose as the job (state.py) and
# restarts; that boot joins Wi-Fi and, before the online phase, runs the job here with only the server
# interface and one installer loaded (for a bundle, the one of its form), so the online phase never
# shares the heap with a download. A power cut anywhere leaves either the job (the next boot installs
# again; images resume) or the new version (which drops the job).
from micropython import const

from twomes import VERSION, unload
from twomes.errors import Error
from twomes.log import log
from twomes.update import state

_BAD = const(-1)  # errors.Error status: not what the server promised / cannot be installed here
_NET = const(0)  # errors.Error status: the download stopped early
_ROMFS = const(b"\xd2\xcd\x31")  # a bundle in ROMFS form starts with the ROMFS magic (romfs.MAGIC)
_HEAD = const(3)  # bytes that tell a bundle's form


async def run(app, server):
    """Install the saved release through `server` (open_release, report). Returns "installed" (the
    next boot runs it: restart), "failed" (counted unless the session was refused; the job is gone and
    the online phase goes on, the next check decides about another try) or "none" (no job, or one not
    to run: installed already, safe mode, not activated)."""
    try:
        rel = state.job()
    except ValueError:
        log("update", "unreadable update job: dropped")
        return "none"
    if rel is None:
        return "none"
    version = rel["version"]
    if version == VERSION or app.safe or not app.activated():
        state.drop_job()  # installed already (a cut came before the drop), safe mode, not activated
        return "none"
    try:
        if not await server.wanted(rel):  # withdrawn meanwhile (hawkBit: a cancelled action)
            log("update", "%s was withdrawn by the server: not installed" % version)
            state.drop_job()
            return "none"
    except Error as e:  # no answer: install what was verified and saved; the server hears later
        log("update", "could not ask whether %s is still wanted: %s" % (version, e))
    app.set_state("updating", version)

    try:
        await install(app, server, rel)
        ok = True
    except (Error, OSError, MemoryError, ValueError, KeyError, TypeError) as e:  # the device runs on
        ok = e
    finally:
        unload("update.bundle", "update.romfs", "update.image")
    state.drop_job()
    if ok is True:
        if "counter" in rel:  # signed: kept (anti-rollback) once this version confirms itself
            state.installed_counter(app.st, version, rel["counter"])
        await _report(server, rel, True, "installed; the new version runs after the reboot")
        return "installed"
    if isinstance(ok, Error) and ok.status == 401:  # session revoked: not the release's fault
        log("update", "session token refused (401): activating again first")
        return "failed"
    log("firmware", "update to %s failed: %s" % (version, ok))
    state.count_failure(app.st, version)
    await _report(server, rel, False, str(ok))
    return "failed"


async def install(app, server, rel):
    """Download and install `rel` with the one installer it needs: an image (image.py, which opens the
    download itself: it resumes), or a bundle in its form, told by its first bytes - a ROMFS image
    (romfs.py, the shipping mode's) or the `.mpy` overlay (bundle.py); the other form's installer is
    never loaded (2 KB of the update boot's heap). Raises Error."""
    if rel.get("kind") != "bundle":
        try:
            from twomes.update import image
        except ImportError:
            raise Error(_BAD, "this build cannot install ESP32 app images")
        await image.install(app, server, rel)
        return
    buf = app.buffers()[0]
    resp, _ = await server.open_release(rel, 0)
    try:
        size = rel["size"]
        if resp.length is not None and resp.length != size:
            raise Error(_BAD, "server sends %d bytes, release says %d" % (resp.length, size))
        mv = memoryview(buf)
        n = 0
        while n < _HEAD and n < size:  # the first bytes: the ROMFS magic or the bundle's
            k = resp.read_now(mv[n:_HEAD])  # (what has come in already: no await)
            if k is None:
                k = await resp.readinto(mv[n:_HEAD])
            if not k:
                raise Error(_NET, "download ended at %d of %d bytes" % (n, size))
            n += k
        if bytes(buf[:n]) == _ROMFS:
            from twomes.update import romfs as form
        else:
            from twomes.update import bundle as form
        await form.install_release(app, resp, rel, _running_slot(app), n)
    finally:
        form = None
        await resp.close()


def _running_slot(app):
    """The slot of the slot pointer that runs now (None: the deployed app, or no pointer, or a damaged
    one): the rollback target of the install. A bundle that belongs to another image does not run
    (otaboot); an `.mpy` slot runs when it is on sys.path. (Here, not in state.py: its names would be
    interned in every firmware check that loads the update state, at the qstr pool's edge in hawkBit
    mode: docs/heap.md.)"""
    import sys

    pointer = state.slot() or {}
    prev = pointer.get("slot")
    if prev and state.rom_half(prev) is None:
        return prev if "ota/" + prev in sys.path else None
    try:
        running = app.board.partition("running").info()[4]
    except (AttributeError, OSError):  # no partition table (host fakes): no image in play
        running = None
    return state.slot_in_use(pointer, running)


async def _report(server, rel, ok, details):
    """Update feedback to the server (where its protocol has it); a lost report changes nothing here."""
    try:
        await server.report(rel, ok, details)
    except Error as e:
        log("update", "could not report the update's outcome: %s" % e)
