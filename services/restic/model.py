"""Derivations of the file backups (restic and rest-server): repositories, passwords, paths."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from codeb.shared import derived_salt


def host_secret(master: str, purpose: str, host: str) -> str:
    """A per-host value derived from a platform secret (HMAC-SHA-256, 40 alphanumerics): a
    host receives only its own, the backup host can recompute all of them."""
    import hashlib
    import hmac
    import string

    alphabet = string.ascii_letters + string.digits
    digest = hmac.new(master.encode(), f"codeb:{purpose}:{host}".encode(), hashlib.sha512).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:40])


def restic_repo_password(secrets: Mapping[str, str], host: str) -> str:
    return host_secret(secrets["restic_repo_password"], "restic-repo", host)


def restic_server_password(secrets: Mapping[str, str], host: str) -> str:
    return host_secret(secrets["restic_server_password"], "restic-rest", host)


def bcrypt_htpasswd(user: str, password: str, cost: int = 10) -> str:
    """`user:$2b$...` with a salt derived from the password, so the file renders identically
    on every apply (rest-server accepts bcrypt and {SHA} entries)."""
    import base64

    import bcrypt

    raw = derived_salt(password, f"htpasswd:{user}", 16)
    # bcrypt's own base64 alphabet for the 22-character salt.
    std = base64.b64encode(raw).decode().rstrip("=")[:22]
    table = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                          "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
    salt = f"$2b${cost:02d}${std.translate(table)}"
    # The last salt character carries 2 unused bits: normalise to what bcrypt keeps.
    salt = salt[:-1] + "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[
        "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".index(salt[-1]) & 0x30]
    return f"{user}:{bcrypt.hashpw(password.encode(), salt.encode()).decode()}"


def restic_htpasswd(secrets: Mapping[str, str], hosts: Iterable[str]) -> str:
    """rest-server logins: one per client host (its repository is /<host>/: --private-repos)."""
    return "".join(bcrypt_htpasswd(h, restic_server_password(secrets, h)) + "\n" for h in sorted(set(hosts)))


def file_backup_paths(host_groups: Iterable[str], spec: Mapping[str, Iterable[str]]) -> list[str]:
    """What a host's weekly file backup covers: `all` plus the entries of its groups."""
    groups = set(host_groups) | {"all"}
    return sorted({p for g, paths in spec.items() if g in groups for p in paths})


def restic_repository(host: str, backup_host: str, port: int, local: bool, repo_root: str) -> str:
    """A client pushes to rest-server on the backup host (HTTPS, its own /<host>/ path);
    the backup host writes its own repository locally."""
    if local:
        return f"{repo_root}/{host}"
    return f"rest:https://{backup_host}:{port}/{host}/"
