"""Derivations of Redis: ACL users from the registry (passwords as SHA-256 hashes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from codeb.registry import Instance
from codeb.shared import (
    CENTRIFUGO_REDIS_PREFIX,
    CENTRIFUGO_REDIS_USER,
    redis_acl_patterns,
    redis_prefix,
    redis_user,
    secret_redis_password,
    with_need,
)

REDIS_ADMIN_USER = "admin"


REDIS_APP_COMMANDS = "+@all -@admin -@dangerous"


def centrifugo_redis_acl_patterns(prefix: str = CENTRIFUGO_REDIS_PREFIX) -> tuple[str, ...]:
    return (f"~{prefix}.*", f"&{prefix}.*", "%R~_")


def redis_password_hash(password: str) -> str:
    """ACL file form of a password: `#<sha256 hex>`, so the file holds no plaintext."""
    import hashlib

    return "#" + hashlib.sha256(password.encode()).hexdigest()


def redis_acl_users(instances: Iterable[Instance], secrets: Mapping[str, str]) -> list[tuple[str, str]]:
    """(user, rules) for the ACL file. `default` is off; every user starts from `reset`,
    so a rule removed here is removed on the server by ACL LOAD."""
    users = [
        ("default", "reset off"),
        (REDIS_ADMIN_USER, f"reset on {redis_password_hash(secrets['redis_admin_password'])} ~* &* +@all"),
        (CENTRIFUGO_REDIS_USER,
         f"reset on {redis_password_hash(secrets['redis_centrifugo_password'])} "
         f"{' '.join(centrifugo_redis_acl_patterns())} {REDIS_APP_COMMANDS}"),
    ]
    for inst in with_need(instances, "redis"):
        patterns = " ".join(redis_acl_patterns(redis_prefix(inst)))
        users.append((redis_user(inst),
                      f"reset on {redis_password_hash(secrets[secret_redis_password(inst)])} {patterns} "
                      f"{REDIS_APP_COMMANDS}"))
    return users
