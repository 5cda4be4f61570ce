# Flash partitions and the bootloader's OTA/rollback rule on the simulated board.
import vflash

import support

P = vflash.Partition


def _write_app(label, fill):
    p = P(label)
    buf = bytearray(bytes([fill]) * 4096)
    p.writeblocks(0, buf)
    return p


def test_table_and_block_protocol():
    support.new_board()
    apps = [p.info()[4] for p in P.find(P.TYPE_APP)]
    assert apps == ["factory", "ota_0", "ota_1"]
    assert P.find(P.TYPE_DATA, label="nvs")[0].info()[4] == "nvs"
    p = P("ota_0")
    assert p.ioctl(5, 0) == 4096 and p.ioctl(4, 0) == 0x180000 // 4096
    buf = bytearray(4096)
    p.readblocks(0, buf)
    assert buf == bytearray(b"\xff" * 4096)  # erased flash


def test_write_with_offset_does_not_erase_nor_semantics():
    support.new_board()
    p = P("ota_0")
    p.writeblocks(1, bytearray(b"\x0f" * 4096))
    p.writeblocks(1, bytearray(b"\xf0" * 16), 0)  # no erase: bits can only be cleared
    buf = bytearray(16)
    p.readblocks(1, buf)
    assert buf == bytearray(16)
    p.ioctl(6, 1)
    p.readblocks(1, buf)
    assert buf == bytearray(b"\xff" * 16)


def test_out_of_range_is_rejected():
    support.new_board()
    p = P("ota_1")
    support.raises(OSError, p.readblocks, p.ioctl(4, 0), bytearray(4096))


def test_first_boot_runs_factory_and_next_update_is_ota0():
    support.new_board()
    assert vflash.bootloader() == "factory"
    assert P(P.RUNNING).info()[4] == "factory"
    assert P(P.RUNNING).get_next_update().info()[4] == "ota_0"


def test_set_boot_new_then_pending_then_valid():
    support.new_board()
    vflash.bootloader()
    nxt = P(P.RUNNING).get_next_update()
    _write_app("ota_0", 0x11)
    nxt.set_boot()
    assert vflash.bootloader() == "ota_0"  # NEW -> PENDING_VERIFY, boots it
    P.mark_app_valid_cancel_rollback()
    assert vflash.bootloader() == "ota_0"  # stays
    assert vflash.bootloader() == "ota_0"
    assert P(P.RUNNING).get_next_update().info()[4] == "ota_1"


def test_unconfirmed_app_rolls_back_at_next_boot():
    support.new_board()
    vflash.bootloader()
    P("ota_0").set_boot()
    assert vflash.bootloader() == "ota_0"
    P.mark_app_valid_cancel_rollback()
    P("ota_1").set_boot()
    assert vflash.bootloader() == "ota_1"  # pending verify
    assert vflash.bootloader() == "ota_0"  # not confirmed: aborted, previous app comes back
    assert vflash.bootloader() == "ota_0"


def test_unconfirmed_first_update_falls_back_to_factory():
    support.new_board()
    vflash.bootloader()
    P("ota_0").set_boot()
    assert vflash.bootloader() == "ota_0"
    assert vflash.bootloader() == "factory"


def test_without_rollback_support():
    support.new_board(rollback=False)
    vflash.bootloader()
    P("ota_0").set_boot()
    assert vflash.bootloader() == "ota_0"
    e = support.raises(OSError, P.mark_app_valid_cancel_rollback)
    assert e.args[0] == -261
    assert vflash.bootloader() == "ota_0"  # no rollback: it just stays


def test_set_boot_factory_clears_otadata():
    support.new_board()
    P("ota_0").set_boot()
    vflash.bootloader()
    P("factory").set_boot()
    assert vflash.bootloader() == "factory"
