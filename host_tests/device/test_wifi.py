# The Wi-Fi credential rule the portal, Improv and `twomes provision` all use (twomes.creds).
import support  # noqa: F401  (sets up the paths on MicroPython too)
from twomes import creds


def test_credential_rule_matches_the_esp32_driver():
    ok = creds.check_credentials
    assert ok("home", "") is None  # open network
    assert ok("home", "12345678") is None and ok("home", "x" * 63) is None
    assert ok("home", "ab" * 32) is None  # 64 hex digits: a raw PSK
    assert "8 to 63" in ok("home", "short")
    assert "64 hex digits" in ok("home", "z" * 64)  # 64 characters must be hex
    assert "64 hex digits" in ok("home", "a" * 65)
    assert "1 to 32 bytes" in ok("", "12345678")
    assert "1 to 32 bytes" in ok("\u00e9" * 17, "12345678")  # 34 bytes of UTF-8
    assert ok("\u00e9" * 16, "p&ss w%rd+#1") is None
