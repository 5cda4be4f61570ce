# Device configuration: `twomes.json` at the filesystem root, deployed with the code, kept across OTA.
# Every key has a default; a missing file, bad JSON or a bad value gives one clear boot message and the
# default for that key, never a device that does not start.
import json

from micropython import const

FILE = "twomes.json"
_MAX_FILE = const(4096)

# key: (default, type, min, max). Strings: min/max bound the length.
_SPEC = {
    "server_url": ("https://127.0.0.1:8443", str, 8, 200),
    "device_type": ("Generic-Test", str, 1, 64),
    "name_prefix": ("TWOMES-", str, 1, 16),
    "button_pin": (0, int, 0, 48),
    "led_pin": (2, int, 0, 48),
    "led_active_low": (False, bool, 0, 1),
    "portal_port": (0, int, 0, 65535),  # 0: the standard 80
    "dns_port": (0, int, 0, 65535),  # 0: the standard 53
    "ap_open": (False, bool, 0, 1),
    "wifi_timeout_s": (30, int, 3, 120),
    "portal_idle_s": (300, int, 10, 86400),
    "portal_retry_s": (60, int, 5, 3600),
    "http_timeout_s": (20, int, 2, 120),
    "retry_base_s": (5, int, 1, 3600),
    "retry_max_s": (600, int, 5, 86400),
    "heartbeat_s": (600, int, 5, 86400),
    "fw_check_s": (172800, int, 60, 2592000),
    "queue_max": (50, int, 1, 500),
    "confirm_boots": (3, int, 1, 10),
    "hold_wifi_s": (3, int, 1, 30),
    "hold_factory_s": (10, int, 2, 60),
    # trust (docs/security.md): the public keys whose signatures the device accepts on a release
    # manifest (64 hex digits each; two during a key rotation), the CA certificate (DER) that signed the
    # server's certificate, and two lab-only switches that the device logs at every boot
    "release_keys": ((), list, 0, 4),
    "allow_unsigned": (False, bool, 0, 1),
    "ca_file": ("ca.der", str, 1, 64),
    "allow_http": (False, bool, 0, 1),
    # where updates come from: "twomes" (the server_url's firmware API) or "hawkbit" (an Eclipse hawkBit
    # DDI server, docs/hawkbit.md; activation and measurements stay on server_url)
    "updates": ("twomes", str, 6, 7),
    "ddi_url": ("", str, 0, 200),  # the DDI server's base URL (without the tenant)
    "ddi_tenant": ("DEFAULT", str, 1, 64),
    "ddi_token": ("", str, 0, 128),  # the target's (or the gateway's) security token: never logged
    "ddi_token_kind": ("TargetToken", str, 11, 12),  # TargetToken | GatewayToken
}
_CHOICES = {"updates": ("twomes", "hawkbit"), "ddi_token_kind": ("TargetToken", "GatewayToken")}


def _hex_key(v):
    if not isinstance(v, str) or len(v) != 64:
        return False
    for c in v.encode():  # bytes: iterating a str interns every character it hands out (heap.md)
        if not (48 <= c <= 57 or 97 <= c <= 102):  # 0-9 a-f
            return False
    return True


def defaults():
    from twomes import Record

    cfg = Record()
    for key in _SPEC:
        setattr(cfg, key, _SPEC[key][0])
    cfg.problems = []
    return cfg


def update(cfg, values):
    """Apply a dict of settings; bad ones are listed in cfg.problems and keep their defaults."""
    if not isinstance(values, dict):
        cfg.problems.append("not a JSON object")
        return
    for key in values:
        value = values[key]
        spec = _SPEC.get(key)
        if spec is None:
            cfg.problems.append("unknown key %s" % key)
            continue
        default, kind, lo, hi = spec
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            cfg.problems.append("%s must be %s" % (key, kind.__name__))
            continue
        size = len(value) if kind is str or kind is list else value
        if kind is not bool and not lo <= size <= hi:
            cfg.problems.append("%s out of range %d..%d" % (key, lo, hi))
            continue
        if key in _CHOICES and value not in _CHOICES[key]:
            cfg.problems.append("%s must be one of %s" % (key, ", ".join(_CHOICES[key])))
            continue
        if (
            key in ("server_url", "ddi_url")
            and value
            and not (value.startswith("http://") or value.startswith("https://"))
        ):
            cfg.problems.append("%s must start with http:// or https://" % key)
            continue
        if kind is list:
            bad = [v for v in value if not _hex_key(v)]
            if bad:
                cfg.problems.append("%s: each key must be 64 lower-case hex digits" % key)
                continue
            value = tuple(value)
        elif key == "ca_file" and [c for c in value.encode() if not 33 <= c <= 126]:  # "!".."~"
            cfg.problems.append("ca_file has spaces, control or non-ASCII characters")
            continue
        setattr(cfg, key, value)


def load(path=FILE):
    """Read the config file; problems are listed in cfg.problems (the app prints them at boot)."""
    import os

    cfg = defaults()
    try:
        size = os.stat(path)[6]
        if size > _MAX_FILE:
            cfg.problems.append("%s larger than %d bytes, using defaults" % (path, _MAX_FILE))
            return cfg
        with open(path) as f:
            text = f.read(size)
    except OSError:
        cfg.problems.append("%s missing, using defaults" % path)
        return cfg
    try:
        values = json.loads(text)
    except ValueError:
        cfg.problems.append("%s is not valid JSON, using defaults" % path)
        return cfg
    update(cfg, values)
    return cfg
