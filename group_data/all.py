"""Data every host gets. Data only: no logic beyond loading the registry."""

from codeb import registry as _registry

# The project registry (group_data/projects.yml), validated.
projects = _registry.load()

# Team registry. Roles from the operations manual:
#   admin      -> an account with its SSH keys and sudo on every host
#   developer  -> no shell on the servers (deploys through CI)
#   viewer     -> no shell on the servers (dashboards and logs only)
# Add an admin's public keys to give them access; remove the entry to revoke it.
team = [
    {"name": "ops", "role": "admin", "ssh_keys": []},
    {"name": "dev", "role": "developer"},
    {"name": "viewer", "role": "viewer"},
]
team_roles = {
    "admin": "SSH account on every host, sudo, applies the deploy",
    "developer": "no server shell; deploys through CI and reads logs",
    "viewer": "no server shell; read-only dashboards",
}

# The account CI and `make apply` use; its public key is environment data.
deploy_user = "deploy"
ssh_group = "ssh-users"

# The private network. Every host has a public address (`public_ip` in the inventory:
# SSH from admin_networks, and the public services) and a private one (`private_ip`,
# inside private_network) on which every internal service binds and is allowed. By
# default the private network is a WireGuard mesh between all platform hosts (wg-quick@wg0,
# keys derived per host from the environment's `wireguard_seed` secret); an environment on
# a provider VPC sets private_interface to the VPC's interface and gets no mesh.
private_interface = "wg0"
private_network = "10.78.0.0/24"
wireguard_port = 51820
# Userspace WireGuard (a pinned wireguard-go artifact) for hosts whose kernel has no
# WireGuard module; None: the kernel module (production).
wireguard_userspace = None

# Internal UIs, reached by admins only through an SSH tunnel to the host that runs them
# (sshd allows local forwarding to exactly these): {group: [(address, port)]}, where the
# address "private" stands for the host's private address.
admin_uis = {"backup": [("private", 9090)]}

# Who may reach which port: the firewall on every host is derived from this
# table (codeb/shared.py:firewall_rules). Sources: host groups (their private
# addresses; such services are internal and allowed only on the private interface),
# "@admin" (the environment's admin_networks), "@platform" (the hosts' public
# addresses) or "@any". Everything else is dropped.
firewall_services = {
    "ssh": {"port": 22, "on": "all", "from": ["@admin"]},
    # The mesh's own transport, between the hosts' public addresses.
    "wireguard": {"port": 51820, "proto": "udp", "on": "all", "from": ["@platform"]},
    "node-exporter": {"port": 9100, "on": "all", "from": ["backup"]},
    # Storage host (services/postgresql, redis, garage, powerdns). Streaming uses Redis only when Centrifugo is scaled out.
    "dns": {"port": 53, "proto": "both", "on": "storage", "from": ["@any"]},
    "postgresql": {"port": 5432, "on": "storage", "from": ["app", "backup"]},
    # Streaming hosts: Redis is every Centrifugo's engine (history, presence, fan-out between nodes).
    "redis": {"port": 6379, "on": "storage", "from": ["app", "streaming"]},
    # Garage (S3): the S3 API to the app and backup hosts, its RPC between storage hosts
    # only, its admin API and /metrics to the backup host (Prometheus).
    "s3": {"port": 3900, "on": "storage", "from": ["app", "backup"]},
    "garage-rpc": {"port": 3901, "on": "storage", "from": ["storage"]},
    "garage-admin": {"port": 3903, "on": "storage", "from": ["backup"]},
    "pdns-api": {"port": 8081, "on": "storage", "from": ["app"]},
    # App hosts (services/app): Caddy serves every app domain; the slot ports stay on localhost.
    "app-http": {"port": 80, "on": "app", "from": ["@any"]},
    "app-https": {"port": 443, "on": "app", "from": ["@any"]},
    # With several app hosts each publishes its release slots on its private address so
    # every host's Caddy can balance across all of them; with one, slots stay on localhost.
    "app-slots": {"port": "4000-5999", "on": "app", "from": ["app@cluster"]},
    # Streaming hosts (services/centrifugo): one Centrifugo per app instance with realtime.
    # Each one's internal port (its registry port + centrifugo_internal_port_offset) serves
    # the HTTP API (/api, the instance's key required), /health and Prometheus /metrics on
    # the private address: opened to the app hosts (API) and the backup host (metrics).
    "ws-http": {"port": 80, "on": "streaming", "from": ["@any"]},  # ACME challenges, HTTPS redirect
    "ws-https": {"port": 443, "on": "streaming", "from": ["@any"]},
    "centrifugo-api": {"port": "24000-25999", "on": "streaming", "from": ["app"]},
    "centrifugo-metrics": {"port": "24000-25999", "on": "streaming", "from": ["backup"]},
    # Client ports (registry port + centrifugo_client_port_offset) on the private address:
    # every streaming host's Caddy balances over every node.
    "centrifugo-client": {"port": "14000-15999", "on": "streaming", "from": ["streaming"]},
    # Backup host (services/pgbackrest, restic, prometheus). pgBackRest talks TLS both ways (mutual certificates):
    # the repository host reaches the database host's `pgbackrest server` (backups), the
    # database host reaches the repository host's (WAL archive-push). File backups push
    # to rest-server (append-only) on the backup host. Prometheus listens on the backup
    # host's private address and no other host needs it: admins reach it through an SSH
    # tunnel (README, "Reaching internal UIs"), so it has no rule here.
    "pgbackrest-db": {"port": 8432, "on": "storage", "from": ["backup"]},
    "pgbackrest-repo": {"port": 8432, "on": "backup", "from": ["storage"]},
    "file-backup": {"port": 8443, "on": "backup", "from": ["app", "streaming", "storage"]},
}

