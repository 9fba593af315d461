"""Every name, URL, ACL pattern and rule derived from the registry and the inventory.

Roles and templates consume these functions; they never build such values
themselves, so a naming rule changes in exactly one place.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from .registry import Instance

# --- per-instance names ---------------------------------------------------------


def sql_name(inst: Instance) -> str:
    """Database name, and the name of the login role that owns it."""
    return inst.name.replace("-", "_")


def db_name(inst: Instance) -> str:
    return sql_name(inst)


def db_role(inst: Instance) -> str:
    return sql_name(inst)


def redis_user(inst: Instance) -> str:
    return inst.name


def redis_prefix(inst: Instance) -> str:
    """Key and channel prefix; the ACL grants `~<prefix>:*` and `&<prefix>:*`."""
    return inst.name


def redis_acl_patterns(prefix: str) -> tuple[str, str]:
    return (f"~{prefix}:*", f"&{prefix}:*")


def bucket_name(inst: Instance) -> str:
    return inst.name


def unit_name(inst: Instance, slot: str) -> str:
    return f"{inst.name}-{slot}"


def origins(instances: Iterable[Instance]) -> list[str]:
    """Exact browser origins allowed to open a realtime connection: never '*'."""
    return sorted({f"https://{d}" for inst in instances if "realtime" in inst.needs for d in inst.domains})


# --- secrets ------------------------------------------------------------------------

# Secrets that exist once per environment.
PLATFORM_SECRETS = (
    "centrifugo_hmac_secret",
    "centrifugo_api_key",
    "centrifugo_admin_password",
    "redis_centrifugo_password",
    "redis_admin_password",
    "minio_root_password",
    "pdns_api_key",
    "pdns_db_password",
)


def secret_db_password(inst: Instance) -> str:
    return f"db_password.{inst.name}"


def secret_redis_password(inst: Instance) -> str:
    return f"redis_password.{inst.name}"


def secret_s3_secret_key(inst: Instance) -> str:
    return f"s3_secret_key.{inst.name}"


def required_secrets(instances: Iterable[Instance]) -> list[str]:
    names = list(PLATFORM_SECRETS)
    for inst in instances:
        if "database" in inst.needs:
            names.append(secret_db_password(inst))
        if "redis" in inst.needs:
            names.append(secret_redis_password(inst))
        if "bucket" in inst.needs:
            names.append(secret_s3_secret_key(inst))
    return names


# --- hosts and names ------------------------------------------------------------------


def fqdn(short: str, platform_domain: str) -> str:
    return f"{short}.{platform_domain}"


def etc_hosts_entries(hosts: Iterable[tuple[str, str]], platform_domain: str) -> list[tuple[str, str, str]]:
    """(address, fqdn, short name) for every platform host, sorted by name."""
    return [(addr, fqdn(name, platform_domain), name) for name, addr in sorted(hosts)]


def centrifugo_urls(platform_domain: str, streaming_addr: str, internal_port: int) -> dict[str, str]:
    return {
        "CENTRIFUGO_URL": f"wss://ws.{platform_domain}/connection/websocket",
        "CENTRIFUGO_API_URL": f"http://{streaming_addr}:{internal_port}/api",
    }


# --- firewall -------------------------------------------------------------------------


def _normalise_sources(sources: Iterable[str], group_addrs: Mapping[str, list[str]], admin_networks: list[str]):
    """Resolve source names to a sorted list of networks, or None for 'anyone'."""
    nets: set[str] = set()
    for src in sources:
        if src == "@any":
            return None
        if src == "@admin":
            nets.update(admin_networks)
        elif src in group_addrs:
            nets.update(f"{a}/32" if ":" not in a else f"{a}/128" for a in group_addrs[src])
        else:
            raise ValueError(f"firewall: unknown source {src!r}")
    # Collapse and sort for a stable rendering.
    parsed = sorted({ipaddress.ip_network(n, strict=False) for n in nets}, key=lambda n: (n.version, n))
    return [str(n) for n in parsed]


def firewall_rules(
    host_groups: Iterable[str],
    services: Mapping[str, Mapping],
    group_addrs: Mapping[str, list[str]],
    admin_networks: list[str],
) -> list[dict]:
    """Allow rules for one host: each service that runs on one of its groups.

    `services` maps a service name to {port, proto (tcp/udp/both), on (group or 'all'),
    from (groups, '@admin', '@any')}. Services with no allowed source yield no rule
    (default deny), never an open port.
    """
    groups = set(host_groups)
    rules = []
    for name, svc in sorted(services.items(), key=lambda kv: (kv[1]["port"], kv[0])):
        on = svc["on"]
        if on != "all" and on not in groups:
            continue
        saddrs = _normalise_sources(svc["from"], group_addrs, admin_networks)
        if saddrs == []:
            continue
        protos = ("tcp", "udp") if svc.get("proto", "tcp") == "both" else (svc.get("proto", "tcp"),)
        for proto in protos:
            rules.append(
                {
                    "name": name,
                    "port": int(svc["port"]),
                    "proto": proto,
                    "v4": None if saddrs is None else [s for s in saddrs if ":" not in s],
                    "v6": None if saddrs is None else [s for s in saddrs if ":" in s],
                }
            )
    return rules
