# Who the device is: its name (from the Wi-Fi MAC), its activation token (made once, kept in NVS) and
# the password of its setup access point (derived from a secret kept in NVS).
import hashlib
import json

from micropython import const

from twomes import store

_TOKEN_DIGITS = const(16)  # ~53 bits; the Twomes server requires at least 8 characters
_AP_PASS_LEN = const(10)
_AP_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # 32 symbols: no 0/o/1/l, unbiased with % 32


def device_name(prefix, mac):
    return prefix + "%02X%02X%02X" % (mac[3], mac[4], mac[5])


def new_token(urandom, digits=_TOKEN_DIGITS):
    """`digits` decimal digits, uniform: bytes >= 250 are rejected, so % 10 has no bias."""
    out = []
    while len(out) < digits:
        for b in urandom(digits):
            if b < 250 and len(out) < digits:
                out.append("0123456789"[b % 10])
    return "".join(out)


def ap_password(secret, name):
    digest = hashlib.sha256(secret.encode() + b"/ap/" + name.encode()).digest()
    return "".join(_AP_ALPHABET[digest[i] % 32] for i in range(_AP_PASS_LEN))


class Identity:
    def __init__(self, name, device_type, token, ap_secret):
        self.name = name
        self.device_type = device_type
        self.activation_token = token
        self.ap_password = ap_password(ap_secret, name)

    def activation_json(self):
        # fixed key order (MicroPython dicts are unordered), compact, one line: copy-paste ready
        d = json.dumps
        return '{"name":%s,"device_type":%s,"activation_token":%s}' % (
            d(self.name),
            d(self.device_type),
            d(self.activation_token),
        )


def load(st, mac, cfg, urandom):
    """The identity of this device; makes and stores the token and AP secret on first boot."""
    token = st.get(store.ACT_TOKEN)
    secret = st.get(store.AP_SECRET)
    if token is None or len(token) < 8 or not token.isdigit():
        token = new_token(urandom)
        st.put(store.ACT_TOKEN, token)
    if secret is None:
        secret = new_token(urandom, 24)
        st.put(store.AP_SECRET, secret)
    st.commit()
    return Identity(device_name(cfg.name_prefix, mac), cfg.device_type, token, secret)
