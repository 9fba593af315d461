"""Every name, URL, ACL pattern and rule derived from the registry and the inventory.

Roles and templates consume these functions; they never build such values
themselves, so a naming rule changes in exactly one place.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
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

SECRET_WIREGUARD_SEED = "wireguard_seed"
SECRET_GARAGE_RPC = "garage_rpc_secret"
# Secrets that exist once per environment.
PLATFORM_SECRETS = (
    "centrifugo_hmac_secret",
    "centrifugo_api_key",
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


def required_secrets(instances: Iterable[Instance]) -> list[str]:
    names = list(PLATFORM_SECRETS)
    for inst in instances:
        if "database" in inst.needs:
            names.append(secret_db_password(inst))
        if "redis" in inst.needs:
            names.append(secret_redis_password(inst))
        if "bucket" in inst.needs:
            names.extend([secret_s3_key_id(inst), secret_s3_key_secret(inst)])
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


# --- private network (WireGuard mesh) ----------------------------------------------------

# One platform secret (SECRET_WIREGUARD_SEED) seeds every host's WireGuard key:
# key = HMAC-SHA256(seed, host name). Keys are per environment (each has its own seed) and
# per host; a host's private key is rendered only into that host's wg0.conf, its peers get
# the public key.


def wireguard_private_key(seed: str, host_name: str) -> str:
    digest = hmac.new(seed.encode(), f"wireguard:{host_name}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def wireguard_public_key(private_key: str) -> str:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_key))  # clamped like `wg pubkey`
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def wireguard_config(host_name: str, peers: Iterable[Mapping], seed: str, port: int, network: str) -> dict:
    """wg0.conf values for one host: its address and key, and every other platform host as a
    peer reached on its public address, allowed only its own private address."""
    peers = list(peers)
    me = next(p for p in peers if p["name"] == host_name)
    prefix = ipaddress.ip_network(network).prefixlen
    return {
        "address": f"{me['private_ip']}/{prefix}",
        "port": port,
        "private_key": wireguard_private_key(seed, host_name),
        "peers": [
            {"name": p["name"], "endpoint": p["public_ip"], "allowed_ip": p["private_ip"],
             "public_key": wireguard_public_key(wireguard_private_key(seed, p["name"]))}
            for p in peers if p["name"] != host_name
        ],
    }


# --- firewall -------------------------------------------------------------------------


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


# --- storage host: PostgreSQL --------------------------------------------------------

# The PowerDNS gpgsql backend's own database and login role.
PDNS_DB = "pdns"
# Roles the storage role manages carry this comment, so a role whose project left
# the registry is recognised and loses LOGIN (its database is kept).
PG_MANAGED_COMMENT = "codeb:managed"


def with_need(instances: Iterable[Instance], need: str) -> list[Instance]:
    return sorted((i for i in instances if need in i.needs), key=lambda i: i.name)


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


def derived_salt(secret: str, context: str, size: int = 16) -> bytes:
    """A salt derived from the secret itself, so a hash renders identically on every apply
    (and changes when the secret does). Not reversible: HMAC-SHA-256 of a context string."""
    import hashlib
    import hmac

    return hmac.new(secret.encode(), f"codeb-salt:{context}".encode(), hashlib.sha256).digest()[:size]


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


# --- storage host: Redis ---------------------------------------------------------------

REDIS_ADMIN_USER = "admin"
# The Centrifugo engine (streaming issue): Centrifuge names its keys and channels
# `<prefix>.<...>` (dot-separated), and its broker probes Redis streams with
# `XRANGE _ 0-0 0-0` at start, so it needs read access to the key `_` as well.
CENTRIFUGO_REDIS_USER = "centrifugo"
CENTRIFUGO_REDIS_PREFIX = "centrifugo"
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


# --- storage host: Garage (S3) ----------------------------------------------------------

# Garage's own formats (garage_model key_table): access key ids are "GK" and 12 random
# bytes in hex, secrets 32 random bytes in hex. Keys are imported with these values, so
# they are the environment's secrets, not Garage's.
S3_KEY_ID_RE = re.compile(r"GK[0-9a-f]{24}")
S3_KEY_SECRET_RE = re.compile(r"[0-9a-f]{64}")
GARAGE_RPC_SECRET_RE = re.compile(r"[0-9a-f]{64}")


def s3_key_name(inst: Instance) -> str:
    """The key's name in Garage: the instance (ids are random, names are for people)."""
    return inst.name


