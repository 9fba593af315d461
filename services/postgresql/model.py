"""Derivations of PostgreSQL: pg_hba rules and login roles with SCRAM verifiers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from codeb.registry import Instance
from codeb.shared import PDNS_DB, db_name, db_role, derived_salt, secret_db_password, with_need

# Roles the storage role manages carry this comment, so a role whose project left
# the registry is recognised and loses LOGIN (its database is kept).
PG_MANAGED_COMMENT = "codeb:managed"


def pg_hba_rules(instances: Iterable[Instance], group_addrs: Mapping[str, list[str]],
                 extra: Iterable[Mapping] = ()) -> list[dict]:
    """pg_hba.conf lines, in order: administration over the local socket (peer, postgres
    only), PowerDNS over the local socket, `extra` (the hook for backup tooling), then one
    `hostssl` line per project database and each host of the project's group."""
    rules = [
        {"type": "local", "database": "all", "user": "postgres", "address": "", "method": "peer",
         "comment": "administration (root through `runuser -u postgres`)"},
        {"type": "local", "database": PDNS_DB, "user": PDNS_DB, "address": "", "method": "scram-sha-256",
         "comment": "PowerDNS gpgsql backend"},
    ]
    for rule in extra:
        rules.append({"address": "", "comment": "", **rule})
    for inst in with_need(instances, "database"):
        for addr in group_addrs.get(inst.group, []):
            rules.append({"type": "hostssl", "database": db_name(inst), "user": db_role(inst),
                          "address": f"{addr}/32" if ":" not in addr else f"{addr}/128",
                          "method": "scram-sha-256", "comment": inst.name})
    return rules


def scram_sha256_verifier(password: str, salt: bytes, iterations: int = 4096) -> str:
    """The verifier PostgreSQL stores for `password_encryption = scram-sha-256` (RFC 5802/7677).
    PostgreSQL accepts it as the PASSWORD of a role, so the password itself never reaches
    the host."""
    import base64
    import hashlib
    import hmac

    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def pg_role_verifier(role: str, password: str) -> str:
    return scram_sha256_verifier(password, derived_salt(password, f"postgres:{role}"))


def pg_logins(instances: Iterable[Instance], secrets: Mapping[str, str], connection_limit: int) -> list[dict]:
    """Every login role with its database: projects that need one, then PowerDNS."""
    out = [
        {"role": db_role(i), "database": db_name(i), "connection_limit": connection_limit,
         "verifier": pg_role_verifier(db_role(i), secrets[secret_db_password(i)]), "instance": i.name}
        for i in with_need(instances, "database")
    ]
    out.append({"role": PDNS_DB, "database": PDNS_DB, "connection_limit": connection_limit,
                "verifier": pg_role_verifier(PDNS_DB, secrets["pdns_db_password"]), "instance": "powerdns"})
    return out
