# The firmware check: ask the server for its target, decide about it (validate it like any other input,
# verify its signature, compare it with what runs, the failures so far, safe mode) and, when an update
# is due, save it as the job of the next boot (job.py installs it from a clean heap). Loaded for a check
# (at each connection and every fw_check_s), before its request, and unloaded afterwards.
from micropython import const

from twomes import VERSION, unload
from twomes.errors import Error
from twomes.log import log, printable

_NO_FW_API = const(-2)  # errors.Error status: the server has no firmware API (a plain Twomes server)
_UNSIGNED = const("unsigned")  # (folded: a string of up to 10 characters is interned otherwise)


def valid(rel):
    """A release object as docs/api.md describes it (the fields the installers rely on)?"""
    try:
        return (
            isinstance(rel["version"], str)
            and 0 < len(rel["version"]) <= 64
            and rel["kind"] in ("bundle", "image")
            and isinstance(rel["size"], int)
            and rel["size"] > 0
            and isinstance(rel["sha256"], str)
            and len(rel["sha256"]) == 64
            and isinstance(rel["url"], str)
            and rel["url"].startswith("/")
            and _plain(rel["version"])
            and _plain(rel["url"])
        )
    except (KeyError, TypeError):
        return False


def _plain(text):
    """Printable ASCII without spaces: a version or a URL never carries anything that could split a
    request line or forge a console line."""
    for c in text.encode():  # (bytes: iterating a str interns every character it hands out)
        if not 33 <= c <= 126:  # "!".."~"
            return False
    return True


def verify_signature(app, rel, counter):
    """The release's signed manifest (twomes/update/signing.py), checked before a job is saved: a
    trusted key's signature, this device type, the release's version/kind/size/sha256 equal to the
    manifest's, and a security counter not below `counter`, the highest one kept (anti-rollback).
    Returns None when the release may be installed, else the reason it is refused. Unsigned releases
    only with allow_unsigned (lab; said on the console)."""
    from twomes.update import signing

    cfg = app.cfg
    try:
        m = signing.check_release(rel, cfg.release_keys, cfg.device_type, cfg.allow_unsigned)
        if m is None:
            log("firmware", "unsigned release %s accepted: allow_unsigned is set (lab only)" % rel["version"])
            return None
        signing.rollback_ok(m, counter)
        rel["counter"] = m["counter"]
        return None
    except Error as e:
        return str(e)
    finally:
        signing = None
        unload("update.signing", "update.ed25519")


def decide(app, rel, server):
    """`rel`: the server's target (None: none set). True when an update is due: it is saved as the next
    boot's job (the caller restarts). A release refused for its signature: the reason (a str).
    `server`: the seam that named it, whose TLS context the signature check lets go of."""
    if rel is None:
        log("firmware", "no target version set on the server; running %s" % VERSION)
        return False
    if not valid(rel):
        log("firmware", "check failed: HTTP 200 malformed release")
        return False
    version = rel["version"]
    if version == VERSION:
        log("firmware", "up to date (%s)" % VERSION)
        return False
    # the update state's owner: loaded only for a target that differs from what runs (3 KB of heap, not
    # held by a check that finds nothing to do), and not through the signature check either (the
    # check's peak: docs/heap.md); the online phase unloads it with this module
    from twomes.update import state

    fails = state.fails(app.st, version)
    counter = state.counter(app.st)
    if fails >= state.FAILS_MAX:
        log(
            "firmware",
            "target %s failed %d times: not trying it again until the target changes" % (version, fails),
        )
        return False
    if app.safe:
        log("firmware", "target %s, running %s: no update attempts in safe mode" % (version, VERSION))
        return False
    state = None
    # nor the seam's TLS context (3 KB; twomes/online/server.py tls): the phase makes it again after a
    # check that saves nothing, the next request when there is one before
    server.context[0] = None
    unload("update.state")
    why = verify_signature(app, rel, counter)
    if why is not None:
        log("firmware", "target %s refused: %s" % (printable(version), why))
        return why
    signed = "signature verified, counter %d" % rel["counter"] if "counter" in rel else _UNSIGNED
    log("firmware", "target %s (%s), running %s: updating in the next boot" % (version, signed, VERSION))
    from twomes.update import state  # (again: the job's writer)

    state.save_job(rel)
    return True


async def run(app, server):
    """Ask the server (`server.target()`) and decide. Returns "update" (a job was saved: restart),
    "none" (nothing to do now, or the check failed: the next one asks again) or "no_api" (the server
    has no firmware API: do not ask again)."""
    app.set_state("checking")
    try:
        rel = await server.target()
    except Error as e:
        if e.status == _NO_FW_API:
            log("firmware", "server has no firmware API: updates skipped")
            return "no_api"
        log("firmware", "check failed: %s" % e)
        return "none"
    done = decide(app, rel, server)
    if isinstance(done, str):  # refused: the server is told why (where its protocol has a way)
        try:
            await server.report(rel, False, done)
        except Error as e:
            log("firmware", "could not report the refusal: %s" % e)
        return "none"
    return "update" if done else "none"
