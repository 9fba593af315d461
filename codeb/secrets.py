"""Per-environment secrets.

production and staging keep an age-encrypted YAML map in secrets/<env>.yml.age,
encrypted to the public keys in secrets/<env>.recipients; the identity comes from
CODEB_AGE_IDENTITY (the key itself, for CI) or CODEB_AGE_IDENTITY_FILE (a path;
default ~/.config/codeb/age/<env>.key). The local environment keeps a plaintext
file outside git under .lab/. Values are never printed.
"""

from __future__ import annotations

import os
import secrets as _random
import string
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
ENCRYPTED_ENVS = ("production", "staging")
ALPHABET = string.ascii_letters + string.digits
LENGTH = 40  # ~238 bits; alphanumeric so it is safe in URLs, configs and shells


class SecretsError(Exception):
    pass


def generate() -> str:
    return "".join(_random.choice(ALPHABET) for _ in range(LENGTH))


def _new_ca_key() -> str:
    from codeb import pki

    return pki.new_ca_key_pem()


def _token_hex(nbytes: int, prefix: str = ""):
    return lambda: prefix + _random.token_hex(nbytes)


# Secrets of another shape than a random string: the platform CA's private key (PEM), and
# Garage's formats (codeb/shared.py): RPC secret and S3 key secrets 32 bytes in hex, S3 key
# ids "GK" and 12 bytes in hex. Keyed by name, or by the prefix before a per-instance ".".
GENERATORS = {
    "platform_ca_key": _new_ca_key,
    "garage_rpc_secret": _token_hex(32),
    "s3_key_id.": _token_hex(12, "GK"),
    "s3_key_secret.": _token_hex(32),
}


def generator(name: str):
    prefix = name.split(".", 1)[0] + "." if "." in name else None
    return GENERATORS.get(name) or GENERATORS.get(prefix) or generate


def secrets_file(env: str) -> Path:
    override = os.environ.get("CODEB_SECRETS_FILE")
    if override:
        return Path(override)
    if env in ENCRYPTED_ENVS:
        return REPO / "secrets" / f"{env}.yml.age"
    return REPO / ".lab" / "secrets" / f"{env}.yml"


def recipients_file(env: str) -> Path:
    return REPO / "secrets" / f"{env}.recipients"


def identity_file(env: str) -> Path:
    return Path(os.environ.get("CODEB_AGE_IDENTITY_FILE", Path.home() / ".config" / "codeb" / "age" / f"{env}.key"))


def _identity(env: str):
    from pyrage import x25519

    text = os.environ.get("CODEB_AGE_IDENTITY")
    source = "CODEB_AGE_IDENTITY"
    if not text:
        path = identity_file(env)
        source = str(path)
        if not path.exists():
            raise SecretsError(
                f"secrets: no age identity for {env!r}: set CODEB_AGE_IDENTITY or CODEB_AGE_IDENTITY_FILE, "
                f"or place the key at {path}"
            )
        text = path.read_text()
    keys = [line.strip() for line in text.splitlines() if line.strip().startswith("AGE-SECRET-KEY-")]
    if not keys:
        raise SecretsError(f"secrets: {source} holds no AGE-SECRET-KEY line")
    return x25519.Identity.from_str(keys[0])


def _recipients(env: str):
    from pyrage import x25519

    path = recipients_file(env)
    if not path.exists():
        return []
    return [x25519.Recipient.from_str(line.split()[0]) for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def read(env: str) -> dict[str, str]:
    """Return the environment's secrets, or {} when the file does not exist yet."""
    path = secrets_file(env)
    if not path.exists():
        return {}
    data = path.read_bytes()
    if env in ENCRYPTED_ENVS and "CODEB_SECRETS_FILE" not in os.environ:
        from pyrage import decrypt

        try:
            data = decrypt(data, [_identity(env)])
        except SecretsError:
            raise
        except Exception:
            raise SecretsError(
                f"secrets: cannot decrypt {path.relative_to(REPO)} with the configured age identity "
                f"(is it one of the recipients in {recipients_file(env).relative_to(REPO)}?)"
            ) from None
    try:
        values = yaml.safe_load(data) or {}
    except yaml.YAMLError:
        raise SecretsError(f"secrets: {path} is not a YAML mapping") from None
    if not isinstance(values, dict) or not all(isinstance(v, str) and v for v in values.values()):
        raise SecretsError(f"secrets: {path} must map names to non-empty strings")
    return values


def write(env: str, values: dict[str, str]) -> Path:
    path = secrets_file(env)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = yaml.safe_dump(dict(sorted(values.items())), default_flow_style=False).encode()
    if env in ENCRYPTED_ENVS and "CODEB_SECRETS_FILE" not in os.environ:
        from pyrage import encrypt

        recipients = _recipients(env)
        if not recipients:
            raise SecretsError(f"secrets: {recipients_file(env).relative_to(REPO)} lists no age recipients")
        body = encrypt(body, recipients)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(body)
    os.replace(tmp, path)
    return path


def ensure_identity(env: str) -> None:
    """For a new encrypted environment: create an identity and list it as recipient."""
    rec = recipients_file(env)
    if rec.exists():
        return
    from pyrage import x25519

    ident = x25519.Identity.generate()
    path = identity_file(env)
    if path.exists():
        raise SecretsError(f"secrets: {path} exists but {rec} does not; add its public key there")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(str(ident) + "\n")
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.write_text(f"# age recipients for {env}: one public key per line (admins and CI)\n{ident.to_public()}\n")


def ensure(env: str, required: list[str]) -> list[str]:
    """Add missing secrets (never rotate existing ones). Returns the names added."""
    if env in ENCRYPTED_ENVS and "CODEB_SECRETS_FILE" not in os.environ:
        ensure_identity(env)
    values = read(env)
    added = [name for name in required if name not in values]
    for name in added:
        values[name] = generator(name)()
    if added or not secrets_file(env).exists():
        write(env, values)
    return added


def load(env: str, required: list[str]) -> dict[str, str]:
    """Secrets for an apply: all required names present, or SecretsError saying how to fix it."""
    values = read(env)
    missing = [name for name in required if name not in values]
    if missing:
        where = secrets_file(env)
        raise SecretsError(
            f"secrets: {len(missing)} missing for {env!r} in {where}: {', '.join(missing)}; "
            f"run `make secrets ENV={env}` to add them"
        )
    return {name: values[name] for name in required}