def s3_desired(instances: Iterable[Instance], secrets: Mapping[str, str]) -> list[dict]:
    """Per instance with a bucket: its bucket (global alias) and its key, allowed read and
    write on that bucket only (no owner, no bucket creation)."""
    return [
        {"bucket": bucket_name(i), "name": s3_key_name(i), "key_id": secrets[secret_s3_key_id(i)],
         "secret": secrets[secret_s3_key_secret(i)]}
        for i in with_need(instances, "bucket")
    ]


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


# --- storage host: PowerDNS ------------------------------------------------------------

# Second-level public suffixes under which a name is registered one label deeper
# (a short list for the registries we use; extend it before adding such a domain).
PUBLIC_SUFFIXES = frozenset({
    "co.kr", "or.kr", "ne.kr", "re.kr", "pe.kr", "go.kr", "ac.kr", "ms.kr", "hs.kr", "es.kr", "sc.kr",
    "kg.kr", "seoul.kr", "co.uk", "org.uk", "com.au", "co.jp", "ne.jp", "com.cn",
})


def registrable_domain(domain: str) -> str:
    labels = domain.lower().rstrip(".").split(".")
    keep = 3 if ".".join(labels[-2:]) in PUBLIC_SUFFIXES else 2
    return ".".join(labels[-keep:])


def pdns_api_key_hash(key: str, salt: bytes | None = None) -> str:
    """PowerDNS (4.6+) hashed api-key: `$scrypt$ln=10,p=1,r=8$<salt b64>$<key b64>`, the salt
    derived from the key so the rendered config does not change between applies."""
    import base64
    import hashlib

    salt = derived_salt(key, "pdns-api-key") if salt is None else salt
    digest = hashlib.scrypt(key.encode(), salt=salt, n=1 << 10, r=8, p=1, dklen=32)
    return f"$scrypt$ln=10,p=1,r=8${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _zone_for(name: str, zones: Iterable[str]) -> str | None:
    best = None
    for zone in zones:
        if (name == zone or name.endswith("." + zone)) and (best is None or len(zone) > len(best)):
            best = zone
    return best


def dns_zones(
    platform_domain: str,
    hosts: Iterable[tuple[str, str]],
    group_addrs: Mapping[str, list[str]],
    instances: Iterable[Instance],
    ttl: int = 300,
) -> dict[str, dict]:
    """Zones served by PowerDNS: {zone: {"nameservers": [...], "rrsets": {(fqdn, type): [content]}}}.

    - the platform zone: every host by name, ws (streaming), api (app), db (storage);
    - every registry domain, in the zone of its registrable domain (or the platform zone
      when it lies inside it), pointing at the hosts of its instance's group.
    Names are absolute (trailing dot); nameservers are the storage hosts' names.
    """
    instances = list(instances)
    hosts = sorted(hosts)
    wanted: dict[str, set[str]] = {}

    def add(name: str, addrs: Iterable[str]):
        wanted.setdefault(name.lower(), set()).update(addrs)

    for name, addr in hosts:
        add(fqdn(name, platform_domain), [addr])
    for short, group in (("ws", "streaming"), ("api", "app"), ("db", "storage")):
        add(fqdn(short, platform_domain), group_addrs.get(group, []))
    for inst in instances:
        for domain in inst.domains:
            add(domain, group_addrs.get(inst.group, []))

    zone_names = {platform_domain} | {registrable_domain(d) for i in instances for d in i.domains}
    # A registrable domain inside the platform zone (platform_domain codeb.kr) is that zone.
    zone_names = {z for z in zone_names if z == platform_domain or _zone_for(z, {platform_domain}) is None}
    storage = set(group_addrs.get("storage", []))
    nameservers = [fqdn(n, platform_domain) + "." for n, a in hosts if a in storage]

    zones: dict[str, dict] = {z: {"nameservers": nameservers, "rrsets": {}} for z in sorted(zone_names)}
    for name, addrs in sorted(wanted.items()):
        zone = _zone_for(name, zone_names)
        if zone is None or not addrs:
            continue
        v4 = sorted(a for a in addrs if ":" not in a)
        v6 = sorted(a for a in addrs if ":" in a)
        if v4:
            zones[zone]["rrsets"][(name + ".", "A")] = v4
        if v6:
            zones[zone]["rrsets"][(name + ".", "AAAA")] = v6
    for z in zones.values():
        z["ttl"] = ttl
    return zones


# --- app hosts: containers, env files, sites, releases -----------------------------

