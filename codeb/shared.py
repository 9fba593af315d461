"""Names and rules several services share, derived from the registry and the inventory.

Per-instance names (databases, Redis users, buckets), secret names, host names, the
firewall table and the backup host. A service's own derivations live in its folder
(services/<service>/model.py); a naming rule changes in exactly one place.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

from .registry import Instance


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


SECRET_WIREGUARD_SEED = "wireguard_seed"


SECRET_GARAGE_RPC = "garage_rpc_secret"


# Secrets that exist once per environment.
PLATFORM_SECRETS = (
    "centrifugo_admin_password",
    "redis_centrifugo_password",
    "redis_admin_password",
    # Garage (the S3 server): its nodes' shared RPC secret (64 hex), the admin API token
    # (it never leaves the storage hosts) and the metrics token Prometheus presents.
    SECRET_GARAGE_RPC,
    "garage_admin_token",
    "garage_metrics_token",
    "pdns_api_key",
    "pdns_db_password",
    # Backup issue: restic repositories (file backups on the backup host) and their
    # REST server logins; each host receives only the values derived for it.
    "restic_repo_password",
    "restic_server_password",
    # The private network: seeds every host's WireGuard key (wireguard_private_key).
    SECRET_WIREGUARD_SEED,
    # The platform CA's private key (codeb/pki.py), unless the environment names CA files.
    "platform_ca_key",
)


def secret_db_password(inst: Instance) -> str:
    return f"db_password.{inst.name}"


def secret_redis_password(inst: Instance) -> str:
    return f"redis_password.{inst.name}"


def secret_s3_key_id(inst: Instance) -> str:
    """The instance's S3 access key id, in Garage's format (GK + 24 hex digits)."""
    return f"s3_key_id.{inst.name}"


def secret_s3_key_secret(inst: Instance) -> str:
    """The instance's S3 secret key, in Garage's format (64 hex digits)."""
    return f"s3_key_secret.{inst.name}"


def secret_centrifugo_token_key(inst: Instance) -> str:
    """The HMAC key the instance's app signs its Centrifugo connection and subscription
    tokens with; only that instance's Centrifugo accepts them."""
    return f"centrifugo_hmac_secret.{inst.name}"


def secret_centrifugo_api_key(inst: Instance) -> str:
    """The key of the instance's own Centrifugo HTTP API (publishing to its channels only)."""
    return f"centrifugo_api_key.{inst.name}"


def required_secrets(instances: Iterable[Instance]) -> list[str]:
    names = list(PLATFORM_SECRETS)
    for inst in instances:
        if "database" in inst.needs:
            names.append(secret_db_password(inst))
        if "redis" in inst.needs:
            names.append(secret_redis_password(inst))
        if "bucket" in inst.needs:
            names.extend([secret_s3_key_id(inst), secret_s3_key_secret(inst)])
        if "realtime" in inst.needs:
            names.extend([secret_centrifugo_token_key(inst), secret_centrifugo_api_key(inst)])
    return names


def fqdn(short: str, platform_domain: str) -> str:
    return f"{short}.{platform_domain}"


def _host_net(addr: str) -> str:
    return f"{addr}/32" if ":" not in addr else f"{addr}/128"


def _normalise_sources(sources: Iterable[str], group_addrs: Mapping[str, list[str]], admin_networks: list[str],
                       public_addrs: Iterable[str] = ()):
    """Resolve source names to a sorted list of networks, or None for 'anyone'."""
    nets: set[str] = set()
    for src in sources:
        if src == "@any":
            return None
        if src == "@admin":
            nets.update(admin_networks)
        elif src == "@platform":
            # Every platform host's public address (the mesh's own transport).
            nets.update(_host_net(a) for a in public_addrs)
        elif src.endswith("@cluster") and src[: -len("@cluster")] in group_addrs:
            # The group's hosts, only when it has several (e.g. streaming hosts sharing Redis).
            members = group_addrs[src[: -len("@cluster")]]
            if len(members) > 1:
                nets.update(_host_net(a) for a in members)
        elif src in group_addrs:
            nets.update(_host_net(a) for a in group_addrs[src])
        else:
            raise ValueError(f"firewall: unknown source {src!r}")
    # Collapse and sort for a stable rendering.
    parsed = sorted({ipaddress.ip_network(n, strict=False) for n in nets}, key=lambda n: (n.version, n))
    return [str(n) for n in parsed]


def _port(port) -> int | str:
    """A port (int) or an inclusive range "low-high" (nftables syntax)."""
    if isinstance(port, str):
        low, high = (int(p) for p in port.split("-"))
        if not 0 < low < high < 65536:
            raise ValueError(f"firewall: bad port range {port!r}")
        return f"{low}-{high}"
    return int(port)


def _port_key(port) -> int:
    return int(str(port).split("-")[0])


