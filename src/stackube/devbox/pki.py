"""The devbox's PKI: one CA, serving and client certificates, service-account keys.

Certificate issuance is pure (keys and certificates in, PEM bytes out); `PkiStore`
writes them to disk once and reuses them while they stay valid and still match what
is asked for (names, SANs), so `up` is idempotent.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stackube.devbox.fsutil import write_atomic

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertSpec:
    """What a certificate must say. `server`/`client` choose the extended key usages."""

    name: str
    common_name: str
    organizations: Sequence[str] = ()
    dns_names: Sequence[str] = ()
    ip_addresses: Sequence[str] = ()
    server: bool = False
    client: bool = False


@dataclass(frozen=True)
class Issued:
    key_pem: bytes
    cert_pem: bytes


@dataclass(frozen=True)
class CertPaths:
    cert: Path
    key: Path


def _subject(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue_ca(common_name: str, now: datetime.datetime) -> Issued:
    key = _new_key()
    name = _subject(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def issue_leaf(spec: CertSpec, ca: Issued, now: datetime.datetime) -> Issued:
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the devbox CA key must be an EC key")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = _new_key()
    usages = []
    if spec.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if spec.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(spec.common_name, spec.organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def leaf_matches(cert_pem: bytes, spec: CertSpec, ca_pem: bytes, now: datetime.datetime) -> bool:
    """True if an existing certificate still says what `spec` asks, is issued by this
    CA and is not close to expiry."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    if cert.issuer != ca.subject or cert.subject != _subject(spec.common_name, spec.organizations):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < now:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = set(san.get_values_for_type(x509.DNSName))
        ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        dns, ips = set(), set()
    return dns == set(spec.dns_names) and ips == set(spec.ip_addresses)


def service_account_keypair() -> Issued:
    """An EC key pair for signing service-account tokens (ES256): private key and
    public key as PEM (the "cert" slot holds the public key)."""
    key = _new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Issued(_key_pem(key), public)


@dataclass
class PkiStore:
    """Certificates on disk under one directory: `<name>.crt` and `<name>.key`."""

    directory: Path
    _ca: Issued | None = field(default=None, init=False, repr=False)

    def paths(self, name: str) -> CertPaths:
        return CertPaths(self.directory / f"{name}.crt", self.directory / f"{name}.key")

    @property
    def ca_paths(self) -> CertPaths:
        return self.paths("ca")

    def ensure_ca(self, now: datetime.datetime | None = None) -> Issued:
        now = now or datetime.datetime.now(datetime.UTC)
        paths = self.ca_paths
        if paths.cert.exists() and paths.key.exists():
            ca = Issued(paths.key.read_bytes(), paths.cert.read_bytes())
            if x509.load_pem_x509_certificate(ca.cert_pem).not_valid_after_utc - RENEW_BEFORE > now:
                self._ca = ca
                return ca
        ca = issue_ca("stackube-devbox-ca", now)
        write_atomic(paths.key, ca.key_pem, 0o600)
        write_atomic(paths.cert, ca.cert_pem, 0o600)
        self._ca = ca
        return ca

    def ensure_leaf(self, spec: CertSpec, now: datetime.datetime | None = None) -> CertPaths:
        now = now or datetime.datetime.now(datetime.UTC)
        ca = self._ca or self.ensure_ca(now)
        paths = self.paths(spec.name)
        if (
            paths.cert.exists()
            and paths.key.exists()
            and leaf_matches(paths.cert.read_bytes(), spec, ca.cert_pem, now)
        ):
            return paths
        issued = issue_leaf(spec, ca, now)
        write_atomic(paths.key, issued.key_pem, 0o600)
        write_atomic(paths.cert, issued.cert_pem, 0o600)
        return paths

    def ensure_keypair(self, name: str) -> CertPaths:
        """A signing key pair (`<name>.key`, `<name>.pub`), created once."""
        paths = CertPaths(self.directory / f"{name}.pub", self.directory / f"{name}.key")
        if not (paths.cert.exists() and paths.key.exists()):
            pair = service_account_keypair()
            write_atomic(paths.key, pair.key_pem, 0o600)
            write_atomic(paths.cert, pair.cert_pem, 0o600)
        return paths
