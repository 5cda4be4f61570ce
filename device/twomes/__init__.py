# Twomes field firmware (MicroPython). VERSION is rewritten by `twomes release` when it builds a bundle.
VERSION = "1.0.0"
JOB = "ota/job"  # an update to install in the next boot (twomes/fw.py writes it, twomes/update.py runs it)


class Record:
    """Plain attributes only (config, identity): no methods, so the module that filled it can be
    unloaded after boot and its code leaves the heap."""


def unload(*names):
    """Forget modules of the package (names without "twomes.") so their code leaves the heap."""
    import gc
    import sys

    pkg = sys.modules["twomes"]
    for n in names:
        sys.modules.pop("twomes." + n, None)
        pkg.__dict__.pop(n, None)
    gc.collect()
