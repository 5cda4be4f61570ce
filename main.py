# Starts the app; everything else lives in the twomes package. An app that cannot even start (a bad
# image or bundle) resets the board instead of idling at the REPL, so the bootloader's rollback and
# otaboot's boot-loop counter get their next boot. Ctrl-C still reaches the REPL (deploy tools).
try:
    import twomes.app

    twomes.app.main()
except Exception as e:  # noqa: BLE001
    import sys
    import time

    import machine

    sys.print_exception(e)
    print("main: the app could not start: restarting in 5 s")
    time.sleep(5)
    machine.reset()
