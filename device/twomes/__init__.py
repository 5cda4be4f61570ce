# Twomes field firmware (MicroPython). VERSION is rewritten by `twomes release` when it builds a bundle.
VERSION = "1.0.0"
