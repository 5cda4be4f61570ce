# The update calls of the server seam (twomes/online/server.py) over Eclipse hawkBit's Direct Device
# Integration API, for a fleet whose updates come from a hawkBit-compatible server (config
# updates = "hawkbit"; docs/hawkbit.md). Activation and measurements stay with the Twomes server.
#
#   GET  {ddi_url}/{tenant}/controller/v1/{name}          the controller resource: config.polling.sleep
#                                                          and _links (deploymentBase, cancelAction,
#                                                          configData)
#   GET  .../deploymentBase/{action}                      the action: chunks -> artifacts (size, hashes,
#                                                          _links.download / download-http)
#   POST .../deploymentBase/{action}/feedback             proceeding; closed + success/failure, details
#   GET  .../cancelAction/{id}, POST .../feedback         a cancelled action is acknowledged (closed)
#   PUT  .../configData                                   what the server asks to know (board, version)
#
# Artifacts: a plain release file (hawkBit: hashes.sha256 names its digest), or an SWUpdate archive
# (.swu, cpio "newc": what gooseBit serves) whose sw-description names the release file's sha256: the
# device reads the archive's head once, then downloads only the release file inside it (Range).
# A signed release manifest travels as an artifact (or archive member) named *.manifest.json: JSON
# {"manifest": "<the signed text>", "signature": "<128 hex>"} (`twomes release --key ... --ddi`).
#
# The token (ddi_token) goes only into the Authorization header of requests to the DDI server's own
# host, never into a log line. Calls raise errors.Error: .status the HTTP status of an answer we did not
# want, 0 no (readable) answer, -1 a deployment that is not what it must be.
import json

from micropython import const

from twomes import VERSION
from twomes.errors import Error
from twomes.log import log
from twomes.online import http
from twomes.online.server import request

_NET = const(0)
_BAD = const(-1)
_JSON_MAX = const(2048)
_SWU_HEAD = const(2048)  # an .swu's sw-description (+ manifest) and the release file's header fit here
# (private string constants: folded into the code, their names and texts are not interned, docs/heap.md)
_MANIFEST = const(".manifest.json")
_TRAILER = const("TRAILER!!!")  # the name of a cpio archive's last (empty) member


def parse_sleep(text):
    """config.polling.sleep 'HH:MM:SS' -> seconds; None when it is not such a time."""
    if not isinstance(text, str):
        return None
    parts = text.split(":")
    if len(parts) != 3:
        return None
    for p in parts:
        if not 1 <= len(p) <= 2 or not p.isdigit():
            return None
    h, m, s = int(parts[0]), int(parts[1]), int(parts[2])
    if m > 59 or s > 59:
        return None
    return h * 3600 + m * 60 + s


def _signed(rel, text):
    """rel["manifest"], rel["signature"] from a *.manifest.json artifact (twomes.update checks them)."""
    try:
        d = json.loads(text)
        rel["manifest"], rel["signature"] = d["manifest"], d["signature"]
    except (ValueError, KeyError, TypeError):
        raise _bad("signed manifest artifact is not {manifest, signature}")


def _bad(what):
    return Error(_BAD, "deployment refused: " + what)


def _str(data, key, what, limit=200):
    v = data.get(key) if isinstance(data, dict) else None
    if not isinstance(v, str) or not 0 < len(v) <= limit:
        raise _bad("%s has no %s" % (what, key))
    return v


def _href(links, names, what):
    links = links if isinstance(links, dict) else {}
    for n in names:
        v = links.get(n)
        if isinstance(v, dict) and isinstance(v.get("href"), str) and 8 < len(v["href"]) <= 300:
            href = v["href"]
            if href.startswith("https://") or href.startswith("http://"):
                return href
            raise _bad("%s link is not http(s)" % what)
    raise _bad("%s has no %s link" % (what, names[0]))


def _hex(v, n):
    if not isinstance(v, str) or len(v) != n:
        return None
    for c in v.encode():  # (bytes: iterating a str interns every character it hands out)
        if not (48 <= c <= 57 or 97 <= c <= 102):  # 0-9 a-f
            return None
    return v


def _kind(name):
    return "image" if name.endswith(".bin") else "bundle"