# Generated env files follow the operations manual: Node apps run with NODE_ENV=production
# in every app environment (staging and preview are production builds on other data).
APP_NODE_ENV = "production"
# Optional per environment: present in the secrets file only where images are private
# (production pulls from GHCR); an apply that configures registry auth requires it.
SECRET_CONTAINER_REGISTRY_TOKEN = "container_registry_token"
OPTIONAL_SECRETS = (SECRET_CONTAINER_REGISTRY_TOKEN,)


def env_file_path(inst: Instance) -> str:
    return f"/etc/platform/apps/{inst.name}.env"


def release_state_path(inst: Instance) -> str:
    return f"/var/lib/platform/releases/{inst.name}.json"


def app_volume(inst: Instance) -> str:
    """The instance's named Podman volume: kept when the instance leaves the registry."""
    return f"{inst.name}-data"


# The platform CA's certificate on the hosts (and mounted into app containers): clients
# verify internal TLS servers against it (PostgreSQL: sslmode=verify-full).
PLATFORM_CA_FILE = "/etc/codeb/platform-ca.crt"


def database_url(inst: Instance, password: str, host: str, port: int, ca_file: str | None = None) -> str:
    """The instance's own role and database on the storage host over TLS (pg_hba: hostssl).
    With the platform CA, the server's certificate is verified for `host` (verify-full)."""
    tls = f"sslmode=verify-full&sslrootcert={ca_file}" if ca_file else "sslmode=require"
    return f"postgresql://{db_role(inst)}:{password}@{host}:{port}/{db_name(inst)}?{tls}"


def redis_url(inst: Instance, password: str, host: str, port: int) -> str:
    """The instance's ACL user; its keys and channels live under redis_env_prefix()."""
    return f"redis://{redis_user(inst)}:{password}@{host}:{port}/0"


def redis_env_prefix(inst: Instance) -> str:
    """REDIS_PREFIX as the manual writes it (`myapp:`): inside the ACL's `~<prefix>:*`."""
    return f"{redis_prefix(inst)}:"


