"""Throw-away TLS material for tests: a CA, a broker certificate, a good and a rogue client.

make_tls_material(dir) writes PEM files and returns their paths. The rogue client
certificate is signed by a second, unrelated CA with the same subject name as the real
one, so a broker that accepts it would be checking names rather than signatures.
Keys are ECDSA P-256: fast to make (the fixture runs per test) and accepted by every
OpenSSL build Mosquitto and Python's ssl module link against. Key files are 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsMaterial:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca_cert: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "coopagent tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Mode 0600 from creation, as a real key file must be."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: x509.Name, issuer: x509.Name,
             key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2)))


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (_builder(_name(cn), _name(cn), key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(cn: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, server: bool,
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    b = (_builder(_name(cn), ca.subject, key)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                        critical=False))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def make_tls_material(directory: Path, client_cn: str = "demo-society/branch-1/agent-1") -> TlsMaterial:
    """Write a CA, a server cert for localhost/127.0.0.1, a client cert from that CA and a
    client cert from an unrelated CA (same CA name) into directory; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    m = TlsMaterial(*(directory / n for n in (
        "ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key",
        "rogue-ca.crt", "rogue-client.crt", "rogue-client.key")))
    ca, ca_key = _ca("coopagent test CA")
    rogue_ca, rogue_key = _ca("coopagent test CA")
    server, server_key = _leaf("localhost", ca, ca_key, server=True)
    client, client_key = _leaf(client_cn, ca, ca_key, server=False)
    rogue, rogue_client_key = _leaf(client_cn, rogue_ca, rogue_key, server=False)
    for path, cert in ((m.ca_cert, ca), (m.server_cert, server), (m.client_cert, client),
                       (m.rogue_ca_cert, rogue_ca), (m.rogue_client_cert, rogue)):
        _write_cert(path, cert)
    for path, key in ((m.ca_key, ca_key), (m.server_key, server_key), (m.client_key, client_key),
                      (m.rogue_client_key, rogue_client_key)):
        _write_key(path, key)
    return m


def make_client_cert(m: TlsMaterial, cert_path: Path, key_path: Path, *, not_before: dt.datetime,
                     not_after: dt.datetime, cn: str = "demo-society/branch-1/agent-1") -> None:
    """A client certificate from m's CA with the given validity: an expired one, one about to expire."""
    ca = x509.load_pem_x509_certificate(m.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(m.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_cert(cert_path, cert)
    _write_key(key_path, key)
