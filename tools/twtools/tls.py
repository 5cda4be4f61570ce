"""TLS material for the reference server and for tests, made with the ``cryptography`` package.

``server_files(tls_dir)`` is what ``twomes server run --tls`` uses: a local CA (made once and kept) and
a server certificate for ``localhost``, ``127.0.0.1`` and ``::1`` signed by it (renewed when it nears
its end or does not chain to the CA). Private keys are written with mode 0600. ``twomes server ca``
exports the CA certificate in DER, the form the device's ``ca_file`` takes.

``make_test_certs(dir)`` makes throw-away material for tests of the device's TLS client: a CA and, for
127.0.0.1/localhost, a good certificate, a self-signed one, one for another name, an expired one and
one from another CA. Keys are ECDSA P-256: the smallest handshake for mbedTLS on the device.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept at most; renewed automatically 30 days before its end
RENEW_BEFORE = dt.timedelta(days=30)
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class ServerTls:
    certfile: Path  # server certificate (PEM), the CA after it
    keyfile: Path  # server key (PEM, 0600)
    ca_pem: Path
    ca_der: Path  # what the device trusts (config ca_file)


@dataclass(frozen=True)
class Issued:
    key: EllipticCurvePrivateKey
    cert: x509.Certificate


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def new_key() -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(common: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Twomes"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _san(names: tuple[str, ...] | list[str]) -> x509.SubjectAlternativeName:
    from cryptography import x509

    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def new_ca(
    common: str = "Twomes local CA", days: int = CA_DAYS, not_before: dt.datetime | None = None
) -> Issued:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = new_key()
    start = not_before or _now() - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue(
    ca: Issued | None,
    names: tuple[str, ...] | list[str] = SERVER_NAMES,
    days: int = SERVER_DAYS,
    not_before: dt.datetime | None = None,
) -> Issued:
    """A server certificate for ``names`` signed by ``ca`` (self-signed when ``ca`` is None)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = new_key()
    start = not_before or _now() - dt.timedelta(minutes=5)
    subject = _name(names[0])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject if ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    cert = builder.sign(ca.key if ca else key, hashes.SHA256())
    return Issued(key, cert)


def key_pem(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def cert_der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.DER)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file with mode 0600 (atomically: never a half-written or world-readable key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _load(cert_path: Path, key_path: Path) -> Issued | None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, EllipticCurvePrivateKey):
        return None
    return Issued(key, cert)


def ensure_ca(tls_dir: Path) -> Issued:
    """The local CA in ``tls_dir`` (made on first use, then kept: devices trust it)."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca = _load(tls_dir / "ca.pem", tls_dir / "ca.key")
    if ca is None or ca.cert.not_valid_after_utc <= _now():
        if (tls_dir / "ca.pem").exists() and ca is not None:
            print(
                f"note: the CA in {tls_dir} has expired: a new one is made; deploy its ca.der to the devices"
            )
        ca = new_ca()
        write_private(tls_dir / "ca.key", key_pem(ca.key))
        _write(tls_dir / "ca.pem", cert_pem(ca.cert))
    _write(tls_dir / "ca.der", cert_der(ca.cert))
    return ca


def _chains_to(cert: x509.Certificate, ca: Issued) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def server_files(tls_dir: Path, names: tuple[str, ...] = SERVER_NAMES) -> ServerTls:
    """CA + server certificate for ``twomes server run --tls`` (made or renewed as needed)."""
    from cryptography import x509

    ca = ensure_ca(tls_dir)
    cert_path, key_path = tls_dir / "server.pem", tls_dir / "server.key"
    current = _load(cert_path, key_path)
    fresh = False
    if current is not None:
        try:
            have = current.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            fresh = (
                _chains_to(current.cert, ca)
                and current.cert.not_valid_after_utc - RENEW_BEFORE > _now()
                and have == _san(names)
            )
        except x509.ExtensionNotFound:
            fresh = False
    if not fresh:
        server = issue(ca, names)
        write_private(key_path, key_pem(server.key))
        _write(cert_path, cert_pem(server.cert) + cert_pem(ca.cert))
    return ServerTls(cert_path, key_path, tls_dir / "ca.pem", tls_dir / "ca.der")


def make_test_certs(out: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> dict[str, Path]:
    """Throw-away material for TLS tests, written to ``out``. Keys of the result:
    ``ca_der``/``ca_pem`` (the CA a device would trust) and, for each case, ``<case>_cert`` (PEM chain)
    and ``<case>_key``: ``good`` (CA-signed, right names), ``self_signed``, ``wrong_name`` (CA-signed,
    for attacker.example), ``expired`` (CA-signed, ended yesterday), ``other_ca`` (right names, another
    CA)."""
    out.mkdir(parents=True, exist_ok=True)
    ca = new_ca("Twomes test CA")
    other = new_ca("Someone else's CA")
    long_ago = _now() - dt.timedelta(days=30)
    cases = {
        "good": (issue(ca, names), ca),
        "self_signed": (issue(None, names), None),
        "wrong_name": (issue(ca, ("attacker.example",)), ca),
        "expired": (issue(ca, names, days=29, not_before=long_ago), ca),
        "other_ca": (issue(other, names), other),
    }
    paths = {"ca_der": out / "ca.der", "ca_pem": out / "ca.pem"}
    _write(paths["ca_der"], cert_der(ca.cert))
    _write(paths["ca_pem"], cert_pem(ca.cert))
    for case, (leaf, issuer) in cases.items():
        paths[f"{case}_cert"] = out / f"{case}.pem"
        paths[f"{case}_key"] = out / f"{case}.key"
        chain = cert_pem(leaf.cert) + (cert_pem(issuer.cert) if issuer is not None else b"")
        _write(paths[f"{case}_cert"], chain)
        write_private(paths[f"{case}_key"], key_pem(leaf.key))
    return paths
