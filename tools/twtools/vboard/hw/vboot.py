# The virtual board's device process: `micropython -X heapsize=N vboot.py`, what the ESP32's ROM and
# MicroPython's start-up in flash are on the chip. As the script it stays in the heap for the whole run
# (it runs boot.py and main.py from inside), so it only hands over: vmap maps the simulation's firmware
# ROM and the "romfs" partition (then forgets itself), vfw - running in place from that ROM - starts
# the hardware proxies, boot.py, main.py and then the REPL (docs/heap.md).
import os
import sys

sys.path[0] = os.getenv("VBOARD_HW")  # vmap.mpy (the simulation's compiled modules)
import vmap  # noqa: E402

del vmap
import vfw  # noqa: E402

vfw.main()
