"""TLS certificates for the backup transports (pgBackRest's TLS server, rest-server),
issued on the control node by the environment's backup CA.

The CA is data (`backup_ca = {"cert": path, "key": path}`, relative to the repository
or absolute): the local topology uses the harness's root CA (.lab/ca); an environment
without one gets a dedicated CA created once in its PKI directory. Issued certificates
and keys are kept in the PKI directory and reused, so an apply uploads the same files
again (no change) until a certificate nears expiry, its names change or the CA does.

PKI directory: $CODEB_PKI_DIR, else .lab/pki/<env> for local and
~/.config/codeb/pki/<env> elsewhere (next to the age identity; back it up with it).
Private keys are uploaded with roles.files.put_secret only.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VALID_DAYS = 825
RENEW_DAYS = 30


@dataclass(frozen=True)
class Issued:
    cert: str  # PEM
    key: str  # PEM (secret)
    ca: str  # PEM of the issuing CA


def pki_dir(env: str) -> Path:
    override = os.environ.get("CODEB_PKI_DIR")
    if override:
        return Path(override) / env
    if env == "local":
        return REPO / ".lab" / "pki" / env
    return Path.home() / ".config" / "codeb" / "pki" / env


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO / p


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def load_ca(env: str, ca: dict | None):
    """(certificate, private key) of the environment's backup CA, creating a dedicated one
    in the PKI directory when the data names none."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if ca:
        cert_path, key_path = _resolve(ca["cert"]), _resolve(ca["key"])
    else:
        cert_path, key_path = pki_dir(env) / "ca.crt", pki_dir(env) / "ca.key"
        if not cert_path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"codeb {env} backup CA")])
            now = _now()
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                    .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                 content_commitment=False, key_encipherment=False,
                                                 data_encipherment=False, key_agreement=False,
                                                 encipher_only=False, decipher_only=False), critical=True)
                    .sign(key, hashes.SHA256()))
            _write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if not cert_path.exists() or not key_path.exists():
        raise FileNotFoundError(f"backup CA: {cert_path} or {key_path} is missing")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return cert, key


def ca_pem(env: str, ca: dict | None) -> str:
    """The backup CA's certificate (what clients trust)."""
    from cryptography.hazmat.primitives import serialization

    return load_ca(env, ca)[0].public_bytes(serialization.Encoding.PEM).decode()


def _usable(cert, ca_cert, names: list[str]) -> bool:
    from cryptography import x509

    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if sorted(san.get_values_for_type(x509.DNSName)) != sorted(names):
        return False
    return cert.not_valid_after_utc - _now() > dt.timedelta(days=RENEW_DAYS)


def issue(env: str, ca: dict | None, name: str, dns_names: list[str]) -> Issued:
    """A certificate for `dns_names` (first one is the CN), valid as TLS server and client,
    reused from the PKI directory while it stays valid for these names and this CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert, ca_key = load_ca(env, ca)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    d = pki_dir(env)
    cert_path, key_path = d / f"{name}.crt", d / f"{name}.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if _usable(cert, ca_cert, dns_names):
            return Issued(cert=cert_path.read_text(), key=key_path.read_text(), ca=ca_pem)

    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=VALID_DAYS), ca_cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(ca_key, hashes.SHA256()))
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Issued(cert=cert_path.read_text(), key=key_path.read_text(), ca=ca_pem)
