"""Simulated ESP32 hardware modules (machine, network, esp32) for the virtual board.

They are top-level modules (this folder goes on sys.path): inside the MicroPython unix port ``vboot``
installs them into ``sys.modules`` as machine, network and esp32; on CPython the host tests use the very same classes as fakes. Only the subset both runtimes share is used.
"""
