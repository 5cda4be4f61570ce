# Device configuration: defaults, validation, clear problems instead of a device that will not start.
import support
from twomes import config


def _write(text):
    d = support.tmpdir("cfg")
    with open(d + "/twomes.json", "w") as f:
        f.write(text)
    return d + "/twomes.json"


def test_missing_file_gives_defaults_and_a_message():
    cfg = config.load("/nonexistent/twomes.json")
    assert cfg.device_type == "Generic-Test" and cfg.name_prefix == "TWOMES-"
    assert "missing" in cfg.problems[0]


def test_values_are_read():
    cfg = config.load(
        _write('{"server_url": "https://example.invalid", "device_type": "DSMR", "heartbeat_s": 60}')
    )
    assert cfg.server_url == "https://example.invalid" and cfg.device_type == "DSMR" and cfg.heartbeat_s == 60
    assert cfg.problems == []


def test_bad_values_keep_defaults_and_are_reported():
    cfg = config.load(
        _write(
            '{"heartbeat_s": "often", "button_pin": 99, "server_url": "ftp://x/y/z", '
            '"led_active_low": 1, "colour": "red", "name_prefix": ""}'
        )
    )
    assert cfg.heartbeat_s == 600 and cfg.button_pin == 0 and cfg.server_url.startswith("https://")
    assert cfg.led_active_low is False and cfg.name_prefix == "TWOMES-"
    text = " | ".join(cfg.problems)
    for word in ("heartbeat_s", "button_pin", "server_url", "led_active_low", "colour", "name_prefix"):
        assert word in text, word


def test_bad_json_and_wrong_shape():
    assert "not valid JSON" in config.load(_write("{nope")).problems[0]
    assert "not a JSON object" in config.load(_write("[1, 2]")).problems[0]


def test_secure_by_default():
    cfg = config.defaults()
    assert cfg.server_url.startswith("https://") and cfg.allow_http is False and cfg.ca_file == "ca.der"


_KEY1 = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
_KEY2 = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"


def test_trust_defaults_are_strict():
    cfg = config.defaults()
    assert cfg.release_keys == () and cfg.allow_unsigned is False
    assert cfg.allow_http is False and cfg.ca_file == "ca.der"


def test_trust_keys_are_read():
    cfg = config.load(
        _write(
            '{"release_keys": ["%s", "%s"], "ca_file": "certs/ca.der", "allow_http": true, '
            '"allow_unsigned": true}' % (_KEY1, _KEY2)
        )
    )
    assert cfg.problems == []
    assert cfg.release_keys == (_KEY1, _KEY2) and cfg.ca_file == "certs/ca.der"
    assert cfg.allow_http is True and cfg.allow_unsigned is True


def test_bad_trust_keys_are_reported():
    for text, word in (
        ('{"release_keys": "%s"}' % _KEY1, "release_keys must be list"),
        ('{"release_keys": ["%s"]}' % _KEY1.upper(), "64 lower-case hex"),
        ('{"release_keys": ["%s", 5]}' % _KEY1, "64 lower-case hex"),
        ('{"release_keys": ["%s"]}' % _KEY1[:-1], "64 lower-case hex"),
        ('{"release_keys": ["%s", "%s", "%s", "%s", "%s"]}' % ((_KEY1,) * 5), "out of range 0..4"),
        ('{"ca_file": "ca.der\\n"}', "ca_file has spaces"),
        ('{"ca_file": ""}', "ca_file out of range"),
        ('{"allow_http": "yes"}', "allow_http must be bool"),
        ('{"allow_unsigned": 1}', "allow_unsigned must be bool"),
    ):
        cfg = config.load(_write(text))
        assert word in " | ".join(cfg.problems), (text, cfg.problems)
        assert cfg.release_keys == () and cfg.ca_file == "ca.der"
        assert cfg.allow_http is False and cfg.allow_unsigned is False
