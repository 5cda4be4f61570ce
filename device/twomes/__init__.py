# Twomes field firmware (MicroPython). VERSION is rewritten by `twomes release` when it builds a bundle.
VERSION = "1.0.0"


class Record:
    """Plain attributes only (config, identity): no methods, so the module that filled it can be
    unloaded after boot and its code leaves the heap."""


def unload(*names):
    """Forget modules of the package (names without "twomes.", "update.job" for a subpackage's) so their
    code leaves the heap: out of sys.modules and out of the package that holds them."""
    import gc
    import sys

    for n in names:
        sys.modules.pop("twomes." + n, None)
        i = n.rfind(".")
        pkg = sys.modules.get("twomes." + n[:i] if i > 0 else "twomes")
        if pkg is not None:
            pkg.__dict__.pop(n[i + 1 :], None)
    gc.collect()
