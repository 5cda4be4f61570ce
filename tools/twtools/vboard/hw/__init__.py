"""Simulated ESP32 hardware modules (machine, network, esp32) for the virtual board.

They are top-level modules (this folder goes on sys.path). On the virtual board they run in the
hardware process (``vhwd.py``), and the device process (``vboot.py``, then ``vfw.py`` from the
simulation's firmware ROM, ``vmap.py``) reaches them through the proxies of ``vproxy.py``, installed as
machine, network and esp32; on CPython and in the MicroPython unit tests
the host tests use the very same classes as fakes, in process. Only the subset both runtimes share is
used.
"""