# Baseline
timezone = "UTC"
# Client tools on every host, for admins checking services from where the apps run
# (and for the topology tests: psql, redis-cli, dig, curl from an app host).
admin_tools = ["postgresql-client", "redis-tools", "bind9-dnsutils", "curl"]
journald_max_use = "500M"
journald_max_retention = "1month"
unattended_upgrades_reboot = False
node_exporter_port = 9100

# Binaries Debian does not package: pinned Go module versions, built on the
# control node by `make artifacts` (codeb/artifacts.py) before pyinfra runs, with the Go
# toolchain below, and uploaded with a checksum check. Each `sha256` is the expected digest
# of the linux/amd64 build with that toolchain: a build that gives another digest fails.
# The toolchain is fetched through the Go module proxy when the local `go` is another release.
go_toolchain = "go1.26.8"
# Crates are built the same way with `cargo install --locked` (the crate's own lock file)
# and this Rust toolchain (rustup); their digests are as reproducible as the Go builds'.
rust_toolchain = "1.95.0"
artifacts = {
    # Garage (Deuxfleurs, AGPL-3.0), the S3 server of the storage hosts (services/garage):
    # maintained, replicated, published on crates.io with its lock file. Replaces MinIO
    # community edition, archived upstream with open advisories (docs/migrate-minio-to-garage.md).
    "garage": {
        "crate": "garage",
        "version": "2.5.0",
        "binary": "garage",
        "sha256": "d240d09dc1cf1314784544c1d2fd90602fe586e4cec3eb9a647d6fae17a04051",
    },
    # Centrifugo v6.9.1 (services/centrifugo). Its go.mod requires centrifuge
    # v0.38.1-0.20260711082514-84d40cc4dbf6, which the Go module proxy does not serve (403);
    # v0.40.1 is the only centrifuge version served, and it needs:
    #   - rueidis v1.0.79 (centrifuge v0.40.1 uses AuthCredentials.RefreshAfter and
    #     SentinelOption.TopologyRefreshInterval, absent from the v1.0.76 Centrifugo pins);
    #   - protocol v0.23.1 (selected automatically: centrifuge v0.40.1 imports its cfjson and
    #     cfprotobuf packages). protocol v0.23.1 renamed the vtprotobuf methods
    #     MarshalVT/UnmarshalVT to MarshalCF/UnmarshalCF, which Centrifugo's NATS broker calls:
    #     the five calls are renamed by `edits` (same protobuf wire format; the NATS broker is
    #     not used here). Nothing else is changed. No other v6 release is served.
    "centrifugo": {
        "module": "github.com/centrifugal/centrifugo/v6",
        "version": "v6.9.1",
        "binary": "centrifugo",
        "sha256": "3f6d8a01dadd6ff1623eeb4cbcfcaeab751c234d6a0098a88aa9a49b15ae8534",
        "ldflags": "-X github.com/centrifugal/centrifugo/v6/internal/build.Version=6.9.1",
        "replace": {
            "github.com/centrifugal/centrifuge": "github.com/centrifugal/centrifuge v0.40.1",
            "github.com/redis/rueidis": "github.com/redis/rueidis v1.0.79",
        },
        "edits": {
            "internal/natsbroker/broker.go": [
                ["push.MarshalVT()", "push.MarshalCF()"],
                ["push.UnmarshalVT(data)", "push.UnmarshalCF(data)"],
            ],
        },
    },
    # Caddy v2.11.9 with the rate-limit plugin (services/caddy, over Debian's package by
    # dpkg-divert): a `main` pin, Caddy's own main package plus the plugin's import. The Go
    # module proxy serves caddy-ratelimit v0.1.0 only (no version list, no newer tag); it
    # builds against Caddy v2.11.9 unchanged (minimal version selection keeps v2.11.9).
    "caddy": {
        "module": "github.com/caddyserver/caddy/v2",
        "version": "v2.11.9",
        "require": {"github.com/mholt/caddy-ratelimit": "v0.1.0"},
        "main": {
            "call": "github.com/caddyserver/caddy/v2/cmd.Main",
            "imports": ["github.com/caddyserver/caddy/v2/modules/standard", "github.com/mholt/caddy-ratelimit"],
        },
        "binary": "caddy",
        "sha256": "bce0bcd41fc40746a9a41936af9e353590b6dc33f22d24c06c1326a71c4218a8",
    },
}
# Control-node tools built the same way (not deployed): the workflow linter of the unit tests.
tool_artifacts = {
    "actionlint": {
        "module": "github.com/rhysd/actionlint",
        "version": "v1.7.12",
        "package": "github.com/rhysd/actionlint/cmd/actionlint",
        "binary": "actionlint",
        "sha256": "659cbb6f3503da09c749493160d2bcc09eeb325add9f9c2eecde869123e65ad2",
    },
}

