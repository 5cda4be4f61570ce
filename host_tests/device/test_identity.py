# Identity: name from the MAC, activation token made once and kept, the activation line.
import json
import os

import support
import vesp32
import vnetwork

from twomes import config, identity, store


def _load():
    st = store.Store(vesp32.NVS("twomes"))
    mac = vnetwork.WLAN(vnetwork.STA_IF).config("mac")
    return identity.load(st, mac, config.Config(), os.urandom)


def test_name_from_mac():
    assert identity.device_name("TWOMES-", b"\x24\x6f\x28\xd3\xad\x48") == "TWOMES-D3AD48"
    assert identity.device_name("X-", bytes([0, 0, 0, 1, 2, 0xAB])) == "X-0102AB"


def test_token_digits_fixed_length_no_leading_loss():
    for _ in range(200):
        t = identity.new_token(os.urandom)
        assert len(t) == 16 and t.isdigit()
    # bytes >= 250 are rejected (no modulo bias): a source giving only 255 then 3s yields "3"s
    seq = [bytes([255] * 16), bytes([3] * 16)]
    t = identity.new_token(lambda n: seq.pop(0) if seq else bytes([7] * n), 16)
    assert t == "3" * 16


def test_digit_distribution_is_uniform_enough():
    counts = [0] * 10
    for _ in range(300):
        for ch in identity.new_token(os.urandom):
            counts[ord(ch) - 48] += 1
    assert min(counts) > 350 and max(counts) < 610  # 4800 digits, expected 480 each


def test_token_made_once_and_survives_reboot():
    d = support.new_board(mac="24:6F:28:D3:AD:48")
    a = _load()
    support.power_cycle()
    import vstate

    vstate.configure(d)
    b = _load()
    assert a.name == b.name == "TWOMES-D3AD48"
    assert a.activation_token == b.activation_token
    assert a.ap_password == b.ap_password and len(a.ap_password) == 10


def test_activation_line_is_valid_json_in_order():
    support.new_board(mac="24:6F:28:D3:AD:48")
    ident = _load()
    line = ident.activation_json()
    assert line.startswith('{"name":"TWOMES-D3AD48","device_type":"Generic-Test","activation_token":"')
    assert "\n" not in line
    assert json.loads(line) == {
        "name": "TWOMES-D3AD48",
        "device_type": "Generic-Test",
        "activation_token": ident.activation_token,
    }


def test_damaged_token_is_replaced():
    support.new_board()
    st = store.Store(vesp32.NVS("twomes"))
    st.put(store.ACT_TOKEN, "12ab")
    st.commit()
    ident = _load()
    assert len(ident.activation_token) == 16 and ident.activation_token.isdigit()


def test_other_boards_other_names():
    support.new_board(mac="24:6F:28:00:00:01")
    a = _load()
    support.new_board(mac="24:6F:28:00:00:02")
    b = _load()
    assert a.name != b.name and a.activation_token != b.activation_token
