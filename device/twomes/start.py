# Boot-time setup: config, board, NVS store and identity, and the lines the operator needs. Loaded once
# by app.main() and unloaded with config and identity before the app runs.
import os

from twomes import VERSION, store
from twomes.log import log


def boot():
    """(board, cfg, st, ident) of this device; prints the activation line until it is activated."""
    from twomes import config, identity
    from twomes.hw import Board

    cfg = config.load()
    log("boot", "twomes firmware %s" % VERSION)
    for problem in cfg.problems:
        log("config", problem)
    cfg.problems = None
    if cfg.allow_http and cfg.server_url.startswith("http://"):
        log(
            "config",
            "allow_http: plain http to %s, NOT encrypted or authenticated (lab setting)" % cfg.server_url,
        )
    board = Board(cfg)
    st = store.Store(board.nvs("twomes"))
    if st.get(store.RESET) is not None:  # a factory reset cut short by a power cut
        log("boot", "a factory reset was cut short by a power cut: finishing it")
        st.erase_all()
    ident = identity.load(st, board.mac(), cfg, os.urandom)
    log("boot", "device %s (%s)" % (ident.name, cfg.device_type))
    if st.get(store.SESSION) is None:  # not activated (not online.server's session(): its code and
        # names would stay interned in the heap for the whole boot, setup mode included)
        # exactly one line, valid JSON: the operator registers the device with it
        print(ident.activation_line)
        if not cfg.ap_open:  # the setup AP's password, as on a label (not a Wi-Fi secret of the owner)
            log("setup", "access point %s, password %s" % (ident.name, ident.ap_password))
    return board, cfg, st, ident
