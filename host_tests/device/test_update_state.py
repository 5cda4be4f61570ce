# The update state's owner (twomes/update/state.py): each format as documented there, what a power cut
# between two NVS keys leaves, and that bad content reads as "none" or a clear error, never a crash.
import json
import os

import support
import vesp32
from twomes import store
from twomes.update import state


def _nvs():
    support.new_board()
    return store.Store(vesp32.NVS("twomes"))


def _in_tmp():
    os.chdir(support.tmpdir("state"))


def test_job_round_trip_and_damaged_job():
    _in_tmp()
    assert not state.job_saved() and state.job() is None
    rel = {"id": 3, "version": "2.0.0", "kind": "bundle", "size": 9, "sha256": "a" * 64, "url": "/x"}
    state.save_job(rel)  # makes the ota directory
    assert state.job_saved() and state.job() == rel
    with open("ota/job") as f:
        assert json.loads(f.read()) == {"rel": rel}  # the documented format
    assert "job.tmp" not in os.listdir("ota")  # written to a temporary file and renamed
    for bad in ("{half", json.dumps({"rel": 5}), json.dumps({"rel": {"kind": "image"}}), "[]"):
        with open("ota/job", "w") as f:
            f.write(bad)
        assert support.raises(ValueError, state.job)
        assert not state.job_saved()  # a damaged job is dropped, once
    state.drop_job()  # nothing to drop: no error


def test_failures_are_counted_per_version():
    st = _nvs()
    assert state.fails(st, "2.0.0") == 0
    for n in range(1, state.FAILS_MAX + 1):
        assert state.count_failure(st, "2.0.0") == n
    assert state.fails(st, "2.0.0") == state.FAILS_MAX
    assert state.fails(st, "3.0.0") == 0  # another target starts again
    assert state.count_failure(st, "3.0.0") == 1 and state.fails(st, "2.0.0") == 0
    assert st.get(store.FW_FAIL) == "1 3.0.0"  # the count and its version: one item, never cut apart


def test_failures_counted_by_firmware_1_0_are_read_then_replaced():
    st = _nvs()
    st.put(store.FW_FAILED, "2.0.0")
    st.put_int(store.FW_FAILS, 2)
    st.commit()
    assert state.fails(st, "2.0.0") == 2 and state.fails(st, "3.0.0") == 0
    assert state.count_failure(st, "2.0.0") == 3
    assert st.get(store.FW_FAILED) is None and st.get_int(store.FW_FAILS, -1) == -1


def test_confirmation_keeps_the_version_and_forgets_its_failures_only():
    st = _nvs()
    state.count_failure(st, "2.0.0")
    state.set_image_new(st, "1.0.0", "ota_0", "factory")
    st.put(store.DL_STATE, "9 0123456789abcdef ota_0 65536")
    state.confirm_kept(st, "1.0.0", True)
    assert state.confirmed(st) == "1.0.0" and state.image_new(st) is None
    assert st.get(store.DL_STATE) is None
    assert state.fails(st, "2.0.0") == 1  # another version's failures still count
    state.count_failure(st, "1.0.0")
    state.confirm_kept(st, "1.0.0", False)
    assert state.fails(st, "1.0.0") == 0 and st.get(store.FW_FAIL) is None
    state.set_image_new(st, "2.0.0", "ota_0", "factory")
    state.image_rolled_back(st, "2.0.0")  # the old version runs: confirm again, count the attempt
    assert state.confirmed(st) is None and state.image_new(st) is None and state.fails(st, "2.0.0") == 1


def test_image_marker_format():
    st = _nvs()
    assert state.image_new(st) is None
    state.set_image_new(st, "2.0.0", "ota_1", "ota_0")
    assert st.get(store.IMG_NEW) == "2.0.0 ota_1 ota_0"  # "<version> <partition> <running partition>"
    assert state.image_new(st) == "2.0.0"
    st.put(store.DL_STATE, "9 0123456789abcdef ota_1 65536")
    state.image_failed(st)  # set_boot refused it
    assert state.image_new(st) is None and st.get(store.DL_STATE) is None


def test_download_resumes_only_from_a_checkpoint_of_the_same_image():
    st = _nvs()
    rel = {"id": 9, "sha256": "0123456789abcdef" + "0" * 48}
    key = state.download_key(rel, "ota_0")
    assert key == "9 0123456789abcdef ota_0"  # "<release id> <sha256[:16]> <partition>"
    assert state.download_at(st, key, 200000, 65536) == 0
    state.download_done(st, key, 131072)
    assert st.get(store.DL_STATE) == key + " 131072"
    assert state.download_at(st, key, 200000, 65536) == 131072
    assert state.download_at(st, state.download_key(rel, "ota_1"), 200000, 65536) == 0  # other partition
    assert state.download_at(st, key, 100000, 65536) == 0  # beyond the image: not trusted
    state.download_done(st, key, 200000)
    assert state.download_at(st, key, 200000, 65536) == 200000  # complete: verify only
    for bad in (key + " 1000", key + " x", key + "1 65536", "garbage"):
        st.put(store.DL_STATE, bad)
        assert state.download_at(st, key, 200000, 65536) == 0
    state.download_forget(st)
    assert st.get(store.DL_STATE) is None
