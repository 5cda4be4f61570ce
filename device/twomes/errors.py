# The app's exceptions. Messages are short; secrets never go into them.
#
# Error: what went wrong talking to a server or with a release, the kind in .status, so one class
# serves every case:
#   > 0  the server answered with this HTTP status, which we did not want ("HTTP <status> <detail>")
#     0  no answer, connection lost, timeout, TLS refused, or not HTTP: try again later
#    -1  a release is not what it must be (signature, size, hash, format): never installed
#    -2  the server has no firmware endpoints (a plain Twomes server)
# Modules name the ones they use with a const of their own (_NET, _BAD, _NO_FW_API).
#
# Restart: leave the state machine and reset the board (a button action, an update installed).


class Error(Exception):
    def __init__(self, status, msg=""):
        super().__init__("HTTP %d %s" % (status, msg) if status > 0 else msg)
        self.status = status


class Restart(Exception):
    pass
