"""TLS for the reference server (`twomes server run --tls`, `twomes server ca`) and the throw-away
certificates of twtools.tls.make_test_certs, checked with CPython's ssl and with the MicroPython unix
port's own ssl module (mbedTLS, CERT_REQUIRED): the good certificate is accepted, a self-signed one, one
for another name, an expired one and one from another CA are refused. Real sockets on 127.0.0.1 only."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from twtools import tls
from twtools.server.testing import ReferenceServer
from twtools.vboard.runner import micropython_bin


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_server_runs_https_with_its_local_ca_kept_across_restarts(tmp_path: Path) -> None:
    with ReferenceServer(tmp_path, tls=True) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        assert srv.client.device_types()[0]["name"] == "Generic-Test"  # admin API over verified TLS
        d = srv.tls_dir
        assert _mode(d / "ca.key") == 0o600 and _mode(d / "server.key") == 0o600
        ca_der = (d / "ca.der").read_bytes()
        server_pem = (d / "server.pem").read_bytes()
        # no CA, no connection: the certificate is not from a public CA
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(srv.url + "/openapi.json", trust_env=False)
        # plain http to the https port gets no API answer
        with pytest.raises(httpx.HTTPError):
            r = httpx.get(srv.url.replace("https://", "http://") + "/openapi.json", trust_env=False)
            r.raise_for_status()
        srv.restart()
        assert srv.url.startswith("https://")
        assert srv.client.releases() == []
        assert (d / "ca.der").read_bytes() == ca_der  # the devices' trust anchor never changes by itself
        assert (d / "server.pem").read_bytes() == server_pem
    cert = x509.load_pem_x509_certificate(server_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost"}
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    ca = x509.load_der_x509_certificate(ca_der)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca)


def test_server_ca_command_exports_der(tmp_path: Path) -> None:
    db = tmp_path / "data" / "twomes.sqlite3"
    out = tmp_path / "ca.der"
    r = subprocess.run(
        [sys.executable, "-m", "twtools.cli", "server", "ca", "--db", str(db), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (tmp_path / "data" / "tls" / "ca.der").read_bytes()
    assert x509.load_der_x509_certificate(out.read_bytes()).subject.rfc4514_string().endswith("O=Twomes")
    assert _mode(tmp_path / "data" / "tls" / "ca.key") == 0o600
    # the same CA again (made once)
    r = subprocess.run(
        [sys.executable, "-m", "twtools.cli", "server", "ca", "--db", str(db), "--pem"],
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0
    pem_cert = x509.load_pem_x509_certificate(r.stdout)
    assert pem_cert == x509.load_der_x509_certificate(out.read_bytes())


def test_server_certificate_renewed_when_it_no_longer_fits(tmp_path: Path) -> None:
    first = tls.server_files(tmp_path)
    pem = first.certfile.read_bytes()
    assert tls.server_files(tmp_path).certfile.read_bytes() == pem  # kept while good
    stranger = tls.issue(tls.new_ca("other"))
    first.certfile.write_bytes(tls.cert_pem(stranger.cert))
    first.keyfile.write_bytes(tls.key_pem(stranger.key))
    again = tls.server_files(tmp_path)
    renewed = x509.load_pem_x509_certificate(again.certfile.read_bytes())
    renewed.verify_directly_issued_by(x509.load_der_x509_certificate(again.ca_der.read_bytes()))
    assert _mode(again.keyfile) == 0o600
    other_names = tls.server_files(tmp_path, ("twomes.example",))
    cert = x509.load_pem_x509_certificate(other_names.certfile.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["twomes.example"]


def _serve_once(cert: Path, key: Path) -> tuple[int, threading.Thread]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(30)

    def run() -> None:
        try:
            conn, _ = lsock.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as s:
                    s.sendall(b"hello")
            except (ssl.SSLError, OSError):
                pass
        finally:
            lsock.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return lsock.getsockname()[1], t


_MP_CLIENT = """
import socket, ssl, sys
port = int(sys.argv[1])
with open(sys.argv[2], "rb") as f:
    ca = f.read()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(cadata=ca)
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
try:
    ss = ctx.wrap_socket(s, server_hostname=sys.argv[3])
    print("OK", ss.read(5))
except Exception as e:
    print("REFUSED", repr(e))
finally:
    s.close()
"""


@pytest.mark.parametrize(
    "case,accepted,why",
    [
        ("good", True, ""),
        ("self_signed", False, "not correctly signed by the trusted CA"),
        ("wrong_name", False, "does not match with the expected CN"),
        ("expired", False, "validity has expired"),
        ("other_ca", False, "not correctly signed by the trusted CA"),
    ],
)
def test_test_certificates_on_both_tls_stacks(tmp_path: Path, case: str, accepted: bool, why: str) -> None:
    p = tls.make_test_certs(tmp_path)
    assert _mode(p[f"{case}_key"]) == 0o600
    # CPython
    port, t = _serve_once(p[f"{case}_cert"], p[f"{case}_key"])
    ctx = ssl.create_default_context(cafile=str(p["ca_pem"]))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                got = s.recv(5)
        ok = got == b"hello"
    except ssl.SSLCertVerificationError:
        ok = False
    t.join(10)
    assert ok is accepted
    # the MicroPython unix port (the device's ssl module), trusting the CA in DER like the device
    script = tmp_path / "client.py"
    script.write_text(_MP_CLIENT)
    for host in ("127.0.0.1", "localhost"):
        port, t = _serve_once(p[f"{case}_cert"], p[f"{case}_key"])
        r = subprocess.run(
            [micropython_bin(), str(script), str(port), str(p["ca_der"]), host],
            capture_output=True,
            text=True,
            timeout=60,
        )
        t.join(10)
        assert r.stdout.startswith("OK b'hello'" if accepted else "REFUSED"), (host, r.stdout, r.stderr)
        assert why in r.stdout, (host, r.stdout)
