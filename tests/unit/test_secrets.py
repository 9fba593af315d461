"""Secrets: generated, stored encrypted for production/staging, never rotated silently."""

import pytest
import yaml

from codeb import secrets


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """Point the secrets module at a scratch repository and identity location."""
    monkeypatch.setattr(secrets, "REPO", tmp_path)
    monkeypatch.setenv("CODEB_AGE_IDENTITY_FILE", str(tmp_path / "identity.key"))
    monkeypatch.delenv("CODEB_AGE_IDENTITY", raising=False)
    monkeypatch.delenv("CODEB_SECRETS_FILE", raising=False)
    return tmp_path


def test_generated_values_are_strong_and_distinct():
    values = {secrets.generate() for _ in range(200)}
    assert len(values) == 200
    assert all(len(v) == 40 and v.isalnum() for v in values)


def test_production_secrets_are_encrypted_at_rest(repo):
    added = secrets.ensure("production", ["a", "b"])
    assert added == ["a", "b"]
    stored = (repo / "secrets" / "production.yml.age").read_bytes()
    assert stored.startswith(b"age-encryption.org/v1")
    values = secrets.read("production")
    assert set(values) == {"a", "b"}
    assert all(v.encode() not in stored for v in values.values())
    assert (repo / "secrets" / "production.recipients").read_text().count("age1") == 1


def test_ensure_adds_only_missing_and_never_rotates(repo):
    secrets.ensure("staging", ["a"])
    first = secrets.read("staging")["a"]
    assert secrets.ensure("staging", ["a", "b"]) == ["b"]
    assert secrets.read("staging")["a"] == first
    assert secrets.ensure("staging", ["a", "b"]) == []


def test_identity_from_environment_variable(repo, monkeypatch):
    secrets.ensure("production", ["a"])
    ident = (repo / "identity.key").read_text()
    (repo / "identity.key").unlink()
    monkeypatch.setenv("CODEB_AGE_IDENTITY", ident)
    assert "a" in secrets.read("production")


def test_missing_identity_says_how_to_fix(repo):
    secrets.ensure("production", ["a"])
    (repo / "identity.key").unlink()
    with pytest.raises(secrets.SecretsError, match="no age identity for 'production'.*CODEB_AGE_IDENTITY"):
        secrets.read("production")


def test_wrong_identity_cannot_decrypt(repo, monkeypatch):
    from pyrage import x25519

    secrets.ensure("production", ["a"])
    monkeypatch.setenv("CODEB_AGE_IDENTITY", str(x25519.Identity.generate()))
    with pytest.raises(secrets.SecretsError, match="cannot decrypt"):
        secrets.read("production")


def test_missing_secret_names_it_and_the_fix(repo):
    secrets.ensure("local", ["a"])
    with pytest.raises(secrets.SecretsError, match=r"missing for 'local'.*: b; run `make secrets ENV=local`"):
        secrets.load("local", ["a", "b"])


def test_local_secrets_are_private_and_outside_git(repo):
    secrets.ensure("local", ["a"])
    path = repo / ".lab" / "secrets" / "local.yml"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert set(yaml.safe_load(path.read_text())) == {"a"}
