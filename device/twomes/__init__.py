# Twomes field firmware (MicroPython). VERSION is rewritten by `twomes release` when it builds a bundle.
VERSION = "1.0.0"


class Record:
    """Plain attributes only (config, identity): no methods, so the module that filled it can be
    unloaded after boot and its code leaves the heap."""
