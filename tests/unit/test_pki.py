"""The platform CA lives in the environment's secrets; certificates are the same on every control node."""

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from codeb import pki, secrets


@pytest.fixture(scope="module")
def env_secrets():
    return {pki.SECRET_CA_KEY: pki.new_ca_key_pem()}


def test_two_clean_control_nodes_issue_byte_identical_certificates(env_secrets, tmp_path, monkeypatch):
    """Nothing is cached on the control node: a second home (a fresh CI runner) gets the same files."""
    monkeypatch.setenv("HOME", str(tmp_path / "home-a"))
    a = pki.issue("production", None, "n3", ["n3.codeb.kr", "n3"], env_secrets)
    monkeypatch.setenv("HOME", str(tmp_path / "home-b"))
    b = pki.issue("production", None, "n3", ["n3.codeb.kr", "n3"], env_secrets)
    assert a == b
    assert not (tmp_path / "home-a").exists() and not (tmp_path / "home-b").exists()


def test_certificates_verify_against_the_ca_and_differ_per_name(env_secrets):
    a = pki.issue("production", None, "n3", ["n3.codeb.kr", "n3"], env_secrets)
    b = pki.issue("production", None, "n4", ["n4.codeb.kr", "n4"], env_secrets)
    assert a.key != b.key and a.cert != b.cert and a.ca == b.ca
    ca = x509.load_pem_x509_certificate(a.ca.encode())
    cert = x509.load_pem_x509_certificate(a.cert.encode())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n3.codeb.kr", "n3"]


def test_certificates_roll_over_once_a_period(env_secrets):
    ca = x509.load_pem_x509_certificate(pki.ca_pem("production", None, env_secrets).encode())
    start = ca.not_valid_before_utc
    same_a = pki.issue("production", None, "n3", ["n3.codeb.kr"], env_secrets, now=start + dt.timedelta(days=10))
    same_b = pki.issue("production", None, "n3", ["n3.codeb.kr"], env_secrets, now=start + dt.timedelta(days=300))
    later = pki.issue("production", None, "n3", ["n3.codeb.kr"], env_secrets, now=start + dt.timedelta(days=400))
    assert same_a == same_b and later.cert != same_a.cert
    cert = x509.load_pem_x509_certificate(later.cert.encode())
    assert cert.not_valid_before_utc <= start + dt.timedelta(days=400) < cert.not_valid_after_utc


def test_no_ca_is_an_error_never_a_new_ca():
    with pytest.raises(pki.CAError, match="run `make secrets ENV=production`"):
        pki.issue("production", None, "n3", ["n3.codeb.kr"], {})


def test_make_secrets_creates_the_ca_key_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEB_SECRETS_FILE", str(tmp_path / "s.yml"))
    added = secrets.ensure("local", [pki.SECRET_CA_KEY, "other"])
    assert added == [pki.SECRET_CA_KEY, "other"]
    first = secrets.read("local")[pki.SECRET_CA_KEY]
    key = serialization.load_pem_private_key(first.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert secrets.ensure("local", [pki.SECRET_CA_KEY, "other"]) == []
    assert secrets.read("local")[pki.SECRET_CA_KEY] == first