# ---- SWUpdate archives (cpio newc) ---------------------------------------------------------------


def _member(buf, n, pos):
    """The cpio newc header at pos -> (name, data start, data size, next header)."""
    if pos + 110 > n:
        raise _bad("SWU archive head larger than %d bytes" % _SWU_HEAD)
    if bytes(buf[pos : pos + 6]) != b"070701":
        raise _bad("artifact is not an SWU archive (cpio newc)")
    try:
        size = int(bytes(buf[pos + 54 : pos + 62]), 16)
        nlen = int(bytes(buf[pos + 94 : pos + 102]), 16)
        name = str(bytes(buf[pos + 110 : pos + 109 + nlen]), "utf-8")
    except (ValueError, UnicodeError):
        raise _bad("SWU archive header unreadable")
    start = (pos + 110 + nlen + 3) & ~3
    return name, start, size, (start + size + 3) & ~3


def _setting(text, key):
    """The quoted value of `key = "..."` (or `key: "..."`) in a libconfig text (sw-description, read as
    bytes: indexing a str interns every character it hands out), or None. UnicodeError: not text."""
    i = 0
    while True:
        i = text.find(key, i)
        if i < 0:
            return None
        j = i + len(key)
        before = text[i - 1 : i]  # b"" at the start
        i = j
        if before.isalpha() or before in (b"-", b"_"):  # the end of a longer name
            continue
        rest = text[j : j + 140].lstrip()
        if rest[:1] not in (b"=", b":"):
            continue
        rest = rest[1:].lstrip()
        if rest[:1] != b'"':
            return None
        end = rest.find(b'"', 1)
        return str(rest[1:end], "utf-8") if end > 0 else None


def swu_head(buf, n):
    """The head of an .swu (first n bytes in buf) -> (release file name, its offset, size, sha256,
    sw-description version, manifest text or None). Error(-1) when it is not what it must be."""
    name, start, size, nxt = _member(buf, n, 0)
    if name != "sw-description" or start + size > n:
        raise _bad("SWU archive has no sw-description first (or a larger one than %d bytes)" % _SWU_HEAD)
    desc = bytes(buf[start : start + size])
    manifest = None
    while True:
        name, start, size, after = _member(buf, n, nxt)
        if name == _TRAILER:
            raise _bad("SWU archive holds no release file")
        if not name.endswith(_MANIFEST):
            break
        if start + size > n:
            raise _bad("manifest larger than the SWU head")
        manifest = str(bytes(buf[start : start + size]), "utf-8")
        nxt = after
    try:
        sha = _hex(_setting(desc, b"sha256"), 64)
        version = _setting(desc, b"version")
    except UnicodeError:
        raise _bad("sw-description is not text")
    if sha is None or not version:
        raise _bad("sw-description names no version or sha256")
    if size <= 0:
        raise _bad("release file in the SWU archive is empty")
    return name, start, size, sha, version, manifest


def _plain(resp):
    if resp.headers.get("transfer-encoding"):
        raise Error(_NET, "chunked downloads are not supported (the server must send Content-Length)")


class _Part:
    """The release file inside a larger answer: `skip` bytes dropped, `size` bytes passed on; looks
    like an http.Response to the installers (length, headers, read_now, readinto, close)."""

    def __init__(self, resp, skip, size, offset, total):
        self.resp = resp
        self.status = resp.status
        self.skip = skip
        self.length = self.left = size
        self.headers = {}
        if offset:
            self.headers["content-range"] = "bytes %d-%d/%d" % (offset, total - 1, total)

    async def readinto(self, mv):
        while self.skip:
            n = await self.resp.readinto(mv[: min(len(mv), self.skip)])
            if not n:
                raise Error(_NET, "connection closed before the release file")
            self.skip -= n
        if not self.left:
            return 0
        n = await self.resp.readinto(mv[: self.left] if self.left < len(mv) else mv)
        self.left -= n
        return n

    def read_now(self, mv):
        """Bytes of the file already received, without waiting: their count, 0 at the end, None when
        the caller must await readinto() (nothing here yet, or bytes before the file still to skip)."""
        if self.skip:
            return None
        if not self.left:
            return 0
        n = self.resp.read_now(mv[: self.left] if self.left < len(mv) else mv)
        if n:
            self.left -= n
        return n

    async def close(self):
        await self.resp.close()


