"""Key material the sandbox needs: a private CA for HTTPS and an RSA key for the JWT flow.

simple-salesforce builds ``https://`` URLs itself, so the fake Salesforce must speak TLS with a
certificate the product can be told to trust (``verify=ca_file``). Files are reused when they
are already in ``state_dir`` and still valid, so a product configured once keeps working
across sandbox restarts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "sandbox-ca.pem"
CA_KEY_FILE = "sandbox-ca-key.pem"
SERVER_CERT_FILE = "salesforce-server.pem"
SERVER_KEY_FILE = "salesforce-server-key.pem"
JWT_KEY_FILE = "salesforce-jwt-key.pem"
JWT_PUBLIC_FILE = "salesforce-jwt-public.pem"


@dataclass(frozen=True)
class KeyMaterial:
    """Paths written to ``state_dir`` plus the public key the token endpoint verifies with."""

    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    jwt_private_key_file: Path
    jwt_public_key_file: Path
    jwt_public_key: rsa.RSAPublicKey


def _write_private(path: Path, key: PrivateKeyTypes) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _load_private(path: Path) -> PrivateKeyTypes | None:
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _still_valid(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_after_utc - now > dt.timedelta(days=7)


def _existing_tls(state_dir: Path, now: dt.datetime) -> bool:
    ca = _load_cert(state_dir / CA_FILE)
    server = _load_cert(state_dir / SERVER_CERT_FILE)
    key = _load_private(state_dir / SERVER_KEY_FILE)
    if ca is None or server is None or key is None:
        return False
    if not (_still_valid(ca, now) and _still_valid(server, now)):
        return False
    try:
        server.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return server.public_key() == key.public_key()


def _generate_tls(state_dir: Path, now: dt.datetime) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DSAR sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, "DSAR sandbox local CA"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(ca_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(state_dir / CA_KEY_FILE, ca_key)
    _write_private(state_dir / SERVER_KEY_FILE, server_key)
    (state_dir / CA_FILE).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    # The chain file holds the leaf then the CA, as TLS servers conventionally send it.
    (state_dir / SERVER_CERT_FILE).write_bytes(
        server_cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )


def _jwt_key(state_dir: Path) -> rsa.RSAPrivateKey:
    existing = _load_private(state_dir / JWT_KEY_FILE)
    if isinstance(existing, rsa.RSAPrivateKey) and existing.key_size >= 2048:
        key = existing
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(state_dir / JWT_KEY_FILE, key)
    (state_dir / JWT_PUBLIC_FILE).write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key


def ensure_key_material(state_dir: Path) -> KeyMaterial:
    """Create (or reuse) the CA, the 127.0.0.1/localhost server certificate and the JWT key."""
    state_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    if not _existing_tls(state_dir, now):
        _generate_tls(state_dir, now)
    jwt_key = _jwt_key(state_dir)
    return KeyMaterial(
        ca_file=(state_dir / CA_FILE).resolve(),
        server_cert_file=(state_dir / SERVER_CERT_FILE).resolve(),
        server_key_file=(state_dir / SERVER_KEY_FILE).resolve(),
        jwt_private_key_file=(state_dir / JWT_KEY_FILE).resolve(),
        jwt_public_key_file=(state_dir / JWT_PUBLIC_FILE).resolve(),
        jwt_public_key=jwt_key.public_key(),
    )
