# Updates run in a boot of their own. The firmware check (twomes/fw.py) saves the release it chose in
# ota/job and restarts; that boot joins Wi-Fi and loads only the HTTP client and one installer, so the
# API client and the online phase never share the heap with a download. A power cut anywhere leaves
# either the job (the next boot installs again; images resume) or the new version (which drops the job).
import json
import os

from micropython import const

from twomes import JOB, VERSION, store
from twomes.errors import Error
from twomes.log import log

# errors.Error statuses: no (readable) answer; not what the server promised
_NET = const(0)
_BAD = const(-1)


def _drop():
    try:
        os.remove(JOB)
    except OSError:
        pass


class Job:
    """What an installer (twomes/ota.py, twomes/ota_image.py) gets: board, st, cfg, _buf, backoff(),
    sleep_s(), set_state() of the app, and open_image()."""

    def __init__(self, app):
        self._buf = app.buffers()[0]
        self.app = app
        self.board, self.cfg, self.st = app.board, app.cfg, app.st
        self.set_state, self.sleep_s, self.backoff = app.set_state, app.sleep_s, app.backoff
        self.session = app.st.get(store.SESSION)  # (owner: twomes/online/server.py)

    async def open_image(self, rel, offset=0):
        """GET the release's file from `offset`; returns (response, offset actually served)."""
        from twomes.online.server import Server

        return await Server(self.app).open_release(rel, offset)

    async def run(self):
        """Install the saved release. Success: restart into it. Failure: counted, the job is gone and
        the online phase goes on (the next check decides about another try)."""
        try:
            with open(JOB) as f:
                job = json.loads(f.read())
            rel, fails, version = job["rel"], job["fails"], job["rel"]["version"]
        except (OSError, ValueError, KeyError, TypeError):
            log("update", "unreadable update job: dropped")
            return _drop()
        if version == VERSION or self.app.safe or self.session is None:
            return _drop()  # installed already (a cut came before the drop), safe mode, not activated
        self.set_state("updating", version)
        installer = None
        try:
            if rel["kind"] == "bundle":
                from twomes import ota as installer
            else:
                try:
                    from twomes import ota_image as installer
                except ImportError:
                    raise Error(_BAD, "this build cannot install ESP32 app images")
            await installer.install(self, rel)
            ok = True
        except (Error, OSError, MemoryError, ValueError, KeyError, TypeError) as e:  # the device runs on
            ok = e
        finally:
            installer = None
            self.app.unload("ota", "ota_image")
        _drop()
        if ok is True:
            self.set_state("rebooting", version)
            raise self.app.Restart()
        if isinstance(ok, Error) and ok.status == 401:  # session revoked: not the release's fault
            log("update", "session token refused (401): activating again first")
            return
        log("firmware", "update to %s failed: %s" % (version, ok))
        self.st.put(store.FW_FAILED, version)
        self.st.put_int(store.FW_FAILS, fails + 1)
        self.st.commit()


async def run(app, _arg):
    await Job(app).run()
    return "none"
