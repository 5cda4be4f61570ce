# MicroPython manifest: freezes the Twomes app into a custom firmware, so a freshly flashed board needs
# no `twomes deploy` (only its twomes.json config). Build it in a MicroPython checkout, e.g.
#   cd micropython/ports/esp32
#   make BOARD=ESP32_GENERIC BOARD_VARIANT=OTA FROZEN_MANIFEST=/path/to/repo/device/manifest.py
# Relative paths below are relative to this file (device/).
#
# Frozen boot.py/main.py run instead of files of the same name on the board's filesystem (MicroPython
# looks for frozen ones first); include this manifest with boot_main=False to freeze only the modules:
#   include("/path/to/repo/device/manifest.py", boot_main=False)
# App bundles still update a frozen app: otaboot puts the chosen ota/<slot> first on sys.path, ahead of
# ".frozen".
options.defaults(boot_main=True)  # noqa: F821 - manifest API (options, include, package, module, metadata)

include("$(PORT_DIR)/boards/manifest.py")  # noqa: F821 - keep the port's own frozen modules (_boot, inisetup)


def _version():
    with open("twomes/__init__.py") as f:
        for line in f:
            if line.startswith("VERSION = "):
                return line.split('"')[1]
    return None


metadata(description="Twomes field firmware (MicroPython)", version=_version())  # noqa: F821
package("twomes")  # noqa: F821
module("otaboot.py")  # noqa: F821
if options.boot_main:  # noqa: F821
    module("boot.py", base_path="..")  # noqa: F821
    module("main.py", base_path="..")  # noqa: F821