def s3_endpoint(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def app_env(
    inst: Instance,
    secrets: Mapping[str, str],
    *,
    storage_addr: str,
    streaming_addr: str,
    platform_domain: str,
    postgresql_port: int,
    redis_port: int,
    s3_port: int,
    s3_region: str,
    centrifugo_internal_port: int,
    database_host: str | None = None,
    ca_file: str | None = None,
) -> dict[str, str]:
    """The instance's environment (its env file), in a stable order.

    `database_host` is the name in the storage host's certificate (default: its address);
    with `ca_file`, PostgreSQL clients verify it (verify-full).

    PORT is the registry port: the app listens on it inside its container; the blue
    and green slots publish it on their own slot ports on the host.
    """
    env = {"NODE_ENV": APP_NODE_ENV, "PORT": str(inst.port)}
    if "database" in inst.needs:
        env["DATABASE_URL"] = database_url(inst, secrets[secret_db_password(inst)], database_host or storage_addr,
                                           postgresql_port, ca_file)
    if "redis" in inst.needs:
        env["REDIS_URL"] = redis_url(inst, secrets[secret_redis_password(inst)], storage_addr, redis_port)
        env["REDIS_PREFIX"] = redis_env_prefix(inst)
    if "bucket" in inst.needs:
        env.update({
            "S3_ENDPOINT": s3_endpoint(storage_addr, s3_port),
            "S3_REGION": s3_region,
            "S3_BUCKET": bucket_name(inst),
            "S3_ACCESS_KEY_ID": secrets[secret_s3_key_id(inst)],
            "S3_SECRET_ACCESS_KEY": secrets[secret_s3_key_secret(inst)],
            "S3_FORCE_PATH_STYLE": "true",
        })
    if "realtime" in inst.needs:
        env.update(centrifugo_app_env(platform_domain, [streaming_addr], centrifugo_internal_port, secrets))
    return env


def env_file_text(env: Mapping[str, str]) -> str:
    """KEY=value lines for systemd/Podman EnvironmentFile (values are alphanumeric URLs)."""
    for key, value in env.items():
        if "\n" in value or '"' in value or "\\" in value:
            raise ValueError(f"env: value of {key} cannot be written to an env file")
    return "".join(f"{k}={v}\n" for k, v in env.items())


def app_upstreams(inst: Instance, slot: str, app_addrs: list[str], self_addr: str) -> list[str]:
    """Where Caddy sends an instance's traffic: the active slot on this host alone, or on
    every app host when the group has several (each publishes its slots on its private address)."""
    port = inst.slot_ports[slot]
    if len(app_addrs) <= 1:
        return [f"127.0.0.1:{port}"]
    return [f"{addr}:{port}" for addr in sorted(app_addrs)]


def app_publish_addr(app_addrs: list[str], self_addr: str) -> str:
    """Slot ports stay on localhost unless other app hosts' Caddy must reach them."""
    return "127.0.0.1" if len(app_addrs) <= 1 else self_addr


def caddy_lb_policy(policy: str, inst: Instance) -> str:
    """Caddy's lb_policy line for a registry policy (cookie: sticky per instance)."""
    return {"round_robin": "round_robin", "least_conn": "least_conn", "ip_hash": "ip_hash",
            "cookie": f"cookie lb_{sql_name(inst)}"}[policy]


def other_slot(slot: str) -> str:
    from .registry import SLOTS

    return SLOTS[1 - SLOTS.index(slot)]


def initial_release_state(image: str) -> dict:
    """Before the first release: blue active, both slots on the registry's image."""
    return {"active": "blue", "previous": None, "slots": {"blue": image, "green": image}}


def registry_auth_json(registry: str, username: str, token: str) -> str:
    import base64
    import json

    auth = base64.b64encode(f"{username}:{token}".encode()).decode()
    return json.dumps({"auths": {registry: {"auth": auth}}}, indent=2, sort_keys=True) + "\n"


# --- streaming host: Centrifugo ----------------------------------------------------------


def ws_domain(platform_domain: str) -> str:
    """The public WebSocket endpoint's name (Caddy site on the streaming hosts)."""
    return f"ws.{platform_domain}"


# Client permissions Centrifugo v6 knows per namespace; every namespace states all of them.
CENTRIFUGO_PERMISSIONS = (
    "allow_subscribe_for_client", "allow_subscribe_for_anonymous",
    "allow_publish_for_client", "allow_publish_for_subscriber", "allow_publish_for_anonymous",
    "allow_presence_for_client", "allow_presence_for_subscriber", "allow_presence_for_anonymous",
    "allow_history_for_client", "allow_history_for_subscriber", "allow_history_for_anonymous",
    "allow_user_limited_channels",
)
CENTRIFUGO_NAMESPACE_KEYS = {"personal", "open", "presence", "history_size", "history_ttl", "id_regex"}
# What follows `<namespace>:` in a channel name: an identifier chosen by the app.
CENTRIFUGO_ID_REGEX = "^[A-Za-z0-9_-]{1,64}$"


def centrifugo_namespaces(spec: Mapping[str, Mapping]) -> list[dict]:
    """Expand the data's namespace table into Centrifugo v6 namespace objects.

    Per namespace, the data says:
      personal:     channels `<ns>:#<user id>` (user-limited), readable by that user only
      open:         any authenticated client may subscribe without a subscription token
                    (default false: the app decides membership by signing subscription tokens)
      presence:     presence and join/leave for subscribers
      history_size, history_ttl: history kept, with recovery forced on subscribe
    Clients never publish (the apps publish through the server API after their own checks),
    and anonymous clients get nothing. Every permission is written out, true or false.
    """
    out = []
    for name, ns in sorted(spec.items()):
        unknown = set(ns) - CENTRIFUGO_NAMESPACE_KEYS
        if unknown:
            raise ValueError(f"centrifugo namespace {name!r}: unknown keys {sorted(unknown)}")
        personal = bool(ns.get("personal"))
        presence = bool(ns.get("presence"))
        history = int(ns.get("history_size", 0)) > 0
        if history and not ns.get("history_ttl"):
            raise ValueError(f"centrifugo namespace {name!r}: history_size needs history_ttl")
        if personal and ns.get("open"):
            raise ValueError(f"centrifugo namespace {name!r}: a personal namespace cannot be open")
        perms = dict.fromkeys(CENTRIFUGO_PERMISSIONS, False)
        perms["allow_subscribe_for_client"] = bool(ns.get("open"))
        perms["allow_user_limited_channels"] = personal
        perms["allow_presence_for_subscriber"] = presence
        perms["allow_history_for_subscriber"] = history
        id_regex = ns.get("id_regex", CENTRIFUGO_ID_REGEX)
        # A personal channel is `#<one user id>`: no `,`-separated list of users.
        regex = "^#" + id_regex.lstrip("^") if personal else id_regex
        out.append({
            "name": name,
            **perms,
            "presence": presence,
            "join_leave": presence,
            "force_push_join_leave": False,
            "history_size": int(ns.get("history_size", 0)),
            "history_ttl": ns.get("history_ttl", "0s") if history else "0s",
            "force_positioning": history,
            "force_recovery": history,
            "channel_regex": regex,
        })
    return out


def centrifugo_without_namespace() -> dict:
    """Channels outside every namespace: refused (no name matches, nothing is allowed)."""
    return {**dict.fromkeys(CENTRIFUGO_PERMISSIONS, False), "presence": False, "history_size": 0,
            "channel_regex": "^$"}


def centrifugo_api_addr(streaming_addrs: Iterable[str]) -> str:
    """The streaming host apps publish to (any node works: with several, the Redis engine fans out)."""
    addrs = sorted(streaming_addrs)
    if not addrs:
        raise ValueError("centrifugo: the streaming group has no host")
    return addrs[0]


def centrifugo_clustered(streaming_addrs: Iterable[str]) -> bool:
    """More than one Centrifugo node: Redis engine, client port on the private address, sticky Caddy."""
    return len(set(streaming_addrs)) > 1


def centrifugo_client_listen(streaming_addrs: Iterable[str], private_ip: str) -> str:
    """Where the client (WebSocket) port listens: localhost for the local Caddy, or the private
    address when Caddy on every streaming host balances over all nodes."""
    return private_ip if centrifugo_clustered(streaming_addrs) else "127.0.0.1"


def centrifugo_upstreams(streaming_addrs: Iterable[str], client_port: int) -> list[str]:
    addrs = sorted(set(streaming_addrs))
    if not centrifugo_clustered(addrs):
        return [f"127.0.0.1:{client_port}"]
    return [f"{a}:{client_port}" for a in addrs]


def centrifugo_redis_addresses(storage_addrs: Iterable[str], redis_port: int) -> list[str]:
    return [f"redis://{a}:{redis_port}" for a in sorted(storage_addrs)]


def centrifugo_app_env(platform_domain: str, streaming_addrs: Iterable[str], internal_port: int,
                       secrets: Mapping[str, str]) -> dict[str, str]:
    """What an app's env file gets for realtime: the public wss URL, the internal API URL,
    the API key and the HMAC secret the app signs connection and subscription tokens with."""
    return {
        **centrifugo_urls(platform_domain, centrifugo_api_addr(streaming_addrs), internal_port),
        "CENTRIFUGO_API_KEY": secrets["centrifugo_api_key"],
        "CENTRIFUGO_SECRET": secrets["centrifugo_hmac_secret"],
    }


# --- backup host: pgBackRest, file backups, monitoring ------------------------------------

PGBACKREST_CONF = "/etc/pgbackrest/pgbackrest.conf"
PGBACKREST_TLS_DIR = "/etc/pgbackrest/tls"


def pgbackrest_archive_command(stanza: str) -> str:
    """PostgreSQL's archive_command: pgBackRest pushes each WAL segment (asynchronously,
    in batches, through its spool) to the repository host."""
    return f"pgbackrest --stanza={stanza} archive-push %p"


def pgbackrest_tls_auth(client_cns: Iterable[str], stanza: str) -> list[str]:
    """tls-server-auth values: which client certificate (by CN) may use which stanza."""
    return [f"{cn}={stanza}" for cn in sorted(set(client_cns))]


def tls_names(short: str, platform_domain: str) -> list[str]:
    """DNS names in a host's certificate (pgBackRest verifies DNS names, not IP addresses);
    the first is the CN. Both resolve through /etc/hosts (roles/common)."""
    return [fqdn(short, platform_domain), short]


def pgbackrest_repo_host(backup_hosts: Iterable[str]) -> str:
    """The repository host the database hosts push WAL to: the first backup host."""
    hosts = sorted(backup_hosts)
    if not hosts:
        raise ValueError("pgbackrest: the backup group has no host")
    return hosts[0]


def pgbackrest_conf(role: str, *, stanza: str, private_ip: str, tls_port: int, peer_names: list[str],
                    pg_path: str, pg_port: int, settings: Mapping[str, object],
                    tls_dir: str = PGBACKREST_TLS_DIR) -> dict[str, dict[str, str]]:
    """pgbackrest.conf as {section: {option: value}} for a database host (`role="pg"`,
    peer_names = [repository host name]) or the repository host (`role="repo"`,
    peer_names = database host names). TLS both ways: each host runs `pgbackrest server`
    on its private address and accepts only the peer certificates' CNs for the stanza."""
    tls = {"ca-file": f"{tls_dir}/ca.crt", "cert-file": f"{tls_dir}/host.crt", "key-file": f"{tls_dir}/host.key"}
    glob: dict[str, str] = {
        "log-level-console": "info",
        "log-level-file": "detail",
        "log-path": "/var/log/pgbackrest",
        "compress-type": str(settings.get("compress_type", "zst")),
        "compress-level": str(settings.get("compress_level", 3)),
        "process-max": str(settings.get("process_max", 2)),
        "tls-server-address": private_ip,
        "tls-server-port": str(tls_port),
        **{f"tls-server-{k}": v for k, v in tls.items()},
    }
    stanza_opts: dict[str, str] = {}
    if role == "pg":
        repo = pgbackrest_repo_host(peer_names)
        glob.update({
            "archive-async": "y",
            "spool-path": "/var/spool/pgbackrest",
            # If the repository is unreachable this long, WAL is dropped rather than filling
            # the database disk (PITR then needs a new full backup): data, see all.py.
            "archive-push-queue-max": str(settings.get("archive_push_queue_max", "4GiB")),
            "repo1-host": repo,
            "repo1-host-type": "tls",
            "repo1-host-port": str(tls_port),
            **{f"repo1-host-{k}": v for k, v in tls.items()},
            "tls-server-auth": ",".join(pgbackrest_tls_auth([repo], stanza)),
        })
        stanza_opts = {"pg1-path": pg_path, "pg1-port": str(pg_port), "pg1-socket-path": "/var/run/postgresql"}
    elif role == "repo":
        glob.update({
            "repo1-path": str(settings["repo_path"]),
            "repo1-retention-full-type": "count",
            "repo1-retention-full": str(settings["retention_full"]),
            "repo1-bundle": "y",
            "repo1-block": "y",
            "start-fast": "y",
            "archive-timeout": str(settings.get("archive_check_timeout", 120)),
            "tls-server-auth": ",".join(pgbackrest_tls_auth(peer_names, stanza)),
        })
        for i, name in enumerate(sorted(peer_names), start=1):
            stanza_opts.update({
                f"pg{i}-host": name, f"pg{i}-host-type": "tls", f"pg{i}-host-port": str(tls_port),
                **{f"pg{i}-host-{k}": v for k, v in tls.items()},
                f"pg{i}-path": pg_path, f"pg{i}-port": str(pg_port),
            })
    else:
        raise ValueError(f"pgbackrest: unknown role {role!r}")
    return {"global": glob, stanza: stanza_opts}


def ini_text(sections: Mapping[str, Mapping[str, str]]) -> str:
    out = []
    for name, opts in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k}={v}" for k, v in opts.items())
        out.append("")
    return "\n".join(out)


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


