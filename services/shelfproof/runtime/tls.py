"""The one owner of certificates: the development CA, the certificates it issues, the revocation list,
and the gRPC credentials built from them.

A certificate names its holder's organisation (GLN) and role in one SAN URI,
``spiffe://shelfproof.dev/org/<gln>/role/<role>``, which ``runtime/identity.py`` reads on every call.
Certificates are short-lived; servers reload their certificate, key and CA bundle when the files change
(``grpc.dynamic_ssl_server_credentials``), so rotating one needs no restart and drops no connection.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "shelfproof.dev"
# The development CA says so in its name: a service outside development refuses to trust it.
DEV_CA_NAME = "shelfproof development CA"
DEFAULT_VALIDITY = dt.timedelta(hours=24)
CA_VALIDITY = dt.timedelta(days=365)
_IDENTITY_URI = re.compile(rf"^spiffe://{re.escape(TRUST_DOMAIN)}/org/([0-9]{{13}})/role/([a-z][a-z0-9-]{{0,31}})$")


@dataclass(frozen=True)
class Identity:
    """Who a certificate speaks for."""

    organization_gln: str
    role: str
    serial: int
    # the handshake checked validity once; a connection can outlive it, so each call checks again
    not_after: dt.datetime | None = None


def identity_uri(organization_gln: str, role: str) -> str:
    uri = f"spiffe://{TRUST_DOMAIN}/org/{organization_gln}/role/{role}"
    if not _IDENTITY_URI.match(uri):
        raise ValueError(f"not an identity: organisation {organization_gln!r}, role {role!r}")
    return uri


def identity_of(certificate: x509.Certificate) -> Identity | None:
    """The identity a certificate's SAN URI names, or None when it names none (or more than one)."""
    try:
        uris = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        return None
    matches = [m for m in (_IDENTITY_URI.match(u) for u in uris) if m]
    if len(matches) != 1:
        return None
    return Identity(matches[0].group(1), matches[0].group(2), certificate.serial_number, certificate.not_valid_after_utc)


def is_development_ca(ca_file: Path) -> bool:
    """Whether the CA bundle holds the development CA (a service outside development refuses it)."""
    for certificate in x509.load_pem_x509_certificates(ca_file.read_bytes()):
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if any(n.value == DEV_CA_NAME for n in names):
            return True
    return False


@dataclass(frozen=True)
class CertifiedKey:
    """A certificate and its private key, as files (PEM; the key readable by its owner only)."""

    cert_file: Path
    key_file: Path


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(path.suffix + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(path.with_suffix(path.suffix + ".tmp"), path)  # a reader never sees half a file


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(path.suffix + ".tmp").write_bytes(data)
    os.replace(path.with_suffix(path.suffix + ".tmp"), path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class DevCertificateAuthority:
    """The development CA that ``shelfproof up`` creates once under its state dir (ECDSA P-256): ``ca.pem``,
    ``ca.key`` (0600), ``crl.pem`` (its revocation list), and the certificates it issues beside them."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self.directory = directory
        self._key = key
        self.certificate = certificate
        self._lock = threading.Lock()

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def crl_file(self) -> Path:
        return self.directory / "crl.pem"

    @classmethod
    def create_or_load(cls, directory: Path, *, name: str = DEV_CA_NAME) -> "DevCertificateAuthority":
        directory = directory.resolve()
        key_file, cert_file = directory / "ca.key", directory / "ca.pem"
        if key_file.exists() and cert_file.exists():
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            ca = cls(directory, key, x509.load_pem_x509_certificate(cert_file.read_bytes()))
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
            now = dt.datetime.now(dt.timezone.utc)
            certificate = (
                x509.CertificateBuilder()
                .subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + CA_VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256())
            )
            _write_private(key_file, _pem_key(key))
            _write_public(cert_file, certificate.public_bytes(serialization.Encoding.PEM))
            ca = cls(directory, key, certificate)
        if not ca.crl_file.exists():
            ca._write_crl([])
        return ca

    def issue(
        self,
        name: str,
        organization_gln: str,
        role: str,
        *,
        validity: dt.timedelta = DEFAULT_VALIDITY,
        not_before: dt.datetime | None = None,
    ) -> CertifiedKey:
        """A certificate for ``name`` (a service or an organisation's system) good as a server on loopback and
        as a client, bound to ``organization_gln`` and ``role``; written as ``<name>.pem`` / ``<name>.key``."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", name):
            raise ValueError(f"certificate name {name!r}")
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization_gln),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{name} ({role})"),
            ]))
            .issuer_name(self.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.UniformResourceIdentifier(identity_uri(organization_gln, role)),
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        issued = CertifiedKey(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        # key first: a reloading server that sees the new certificate must find its key already there
        _write_private(issued.key_file, _pem_key(key))
        _write_public(issued.cert_file, certificate.public_bytes(serialization.Encoding.PEM))
        return issued

    def revoke(self, cert_file: Path) -> None:
        """Add a certificate to the revocation list (servers read the new list on their next call)."""
        serial = x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number
        with self._lock:
            revoked = load_revoked_serials(self.crl_file, self.certificate)
            self._write_crl(sorted(revoked | {serial}))

    def _write_crl(self, serials: list[int]) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject).last_update(now).next_update(now + CA_VALIDITY)
        )
        for serial in serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        crl = builder.sign(self._key, hashes.SHA256())
        _write_public(self.crl_file, crl.public_bytes(serialization.Encoding.PEM))


