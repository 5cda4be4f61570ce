# NVS semantics of the simulated board (the ESP32 behaviour the device code relies on), and the Store.
import errno

import support
import vesp32
from twomes import store


def test_missing_key_is_enoent():
    support.new_board()
    nvs = vesp32.NVS("twomes")
    e = support.raises(OSError, nvs.get_i32, "nope")
    assert e.errno == errno.ENOENT
    e = support.raises(OSError, nvs.get_blob, "nope", bytearray(8))
    assert e.errno == errno.ENOENT


def test_typed_values_and_blob_into_buffer():
    support.new_board()
    nvs = vesp32.NVS("twomes")
    nvs.set_i32("n", -5)
    nvs.set_blob("b", b"hello")
    buf = bytearray(16)
    assert nvs.get_blob("b", buf) == 5 and bytes(buf[:5]) == b"hello"
    assert nvs.get_i32("n") == -5
    support.raises(OSError, nvs.get_i32, "b")  # a blob is not an i32
    support.raises(OSError, nvs.get_blob, "b", bytearray(2))  # buffer too small


def test_nothing_durable_before_commit():
    support.new_board()
    nvs = vesp32.NVS("twomes")
    nvs.set_i32("kept", 1)
    nvs.commit()
    nvs.set_i32("lost", 2)
    support.power_cycle()
    nvs = vesp32.NVS("twomes")
    assert nvs.get_i32("kept") == 1
    support.raises(OSError, nvs.get_i32, "lost")


def test_persists_across_restart_and_namespaces_are_separate():
    d = support.new_board()
    a = vesp32.NVS("one")
    a.set_blob("k", b"A")
    a.commit()
    b = vesp32.NVS("two")
    b.set_blob("k", b"B")
    b.commit()
    support.power_cycle()
    import vstate

    vstate.configure(d)
    buf = bytearray(4)
    n = vesp32.NVS("one").get_blob("k", buf)
    assert bytes(buf[:n]) == b"A"
    n = vesp32.NVS("two").get_blob("k", buf)
    assert bytes(buf[:n]) == b"B"


def test_key_length_limit():
    support.new_board()
    nvs = vesp32.NVS("twomes")
    support.raises(OSError, nvs.set_i32, "k" * 16, 1)
    nvs.set_i32("k" * 15, 1)


def test_erase_key():
    support.new_board()
    nvs = vesp32.NVS("twomes")
    nvs.set_i32("x", 1)
    nvs.commit()
    nvs.erase_key("x")
    nvs.commit()
    support.raises(OSError, nvs.get_i32, "x")
    support.raises(OSError, nvs.erase_key, "x")


def test_store_strings_and_missing():
    support.new_board()
    st = store.Store(vesp32.NVS("twomes"))
    assert st.get(store.SESSION) is None
    assert st.get_int(store.FW_FAILS, 7) == 7
    st.put(store.WIFI, "caf\u00e9 & <b>")
    st.put_int(store.FW_FAILS, 2)
    st.commit()
    assert st.get(store.WIFI) == "caf\u00e9 & <b>"
    assert st.get_int(store.FW_FAILS) == 2
    st.delete(store.WIFI)
    st.delete(store.WIFI)  # deleting a missing key is fine
    assert st.get(store.WIFI) is None


def test_store_erase_all():
    support.new_board()
    st = store.Store(vesp32.NVS("twomes"))
    for k in store.ALL_KEYS:
        st.put(k, "v")
    st.commit()
    st.erase_all()
    support.power_cycle()
    st = store.Store(vesp32.NVS("twomes"))
    for k in store.ALL_KEYS:
        assert st.get(k) is None


def test_store_erase_all_cut_short_is_finished_at_the_next_boot():
    """A power cut after the marker's commit: the session is gone or going, and the marker tells the
    next boot (start.boot) to erase again; once done, nothing (the marker included) is left."""
    support.new_board()
    st = store.Store(vesp32.NVS("twomes"))
    for k in store.ALL_KEYS:
        if k != store.RESET:
            st.put(k, "v")
    st.commit()
    assert st.get(store.RESET) is None
    st.put(store.RESET, "1")  # what erase_all commits first
    st.commit()
    support.power_cycle()
    st = store.Store(vesp32.NVS("twomes"))
    assert st.get(store.RESET) == "1" and st.get(store.ACT_TOKEN) == "v"
    st.erase_all()
    support.power_cycle()
    st = store.Store(vesp32.NVS("twomes"))
    for k in store.ALL_KEYS:
        assert st.get(k) is None
