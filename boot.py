# Runs first at every power-up: chooses the app slot. Tiny, and cannot fail.
try:
    import sys

    import otaboot

    otaboot.select()
    del sys.modules["otaboot"]  # its job is done: free its RAM
except Exception as e:  # noqa: BLE001 - boot must go on with the factory app, whatever happened
    print("boot: slot selection failed (%r), starting the factory app" % e)
