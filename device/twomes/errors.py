# The app's small exception hierarchy. Messages are short; secrets never go into them.


class Error(Exception):
    pass


class NetError(Error):
    """No answer, connection lost, timeout, or not HTTP: try again later."""


class HttpError(Error):
    """The server answered with a status we did not want."""

    def __init__(self, status, detail=""):
        super().__init__("HTTP %d %s" % (status, detail))
        self.status = status
        self.detail = detail


class NoFirmwareApi(Error):
    """The server has no firmware endpoints (a plain Twomes server)."""


class BadImage(Error):
    """A firmware download is not what the server promised (size, hash, format): never installed."""