class Ddi:
    def __init__(self, app):
        self.app = app
        self.board, self.cfg, self.st = app.board, app.cfg, app.st
        self.head = app.buffers(False)[1]  # (no streaming buffer: twomes.update's installers take it)
        cfg = app.cfg
        if not cfg.ddi_url:
            raise Error(_NET, "updates = hawkbit but no ddi_url in the config")
        base = cfg.ddi_url.rstrip("/")
        self._root = "%s/%s/controller/v1/%s" % (base, cfg.ddi_tenant, app.ident.name)
        self._origin = base[: base.find("/", 8)] if base.find("/", 8) > 0 else base
        self.fw_api = True  # the seam's flag (Server: False without a firmware API); a DDI server has one
        self.sleep_s = None  # the polling interval the server asks for (config.polling.sleep), seconds
        self.cancelled = None  # the id of the last action the server cancelled (acknowledged)
        self.rel = None  # the release of the last target() that named one
        self.context = [None]  # the TLS context (server.tls(); the online phase shares the Server's)

    # ---- requests --------------------------------------------------------------------------------
    def _auth(self, url):
        """The token header, for the DDI server's own URLs only (a CDN link gets none)."""
        cfg = self.cfg
        if not cfg.ddi_token or not (url == self._origin or url.startswith(self._origin + "/")):
            return ""
        return "Authorization: %s %s\r\n" % (cfg.ddi_token_kind, cfg.ddi_token)

    def _abs(self, url):
        return self._origin + url if url[:1] == "/" else url

    def open(self, method, url, extra="", body=None):
        """One request -> an awaitable: the Response (the caller awaits it at once and closes it)."""
        return request(self, method, url, self._auth(url) + extra, body)

    async def call(self, method, url, payload=None):
        """One DDI request -> its JSON answer (None for an empty body)."""
        body = None
        extra = "Accept: application/hal+json, application/json\r\n"
        if payload is not None:
            body = json.dumps(payload).encode()
            extra += "Content-Type: application/json\r\n"
        resp = await self.open(method, url, extra, body)
        try:
            if resp.status // 100 != 2:
                await http.fail(resp)
            if resp.length == 0:
                return None
            return await resp.json(_JSON_MAX)
        finally:
            await resp.close()

    # ---- polling -----------------------------------------------------------------------------------
    async def poll(self):
        """GET the controller resource -> its _links (a dict); sets sleep_s from config.polling.sleep.
        The server's configData request is answered here (board name, version)."""
        data = await self.call("GET", self._root)
        if not isinstance(data, dict):
            raise _bad("controller answer is not an object")
        cfg = data.get("config")
        sleep = cfg.get("polling") if isinstance(cfg, dict) else None
        sleep = parse_sleep(sleep.get("sleep") if isinstance(sleep, dict) else None)
        if sleep is None:
            log("firmware", "DDI server names no valid polling interval (config.polling.sleep)")
        self.sleep_s = sleep
        links = data.get("_links")
        links = links if isinstance(links, dict) else {}
        if "configData" in links:
            await self.call(
                "PUT",
                _href(links, ("configData",), "controller"),
                {
                    "mode": "merge",
                    "data": {
                        "hw_boardname": self.cfg.device_type,
                        "hw_revision": "default",
                        "sw_version": VERSION,
                    },
                },
            )
        return links

    async def target(self):
        """The release of the server's open action (a dict: version, kind, size, sha256, url, id, action;
        skip: where the file starts in the artifact; manifest: the signed manifest's text if one came
        with it), or None. A cancelled action is acknowledged and gives None."""
        links = await self.poll()
        if "configData" in links:  # answered: the server may offer more to a target it knows now
            links = await self.poll()
        if "cancelAction" in links:
            await self.cancel(_href(links, ("cancelAction",), "controller"))
            return None
        if "deploymentBase" not in links:
            return None
        rel = await self.deployment(_href(links, ("deploymentBase",), "controller"))
        if rel is not None and rel["version"] == VERSION:  # it runs already (a lost confirmation)
            await self.feedback(
                "deploymentBase", rel["action"], "closed", "success", ["running %s" % VERSION]
            )
            return None
        self.rel = rel
        return rel

    async def deployment(self, url):
        data = await self.call("GET", url)
        action = data.get("id") if isinstance(data, dict) else None
        if isinstance(action, int):
            action = str(action)
        if not isinstance(action, str) or not 0 < len(action) <= 20 or not action.isdigit():
            raise _bad("no action id")
        dep = data.get("deployment")  # pyright: ignore[reportOptionalMemberAccess] - a dict: it had an id
        if not isinstance(dep, dict):
            raise _bad("no deployment")
        if dep.get("update") == "skip" and dep.get("download") == "skip":
            log("firmware", "DDI action %s: the server asks to wait (skip)" % action)
            return None
        chunks = dep.get("chunks")
        if not isinstance(chunks, list) or not chunks or not isinstance(chunks[0], dict):
            raise _bad("deployment has no chunks")
        chunk = chunks[0]
        version = _str(chunk, "version", "chunk", 64)
        arts = chunk.get("artifacts")
        if not isinstance(arts, list) or not arts:
            raise _bad("chunk has no artifacts")
        art = man = None
        for a in arts:
            if not isinstance(a, dict):
                raise _bad("artifact is not an object")
            name = _str(a, "filename", "artifact", 128)
            if name.endswith(_MANIFEST):
                man = a
            elif art is None:
                art = a
        if art is None:
            raise _bad("no release file among the artifacts")
        name = art["filename"]
        size = art.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise _bad("artifact has no size")
        url = _href(art.get("_links"), ("download", "download-http"), "artifact")
        hashes = art.get("hashes")
        sha = _hex(hashes.get("sha256"), 64) if isinstance(hashes, dict) else None
        rel = {"version": version, "url": url, "id": int(action), "action": action, "skip": 0}
        if url.startswith(self._origin + "/"):
            rel["url"] = url[len(self._origin) :]  # on the DDI server: a path (resolved against ddi_url)
        if name.endswith(".swu"):
            fname, skip, fsize, sha, v2, manifest = await self._swu(self._abs(url))
            if v2 != version:
                raise _bad("sw-description says version %s, the chunk %s" % (v2, version))
            if skip + fsize > size:
                raise _bad("release file runs past the artifact's end")
            rel["skip"], rel["size"], rel["sha256"], rel["kind"] = skip, fsize, sha, _kind(fname)
            if manifest is not None:
                _signed(rel, manifest)
        else:
            if sha is None:
                raise _bad("artifact has no sha256")
            rel["size"], rel["sha256"], rel["kind"] = size, sha, _kind(name)
        if man is not None:
            _signed(
                rel, await self._text(_href(man.get("_links"), ("download", "download-http"), "manifest"))
            )
        return rel

    async def _swu(self, url):
        """Read the head of an .swu artifact (a Range request; a server without ranges sends it whole and
        only the head is read)."""
        buf = bytearray(_SWU_HEAD)
        resp = await self.open("GET", url, "Range: bytes=0-%d\r\n" % (_SWU_HEAD - 1))
        try:
            if resp.status not in (200, 206):
                await http.fail(resp)
            _plain(resp)
            n = 0
            mv = memoryview(buf)
            while n < _SWU_HEAD:
                k = await resp.readinto(mv[n:])
                if not k:
                    break
                n += k
        finally:
            await resp.close()
        return swu_head(buf, n)

    async def _text(self, url):
        resp = await self.open("GET", url)
        try:
            if resp.status != 200:
                await http.fail(resp)
            if resp.length is None or not 0 < resp.length <= _JSON_MAX:
                raise _bad("manifest missing or larger than %d bytes" % _JSON_MAX)
            buf = bytearray(resp.length)
            mv = memoryview(buf)
            n = 0
            while n < len(buf):
                k = await resp.readinto(mv[n:])
                if not k:
                    raise Error(_NET, "manifest cut short")
                n += k
            return str(buf, "utf-8")
        except UnicodeError:
            raise _bad("manifest is not text")
        finally:
            await resp.close()

    # ---- feedback ------------------------------------------------------------------------------------
    async def feedback(self, kind, action, execution, finished, details):
        """POST .../{kind}/{action}/feedback (kind: deploymentBase or cancelAction)."""
        body = {
            "id": action,
            "status": {
                "execution": execution,
                "result": {"finished": finished},
                "details": [http.printable(d, 120) for d in details],
            },
        }
        await self.call("POST", "%s/%s/%s/feedback" % (self._root, kind, action), body)

    async def cancel(self, url):
        """Acknowledge the server's cancelAction: the action is closed on the device's side (no job of
        it is installed: the update package drops a saved one when target() no longer names it)."""
        data = await self.call("GET", url)
        stop = data.get("cancelAction") if isinstance(data, dict) else None
        stop = stop.get("stopId") if isinstance(stop, dict) else None
        cid = data.get("id") if isinstance(data, dict) else None
        if isinstance(cid, int):
            cid = str(cid)
        if not isinstance(cid, str) or not cid.isdigit() or len(cid) > 20:
            raise _bad("cancelAction has no id")
        self.cancelled = str(stop) if stop is not None else cid
        await self.feedback("cancelAction", cid, "closed", "success", ["cancelled on the device"])
        log("firmware", "DDI action %s cancelled by the server: acknowledged" % self.cancelled)

    async def wanted(self, rel):
        """Is rel's action still open? (The update job asks before it installs a saved release.) A
        cancelled action is acknowledged here: False, and the job is dropped by its caller."""
        links = await self.poll()
        if "cancelAction" in links:
            await self.cancel(_href(links, ("cancelAction",), "controller"))
            return False
        if "deploymentBase" not in links:
            return False
        href = _href(links, ("deploymentBase",), "controller")
        return href.endswith("/" + rel["action"]) or ("/" + rel["action"] + "?") in href

    async def report(self, rel, ok, details):
        """Update feedback: ok True -> proceeding (a step done), False -> closed + failure."""
        details = [details] if isinstance(details, str) else details
        if ok:
            await self.feedback("deploymentBase", rel["action"], "proceeding", "none", details)
        else:
            await self.feedback("deploymentBase", rel["action"], "closed", "failure", details)

    async def confirm(self, version):
        """After the new version runs: the server's open action for this version is closed with success
        (no open action, or one for another version: nothing to confirm)."""
        links = await self.poll()
        if "deploymentBase" not in links:
            return
        url = _href(links, ("deploymentBase",), "controller")
        data = await self.call("GET", url)
        try:
            # (a body that is not an object is a TypeError here, caught below)
            action = str(data["id"])  # pyright: ignore[reportOptionalSubscript]
            chunk_version = data["deployment"]["chunks"][0]["version"]  # pyright: ignore[reportOptionalSubscript]
        except (KeyError, IndexError, TypeError):
            raise _bad("deployment unreadable")
        if chunk_version != version or not action.isdigit():
            return
        await self.feedback("deploymentBase", action, "closed", "success", ["running %s" % version])
        log("firmware", "DDI action %s: %s runs, closed with success" % (action, version))

    # ---- download ------------------------------------------------------------------------------------
    async def open_release(self, rel, offset=0):
        """GET the release file from `offset` -> (response, offset actually served). Inside an .swu the
        file's own bytes are asked for (Range) and presented as if they were the whole answer."""
        skip, size = rel.get("skip", 0), rel["size"]
        extra = ""
        if skip or offset:
            extra = "Range: bytes=%d-%d\r\n" % (skip + offset, skip + size - 1)
        resp = await self.open("GET", self._abs(rel["url"]), extra)
        try:
            _plain(resp)
            if resp.status == 206 and extra:
                want = "bytes %d-" % (skip + offset)
                if not resp.headers.get("content-range", "").startswith(want):
                    raise Error(_NET, "server sent another range")
                return _Part(resp, 0, size - offset, offset, size), offset
            if resp.status == 200:
                if resp.length is not None and resp.length < skip + size:
                    raise Error(_BAD, "artifact is shorter than the release file")
                return _Part(resp, skip, size, 0, size), 0  # no ranges: from the start
            await http.fail(resp)
        except BaseException:
            await resp.close()
            raise