def prometheus_scrape_configs(hosts: Iterable[tuple[str, str]], group_addrs: Mapping[str, list[str]], *,
                              node_port: int, centrifugo_port: int, s3_admin_port: int,
                              s3_metrics_token_file: str) -> list[dict]:
    """Prometheus scrape jobs: node-exporter on every host (labelled by host name),
    Centrifugo on the streaming hosts, Garage's metrics (admin port, bearer token) on the
    storage hosts."""
    hosts = sorted(hosts)
    by_addr = {a: n for n, a in hosts}

    def targets(addrs, port):
        return [{"targets": [f"{a}:{port}"], "labels": {"host": by_addr.get(a, a)}} for a in sorted(addrs)]

    return [
        {"job_name": "node", "static_configs": targets([a for _, a in hosts], node_port)},
        {"job_name": "centrifugo", "metrics_path": "/metrics",
         "static_configs": targets(group_addrs.get("streaming", []), centrifugo_port)},
        {"job_name": "garage", "metrics_path": "/metrics",
         "authorization": {"type": "Bearer", "credentials_file": s3_metrics_token_file},
         "static_configs": targets(group_addrs.get("storage", []), s3_admin_port)},
    ]


def duration_seconds(value: str) -> int:
    """'26h', '5m', '90s', '7d' -> seconds (the data's spelling of alert thresholds)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if not value or value[-1] not in units or not value[:-1].isdigit():
        raise ValueError(f"duration {value!r}: expected <n>s, <n>m, <n>h or <n>d")
    return int(value[:-1]) * units[value[-1]]