# Streaming hosts (services/centrifugo): one Centrifugo per app instance with realtime
# (project x environment), each with its own token secret, API key, origins and Redis
# prefix, behind Caddy at wss://ws.<platform_domain>/<instance>/connection/websocket.
# Projects share no channel, no key and no process. Ports follow the registry's `port`
# (stable when projects come and go): client = port + offset, internal = port + offset.
centrifugo_client_port_offset = 10000  # 14000-15999, private address, for the streaming hosts' Caddy
centrifugo_internal_port_offset = 20000  # 24000-25999, private address: HTTP API, /health, /metrics
centrifugo_nofile = 65536
# Admin web UI: off. When true, served on the internal port only, with the generated
# centrifugo_admin_password (secrets), reachable from the hosts the firewall allows there.
centrifugo_admin = False
# How Caddy spreads clients over the streaming hosts' nodes. With the Redis engine every
# node delivers every publication, so no stickiness is needed (Centrifugo's docs).
centrifugo_lb_policy = "round_robin"
# A node is taken out of rotation for this long after a failed connection, and a restart
# waits until the node answers /health before the next node restarts (one node at a time).
centrifugo_restart_wait_seconds = 60
# Namespaces and their client permissions (services/centrifugo/model.py:centrifugo_namespaces). Membership
# of workspaces, projects and chats is the app's: it signs subscription tokens. `open: True`
# would let any authenticated client subscribe without one.
centrifugo_namespaces = {
    "user": {"personal": True},  # user:#<id>, readable only by that user
    "workspace": {"presence": True},
    # 1,000 publications: at 10 a second, a client away for 100 s (its streaming host stopped)
    # still recovers every one it missed.
    "project": {"history_size": 1000, "history_ttl": "24h"},
    "chat": {"presence": True, "history_size": 200, "history_ttl": "72h"},
}

# Storage host (services/postgresql, redis, powerdns, garage): PostgreSQL 17, Redis 8, PowerDNS from Debian trixie;
# Garage (S3) from its pin (artifacts above).
postgresql_version = 17
postgresql_port = 5432
postgresql_connection_limit = 20
# Room for every project's connection limit (20 each) plus administration.
postgresql_max_connections = 200
# Extra pg_hba.conf rules placed before the project rules, e.g. for the backup issue:
#   {"type": "local", "database": "all", "user": "backup", "method": "peer"}
# Empty until the backup role defines its tooling.
postgresql_hba_extra: list = []
redis_port = 6379
redis_maxmemory = "1gb"
# Garage: every listener on the private address. Replication factor 1 on one storage
# host; a second storage host joins the layout (README, "A second storage node"), and the
# factor can then go to 2 or 3 (a data move Garage does online). `consistent`: reads see
# every acknowledged write.
s3_port = 3900
# The region clients sign with: the one most clients (mc, SDKs) assume unless told.
s3_region = "us-east-1"
garage_rpc_port = 3901
garage_admin_port = 3903
garage_replication_factor = 1
garage_consistency_mode = "consistent"
garage_zone = "dc1"  # one zone per site; spread replicas over zones when there are several
garage_capacity = "100G"  # this node's share in the layout (relative weight, not a quota)
# While a storage host still runs MinIO (the migration, docs/migrate-minio-to-garage.md),
# its S3 port stays open to the app hosts until they have switched to Garage.
minio_migration_port = 9000
pdns_api_port = 8081
dns_ttl = 300