def load_revoked_serials(crl_file: Path, issuer: x509.Certificate) -> frozenset[int]:
    """The serials a CRL revokes, once its signature is checked against ``issuer``; a list that is not
    the issuer's raises ValueError (a server then refuses to start or keeps its last good list)."""
    crl = x509.load_pem_x509_crl(crl_file.read_bytes())
    if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):
        raise ValueError(f"{crl_file} is not signed by {issuer.subject.rfc4514_string()}")
    return frozenset(r.serial_number for r in crl)


class RevocationList:
    """A CRL file, read again when it changes (mtime and size), so a revocation needs no restart."""

    def __init__(self, crl_file: Path, ca_file: Path) -> None:
        self._crl_file = crl_file
        self._ca_file = ca_file
        self._stamp: tuple[int, int] | None = None
        self._revoked: frozenset[int] = frozenset()
        self._refresh()

    def _refresh(self) -> None:
        stat = self._crl_file.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        issuers = x509.load_pem_x509_certificates(self._ca_file.read_bytes())
        for issuer in issuers:
            try:
                self._revoked = load_revoked_serials(self._crl_file, issuer)
                break
            except ValueError:
                continue
        else:
            if self._stamp is None:
                raise ValueError(f"{self._crl_file} is signed by no CA of {self._ca_file}")
            return  # a bad new list: keep the last good one (the file watcher logs nothing secret)
        self._stamp = stamp

    def is_revoked(self, serial: int) -> bool:
        try:
            self._refresh()
        except (OSError, ValueError):
            pass  # the list being replaced or unreadable: the last good one holds
        return serial in self._revoked


def matching_pair(cert_file: Path, key_file: Path) -> tuple[bytes, bytes]:
    """The certificate and key files' bytes, once the key is checked to be the certificate's: a reader that
    catches a rotation between the two writes gets ValueError (and keeps what it had) instead of a pair
    that fails every handshake."""
    cert, key = cert_file.read_bytes(), key_file.read_bytes()
    public = serialization.load_pem_private_key(key, password=None).public_key()
    if x509.load_pem_x509_certificate(cert).public_key() != public:
        raise ValueError(f"{key_file} is not the key of {cert_file}")
    return cert, key


def files_stamp(paths: tuple[Path, ...]) -> tuple:
    """What changes when any of the files is replaced (mtime and size)."""
    return tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in paths)


class ReloadingServerCredentials:
    """Server credentials that require a client certificate from the CA bundle and pick up a new
    certificate, key or bundle on the next handshake after the files change."""

    def __init__(self, cert_file: Path, key_file: Path, ca_file: Path) -> None:
        self._files = (cert_file, key_file, ca_file)
        self._stamp = files_stamp(self._files)
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self._configuration(), self._fetch, require_client_authentication=True
        )

    def _configuration(self):
        cert, key = matching_pair(self._files[0], self._files[1])
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=self._files[2].read_bytes())

    def _fetch(self):
        """Called by gRPC before each handshake: a new configuration when the files changed, else None."""
        try:
            stamp = files_stamp(self._files)
            if stamp == self._stamp:
                return None
            configuration = self._configuration()  # a pair caught mid-rotation waits for the next handshake
        except (OSError, ValueError):
            return None
        self._stamp = stamp
        return configuration


def server_ssl_context(cert_file: Path, key_file: Path, ca_file: Path) -> ssl.SSLContext:
    """For an HTTP port of a service (the EPCIS REST binding): TLS 1.2 or later, client certificates from the CA
    bundle required. Read once: a rotated certificate is served after the process restarts."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cafile=ca_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(cert_file: Path, key_file: Path, ca_file: Path) -> ssl.SSLContext:
    """A client identity for an HTTPS port of ours (the EPCIS REST binding): server checked against the bundle."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.load_cert_chain(cert_file, key_file)
    return context


def channel_credentials(cert_file: Path, key_file: Path, ca_file: Path) -> grpc.ChannelCredentials:
    """A client identity: its certificate and key, and the CA bundle that server certificates must chain to."""
    cert, key = matching_pair(cert_file, key_file)
    return grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes(), private_key=key, certificate_chain=cert)
