"""The platform CA and the internal TLS certificates it issues (pgBackRest, rest-server,
PostgreSQL), on the control node, deterministically.

The CA is a secret of the environment: its private key is the secret `platform_ca_key`
(created once by `make secrets ENV=<env>`, kept in the encrypted secrets file like every
other secret), and its certificate is derived from that key. An environment may instead
name CA files as data (`backup_ca = {"cert": path, "key": path}`, relative to the
repository or absolute): the local topology uses the harness's root CA (.lab/ca). Nothing
here ever creates a CA: an apply without one stops with a line naming `make secrets`.

Every certificate, and its key, is a pure function of the CA key, the certificate's name
and DNS names, and the current validity period (one year, certificates valid for two):
any control node, a CI runner with an empty home included, issues byte-identical files,
so an apply uploads nothing new and restarts nothing until the period turns (once a year)
or the names change. ECDSA P-256 with deterministic signatures (RFC 6979); leaf keys are
derived from the CA key with HMAC-SHA512.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECRET_CA_KEY = "platform_ca_key"
# The derived CA certificate's fixed validity (it changes only with its key).
CA_NOT_BEFORE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
CA_NOT_AFTER = dt.datetime(2046, 1, 1, tzinfo=dt.timezone.utc)
PERIOD = dt.timedelta(days=365)
# P-256's group order: derived private scalars are reduced into [1, n-1].
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class CAError(Exception):
    """The environment has no CA: one line naming what to run."""


@dataclass(frozen=True)
class Issued:
    cert: str  # PEM
    key: str  # PEM (secret)
    ca: str  # PEM of the issuing CA


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO / p


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _ecdsa():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


def new_ca_key_pem() -> str:
    """A new CA private key (PEM), for `make secrets`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _ca_cert_from_key(env: str, key):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"codeb {env} platform CA")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(int.from_bytes(hashlib.sha256(public).digest()[:16], "big") | 1)
            .not_valid_before(CA_NOT_BEFORE).not_valid_after(CA_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256(), ecdsa_deterministic=True))


def load_ca(env: str, ca: dict | None, secrets: dict | None = None):
    """(certificate, private key) of the environment's CA: the data's CA files, else the
    secret `platform_ca_key`. Never creates one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if ca:
        cert_path, key_path = _resolve(ca["cert"]), _resolve(ca["key"])
        if not cert_path.exists() or not key_path.exists():
            raise CAError(f"platform CA: {cert_path} or {key_path} is missing")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return cert, serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    pem = (secrets or {}).get(SECRET_CA_KEY)
    if not pem:
        raise CAError(f"platform CA: the secret {SECRET_CA_KEY!r} is missing for {env!r}: "
                      f"run `make secrets ENV={env}` (CI never creates a CA)")
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    return _ca_cert_from_key(env, key), key


def ca_pem(env: str, ca: dict | None, secrets: dict | None = None) -> str:
    """The CA's certificate (what clients trust)."""
    from cryptography.hazmat.primitives import serialization

    return load_ca(env, ca, secrets)[0].public_bytes(serialization.Encoding.PEM).decode()


def _period(ca_cert, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    start = ca_cert.not_valid_before_utc
    k = max(0, (now - start) // PERIOD)
    begin = start + k * PERIOD
    return begin, min(begin + 2 * PERIOD, ca_cert.not_valid_after_utc)


def issue(env: str, ca: dict | None, name: str, dns_names: list[str], secrets: dict | None = None,
          now: dt.datetime | None = None) -> Issued:
    """A certificate for `dns_names` (the first is the CN), valid as TLS server and client;
    the same bytes on every control node for the same CA, names and period."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert, ca_key = load_ca(env, ca, secrets)
    ca_der = ca_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    label = "\0".join([name, *dns_names]).encode()
    scalar = int.from_bytes(hmac.new(ca_der, b"leaf-key\0" + label, hashlib.sha512).digest(), "big")
    key = ec.derive_private_key(scalar % (P256_ORDER - 1) + 1, ec.SECP256R1())
    begin, end = _period(ca_cert, now or _now())
    serial = int.from_bytes(hashlib.sha256(label + begin.isoformat().encode()).digest()[:16], "big") | 1
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(begin).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(ca_key, hashes.SHA256(), ecdsa_deterministic=True))
    pem = serialization.PrivateFormat.PKCS8
    return Issued(cert=cert.public_bytes(serialization.Encoding.PEM).decode(),
                  key=key.private_bytes(serialization.Encoding.PEM, pem, serialization.NoEncryption()).decode(),
                  ca=ca_cert.public_bytes(serialization.Encoding.PEM).decode())