# App hosts (services/app): Podman + Quadlet, blue/green slots per registry instance.
# Every app image is the registry's unless an environment replaces it (local: the demo).
app_image_override = None
# containers.conf drop-in, {section: {key: value}}. Netavark writes its NAT and port
# forwarding rules with nftables (iptables is not installed).
podman_containers_conf = {"network": {"firewall_driver": "nftables"}}
# Extra `podman run` arguments for every app container (PodmanArgs=).
podman_run_args: list = []
# Registries pulled from over plain HTTP (registries.conf drop-in).
insecure_registries: list = []
# Private images: {"registry": host, "username": name}; the token is the secret
# shared.SECRET_CONTAINER_REGISTRY_TOKEN of the environment.
container_registry_auth = None
# Per container, enforced by systemd on the unit's cgroup.
app_limits = {"memory_max": "512M", "cpu_quota": "100%", "tasks_max": 512}
app_health = {"interval": "10s", "timeout": "5s", "retries": 3, "start_period": "10s"}
# systemctl start blocks until the health check passes (Notify=healthy), at most this long.
app_start_timeout = 120
app_lb_health_interval = "2s"
# Seconds between switching Caddy to the new slot and stopping the old one.
app_drain_seconds = 5
# Caddy (app sites; the ws. site of the streaming hosts reads it too): how long a reload keeps
# the WebSockets the previous configuration proxies open (reverse_proxy stream_close_delay)
# before closing them; "0s" closes them at once (Caddy's default). Every release and config
# change reloads Caddy: 5 minutes spans a series of releases and lets most connections end on
# their own, while the old configuration's connections (and its memory) do not linger for
# long. A release still ends its old slot's connections when it stops that slot.
caddy_stream_close_delay = "5m"

# `make health ENV=<env>`: what each host checks on itself (tools/health.py).
# App hosts also check every registry instance's /api/health on its slot ports.
health_checks = {
    "all": {"units": ["ssh", "nftables", "prometheus-node-exporter", "wg-quick@wg0"]},
    "storage": {
        "units": ["postgresql@17-main", "redis-server", "garage", "pdns"],
        "http": {"garage health": "http://{private_ip}:3903/health"},
    },
    "streaming": {"units": ["caddy"]},  # and every instance's centrifugo@<instance> (tools/health.py)
    "app": {"units": ["caddy"]},
    "backup": {"units": []},
}

# Backup host (services/pgbackrest, restic, prometheus): pgBackRest repository, file backups, restore drill, Prometheus.
pgbackrest_stanza = "main"
pgbackrest_tls_port = 8432
pgbackrest = {
    "repo_path": "/var/lib/pgbackrest",
    "retention_full": 7,  # daily full backups kept: a week of point-in-time recovery
    "compress_type": "zst",
    "compress_level": 3,
    "process_max": 2,
    "archive_push_queue_max": "4GiB",  # WAL dropped (not the database) if n4 is away that long
}
# Seconds after which PostgreSQL switches WAL segments when there was activity: the RPO.
postgresql_archive_timeout = 60
# systemd OnCalendar expressions (systemd.time(7)), host time zone (UTC).
backup_schedule = {
    "full": ["*-*-* 03:00:00"],
    "incr": ["*-*-* 09,15,21:00:00"],
    "verify": ["Sun *-*-* 05:00:00"],
    "drill": ["Sun *-*-* 06:00:00"],
    "files": ["Sun *-*-* 04:00:00"],
    "files_prune": ["Sun *-*-* 12:00:00"],
}
# The backup CA issuing the pgBackRest and rest-server certificates: None creates a
# dedicated CA on the control node (codeb/pki.py); environments may name one.
backup_ca = None
# Weekly file backups (restic to rest-server on the backup host): paths by host group.
file_backup_paths = {
    "all": ["/etc"],
    # Garage's data blocks and a metadata snapshot taken just before (services/restic).
    "storage": ["/var/lib/garage/data", "/var/lib/garage/meta/snapshots"],
    "app": ["/var/lib/caddy", "/var/lib/containers/storage/volumes"],
    "streaming": ["/var/lib/caddy"],
}
# Commands run just before a host's file backup, by host group: Garage writes a consistent
# snapshot of its metadata (into the backed-up snapshots directory).
file_backup_pre = {"storage": ["/usr/local/bin/garage -c /etc/garage.toml meta snapshot"]}
file_backup_port = 8443
file_backup_repo_path = "/srv/restic"
file_backup_retention = {"keep_weekly": 8, "keep_monthly": 6}
restore_drill_port = 5439
node_exporter_textfile_dir = "/var/lib/prometheus/node-exporter"
prometheus_port = 9090
prometheus_retention = "30d"
backup_alerts = {"backup_max_age": "26h", "wal_max_age": "5m", "file_backup_max_age": "8d",
                 "drill_max_age": "8d", "host_down_for": "2m"}
