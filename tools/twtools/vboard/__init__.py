"""The virtual board: the real device code on the MicroPython unix port with simulated hardware."""
