# The update boot. The firmware check (check.py) saves the release it chose as the job (state.py) and
# restarts; that boot joins Wi-Fi and, before the online phase, runs the job here with only the server
# interface and one installer loaded, so the online phase never shares the heap with a download. A
# power cut anywhere leaves either the job (the next boot installs again; images resume) or the new
# version (which drops the job).
from micropython import const

from twomes import VERSION
from twomes.errors import Error
from twomes.log import log
from twomes.update import state

_BAD = const(-1)  # errors.Error status: not what the server promised / cannot be installed here


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

    installer = None
    try:
        if rel.get("kind") == "bundle":
            from twomes.update import bundle as installer
        else:
            try:
                from twomes.update import image as installer
            except ImportError:
                raise Error(_BAD, "this build cannot install ESP32 app images")
        await installer.install(app, server, rel)
        ok = True
    except (Error, OSError, MemoryError, ValueError, KeyError, TypeError) as e:  # the device runs on
        ok = e
    finally:
        installer = None
        app.unload("update.bundle", "update.romfs", "update.image")
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


async def _report(server, rel, ok, details):
    """Update feedback to the server (where its protocol has it); a lost report changes nothing here."""
    try:
        await server.report(rel, ok, details)
    except Error as e:
        log("update", "could not report the update's outcome: %s" % e)
