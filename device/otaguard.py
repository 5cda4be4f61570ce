# Boot-time helpers of otaboot, in their own module so that the installers, which load otaboot for its
# slot pointer, do not carry them: the boot-loop counter and the running app partition. Never shipped
# in a bundle (like otaboot).
#
# ota/boots: boots in a row that did not end well; the app removes it once it has run for a while or
# confirmed itself (twomes/app.py boot_guard). From SAFE_AFTER + 1 on the app starts in safe mode.
import os
import sys

BOOTS = "ota/boots"
SAFE_AFTER = 5  # failed boots in a row before safe mode (twomes/app.py _SAFE_AFTER)


def failed_boots():
    """Boots since the app last said this one went well, this one included."""
    try:
        with open(BOOTS) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def count_boot():
    n = failed_boots() + 1
    try:
        f = open(BOOTS, "w")
    except OSError:
        os.mkdir("ota")
        f = open(BOOTS, "w")
    with f:
        f.write(str(n))
    if n > SAFE_AFTER:
        print("boot: safe mode after %d boots in a row that did not end well: no update attempts" % (n - 1))
    return n


def running_partition():
    """Label of the app partition running (ESP32), or None where there is none (host tests)."""
    before = list(sys.modules)
    try:
        import esp32

        return esp32.Partition(esp32.Partition.RUNNING).info()[4]
    except Exception:  # noqa: BLE001 - no esp32 module, no partition table: no image in play
        return None
    finally:
        for name in list(sys.modules):  # a simulation's partition code, loaded for this: not kept
            if name not in before:
                sys.modules.pop(name)
