# Who the device is: its name (from the Wi-Fi MAC), its activation token (made once, kept in NVS) and
# the password of its setup access point (derived from a secret kept in NVS).
import hashlib
import json

from micropython import const

from twomes import store

_TOKEN_DIGITS = const(16)  # ~53 bits; the Twomes server requires at least 8 characters
_AP_PASS_LEN = const(10)
_AP_ALPHABET = const(b"abcdefghijkmnpqrstuvwxyz23456789")  # 32 symbols: no 0/o/1/l, unbiased with % 32
# (bytes: picking characters out of a str would intern each one as a qstr for the rest of the boot)


def device_name(prefix, mac):
    return prefix + "%02X%02X%02X" % (mac[3], mac[4], mac[5])


def new_token(urandom, digits=_TOKEN_DIGITS):
    """`digits` decimal digits, uniform: bytes >= 250 are rejected, so % 10 has no bias."""
    out = bytearray()
    while len(out) < digits:
        for b in urandom(digits):
            if b < 250 and len(out) < digits:
                out.append(48 + b % 10)  # "0" + the digit
    return out.decode()


def ap_password(secret, name):
    digest = hashlib.sha256(secret.encode() + b"/ap/" + name.encode()).digest()
    return bytes(_AP_ALPHABET[digest[i] % 32] for i in range(_AP_PASS_LEN)).decode()


def make(name, device_type, token, ap_secret):
    from twomes import Record

    ident = Record()
    ident.name = name
    ident.device_type = device_type
    ident.activation_token = token
    ident.ap_password = ap_password(ap_secret, name)
    # the line the operator registers: fixed key order (MicroPython dicts are unordered), compact
    d = json.dumps
    ident.activation_line = '{"name":%s,"device_type":%s,"activation_token":%s}' % (
        d(name),
        d(device_type),
        d(token),
    )
    return ident


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
    return make(device_name(cfg.name_prefix, mac), cfg.device_type, token, secret)