def firewall_rules(
    host_groups: Iterable[str],
    services: Mapping[str, Mapping],
    group_addrs: Mapping[str, list[str]],
    admin_networks: list[str],
    public_addrs: Iterable[str] = (),
    private_interface: str | None = None,
) -> list[dict]:
    """Allow rules for one host: each service that runs on one of its groups.

    `services` maps a service name to {port, proto (tcp/udp/both), on (group or 'all'),
    from (groups, '@admin', '@any', '@platform')}. Host groups stand for the hosts'
    private addresses, '@platform' for their public ones. A service reached only from
    host groups is internal: its rule also requires the private interface (`iif`), so
    it is never open on the public side. Services with no allowed source yield no rule
    (default deny), never an open port.
    """
    groups = set(host_groups)
    rules = []
    for name, svc in sorted(services.items(), key=lambda kv: (_port_key(kv[1]["port"]), kv[0])):
        on = svc["on"]
        if on != "all" and on not in groups:
            continue
        saddrs = _normalise_sources(svc["from"], group_addrs, admin_networks, public_addrs)
        if saddrs == []:
            continue
        internal = all(not src.startswith("@") for src in svc["from"])
        protos = ("tcp", "udp") if svc.get("proto", "tcp") == "both" else (svc.get("proto", "tcp"),)
        for proto in protos:
            rules.append(
                {
                    "name": name,
                    "port": _port(svc["port"]),
                    "proto": proto,
                    "iif": private_interface if internal else None,
                    "v4": None if saddrs is None else [s for s in saddrs if ":" not in s],
                    "v6": None if saddrs is None else [s for s in saddrs if ":" in s],
                }
            )
    return rules


# The PowerDNS gpgsql backend's own database and login role.
PDNS_DB = "pdns"


def with_need(instances: Iterable[Instance], need: str) -> list[Instance]:
    return sorted((i for i in instances if need in i.needs), key=lambda i: i.name)


def derived_salt(secret: str, context: str, size: int = 16) -> bytes:
    """A salt derived from the secret itself, so a hash renders identically on every apply
    (and changes when the secret does). Not reversible: HMAC-SHA-256 of a context string."""
    import hashlib
    import hmac

    return hmac.new(secret.encode(), f"codeb-salt:{context}".encode(), hashlib.sha256).digest()[:size]


# The Centrifugo engine (streaming issue): Centrifuge names its keys and channels
# `<prefix>.<...>` (dot-separated), and its broker probes Redis streams with
# `XRANGE _ 0-0 0-0` at start, so it needs read access to the key `_` as well.
CENTRIFUGO_REDIS_USER = "centrifugo"


CENTRIFUGO_REDIS_PREFIX = "centrifugo"


# Garage's own formats (garage_model key_table): access key ids are "GK" and 12 random
# bytes in hex, secrets 32 random bytes in hex. Keys are imported with these values, so
# they are the environment's secrets, not Garage's.
S3_KEY_ID_RE = re.compile(r"GK[0-9a-f]{24}")


S3_KEY_SECRET_RE = re.compile(r"[0-9a-f]{64}")


GARAGE_RPC_SECRET_RE = re.compile(r"[0-9a-f]{64}")


def s3_secret_problems(instances: Iterable[Instance], secrets: Mapping[str, str]) -> list[str]:
    """Secrets in a shape Garage would refuse (one line each, naming the secret, never its value)."""
    problems = []
    checks = [(SECRET_GARAGE_RPC, GARAGE_RPC_SECRET_RE, "64 hex digits")]
    for i in with_need(instances, "bucket"):
        checks += [(secret_s3_key_id(i), S3_KEY_ID_RE, "GK and 24 hex digits"),
                   (secret_s3_key_secret(i), S3_KEY_SECRET_RE, "64 hex digits")]
    for name, pattern, shape in checks:
        if name in secrets and not pattern.fullmatch(secrets[name]):
            problems.append(f"secrets: {name} is not in Garage's format ({shape}); "
                            f"remove it and run `make secrets` to generate it")
    ids = [secrets.get(secret_s3_key_id(i)) for i in with_need(instances, "bucket")]
    dupes = sorted({k for k in ids if k and ids.count(k) > 1})
    if dupes:
        problems.append(f"secrets: {len(dupes)} S3 key id(s) shared by several instances")
    return problems


# Optional per environment: present in the secrets file only where images are private
# (production pulls from GHCR); an apply that configures registry auth requires it.
SECRET_CONTAINER_REGISTRY_TOKEN = "container_registry_token"


OPTIONAL_SECRETS = (SECRET_CONTAINER_REGISTRY_TOKEN,)


# The platform CA's certificate on the hosts (and mounted into app containers): clients
# verify internal TLS servers against it (PostgreSQL: sslmode=verify-full).
PLATFORM_CA_FILE = "/etc/codeb/platform-ca.crt"


def s3_endpoint(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def ws_domain(platform_domain: str) -> str:
    """The public WebSocket endpoint's name (Caddy site on the streaming hosts)."""
    return f"ws.{platform_domain}"


def tls_names(short: str, platform_domain: str) -> list[str]:
    """DNS names in a host's certificate (pgBackRest verifies DNS names, not IP addresses);
    the first is the CN. Both resolve through /etc/hosts (services/baseline)."""
    return [fqdn(short, platform_domain), short]


def pgbackrest_repo_host(backup_hosts: Iterable[str]) -> str:
    """The repository host the database hosts push WAL to: the first backup host."""
    hosts = sorted(backup_hosts)
    if not hosts:
        raise ValueError("pgbackrest: the backup group has no host")
    return hosts[0]
