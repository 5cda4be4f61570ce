"""Release signing keys and signed release manifests (host side; docs/security.md).

``twomes keys new --out FILE``: an Ed25519 key pair made with the ``cryptography`` package. The private
key is written as PKCS#8 PEM with file mode 0600 (encrypted when ``--passphrase-env VAR`` names an
environment variable holding a passphrase); the public key is printed, and written next to it as
``FILE.pub``, in the form the device config takes: 64 lower-case hex digits in ``release_keys``.
``twomes keys show FILE`` prints the public key of a private key file again.

A release manifest is the canonical JSON (sorted keys, no spaces, ASCII) of device_type, kind,
version, counter (the monotonic security counter), size and sha256; the signature is the Ed25519
signature of its exact bytes, in hex. The device's own check is ``device/twomes/update/signing.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI builds its parser without loading cryptography
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

COUNTER_MAX = 0x7FFFFFFF
PASSPHRASE_ENV = "TWOMES_KEY_PASSPHRASE"
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")


class SigningError(Exception):
    """A key file or a manifest that cannot be used (the message says why)."""


def _passphrase(env: str | None) -> bytes | None:
    name = env or PASSPHRASE_ENV
    value = os.environ.get(name)
    if env and not value:
        raise SigningError(f"--passphrase-env {env}: that environment variable is empty or not set")
    return value.encode() if value else None


def public_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def new_key(path: Path, passphrase_env: str | None = None, force: bool = False) -> str:
    """Write a new private key to ``path`` (mode 0600) and its public key to ``path.pub``; the public hex."""
    if path.exists() and not force:
        raise SigningError(f"{path} exists: a release key is never overwritten by accident (--force)")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    secret = _passphrase(passphrase_env) if passphrase_env else None
    key = Ed25519PrivateKey.generate()
    algorithm: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, algorithm)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    pub = public_hex(key)
    path.with_name(path.name + ".pub").write_text(pub + "\n")
    return pub


def load_key(path: Path, passphrase_env: str | None = None) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = path.read_bytes()
    except OSError as e:
        raise SigningError(f"cannot read the key {path}: {e.strerror}") from None
    mode = path.stat().st_mode & 0o077
    if mode:
        print(f"warning: {path} is readable by others (mode {oct(mode)}); chmod 600 it", file=sys.stderr)
    try:
        key = serialization.load_pem_private_key(data, password=_passphrase(passphrase_env))
    except TypeError:
        raise SigningError(
            f"{path} is encrypted: set {passphrase_env or PASSPHRASE_ENV} to its passphrase"
        ) from None
    except ValueError:
        raise SigningError(f"{path} is not a PEM private key (or the passphrase is wrong)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path} is not an Ed25519 key")
    return key


def public_key_from_text(text: str) -> bytes:
    """A public key as the device config holds it (64 hex digits), or a ``.pub`` file's content."""
    value = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise SigningError("a release public key is 64 hex digits (the .pub file `twomes keys new` writes)")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
    except ValueError:
        raise SigningError("that is not an Ed25519 public key") from None
    return bytes.fromhex(value)


def manifest_text(device_type: str, kind: str, version: str, counter: int, size: int, sha256: str) -> str:
    """The exact text that is signed (the device's ``signing.canonical`` gives the same)."""
    if not _VERSION.match(version):
        raise SigningError(f"version {version!r}: 1..64 of [0-9A-Za-z._+-], starting with a letter or digit")
    if not 0 <= counter <= COUNTER_MAX:
        raise SigningError(f"--counter must be 0..{COUNTER_MAX}")
    if not (0 < len(device_type) <= 64 and all(" " <= c <= "~" for c in device_type)):
        raise SigningError("device type: 1..64 printable ASCII characters")
    if (
        kind not in ("bundle", "image")
        or not 0 < size <= COUNTER_MAX
        or not re.fullmatch(r"[0-9a-f]{64}", sha256)
    ):
        raise SigningError("kind, size or sha256 out of bounds")
    manifest = {
        "counter": counter,
        "device_type": device_type,
        "kind": kind,
        "sha256": sha256,
        "size": size,
        "version": version,
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"))


def sign_text(key: Ed25519PrivateKey, text: str) -> str:
    return key.sign(text.encode()).hex()


def verify_text(public: bytes, text: str, signature_hex: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public).verify(bytes.fromhex(signature_hex), text.encode())
    except (InvalidSignature, ValueError):
        return False
    return True


def sign_file(
    key: Ed25519PrivateKey, path: Path, device_type: str, kind: str, version: str, counter: int
) -> tuple[str, str]:
    """(manifest text, signature hex) for a release file."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            h.update(chunk)
            size += len(chunk)
    text = manifest_text(device_type, kind, version, counter, size, h.hexdigest())
    return text, sign_text(key, text)


def add_signing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key", metavar="FILE", help="sign the release manifest with this key (`twomes keys new`)"
    )
    p.add_argument(
        "--counter",
        type=int,
        metavar="N",
        help="security counter of the release (with --key): devices refuse releases with a lower "
        "counter than what they installed; raise it when an older release must never come back",
    )
    p.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help=f"environment variable with the key's passphrase (default {PASSPHRASE_ENV} if set)",
    )


def signing_from_args(args: argparse.Namespace) -> Ed25519PrivateKey | None:
    """The key given with --key (and a check that --counter came with it), or None."""
    if args.key is None:
        if args.counter is not None:
            raise SigningError("--counter needs --key (the counter is part of the signed manifest)")
        return None
    if args.counter is None:
        raise SigningError("--key needs --counter N (the release's security counter)")
    return load_key(Path(args.key), args.passphrase_env)


# ---- CLI --------------------------------------------------------------------------------------------


def cmd_new(args: argparse.Namespace) -> int:
    path = Path(args.out)
    pub = new_key(path, args.passphrase_env, args.force)
    print(f"private key: {path} (mode 0600; keep it offline, it signs what every device installs)")
    print(f"public key:  {path}.pub")
    print("device config (twomes.json):")
    print(json.dumps({"release_keys": [pub]}))
    print(f"deploy it with: twomes deploy --release-key {path}.pub")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    print(public_hex(load_key(Path(args.file), args.passphrase_env)))
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return int(args.keys_func(args))
    except SigningError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "keys",
        help="release signing keys (Ed25519): make one, show its public key",
        description="Release signing keys. See docs/security.md for keeping, deploying and rotating them.",
    )
    ks = p.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    n = ks.add_parser("new", help="make a key pair; prints the public key for the device config")
    n.add_argument("--out", default="keys/release.key", help="private key file (default keys/release.key)")
    n.add_argument("--force", action="store_true", help="overwrite an existing key file")
    n.add_argument("--passphrase-env", metavar="VAR", help="encrypt the key with the passphrase in $VAR")
    n.set_defaults(func=run, keys_func=cmd_new)
    s = ks.add_parser("show", help="print the public key (device config form) of a private key file")
    s.add_argument("file")
    s.add_argument("--passphrase-env", metavar="VAR", help="the key's passphrase is in $VAR")
    s.set_defaults(func=run, keys_func=cmd_show)
