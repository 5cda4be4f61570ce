# Starts the app; if it cannot start (a bad update), reset: rollback and boot counter need that boot.
try:
    import twomes.app

    twomes.app.main()
except Exception as e:  # noqa: BLE001 - not Ctrl-C: that still reaches the REPL
    import sys
    import time

    import machine

    sys.print_exception(e)
    time.sleep(5)
    machine.reset()
