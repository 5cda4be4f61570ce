# The app's one exception class. Messages are short; secrets never go into them. What went wrong is in
# .status, so that one class serves every case (each class costs ~250 B of heap on the device):
#   > 0  the server answered with this HTTP status, which we did not want ("HTTP <status> <detail>")
#     0  no answer, connection lost, timeout, or not HTTP: try again later
#    -1  a firmware download is not what the server promised (size, hash, format): never installed
#    -2  the server has no firmware endpoints (a plain Twomes server)
# Modules name the ones they use with a const of their own (_NET, _BAD, _NO_FW_API): free at run time.


class Error(Exception):
    def __init__(self, status, msg=""):
        super().__init__("HTTP %d %s" % (status, msg) if status > 0 else msg)
        self.status = status
