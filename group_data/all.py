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

# Who may reach which port: the firewall on every host is derived from this
# table (codeb/derive.py:firewall_rules). Sources: host groups, "@admin"
# (the environment's admin_networks) or "@any". Everything else is dropped.
firewall_services = {
    "ssh": {"port": 22, "on": "all", "from": ["@admin"]},
    "node-exporter": {"port": 9100, "on": "all", "from": ["backup"]},
    # Storage host (roles/storage). Streaming uses Redis only when Centrifugo is scaled out.
    "dns": {"port": 53, "proto": "both", "on": "storage", "from": ["@any"]},
    "postgresql": {"port": 5432, "on": "storage", "from": ["app", "backup"]},
    "redis": {"port": 6379, "on": "storage", "from": ["app", "streaming"]},
    "minio": {"port": 9000, "on": "storage", "from": ["app", "backup"]},
    "pdns-api": {"port": 8081, "on": "storage", "from": ["app"]},
    # App hosts (roles/app): Caddy serves every app domain; the slot ports stay on localhost.
    "app-http": {"port": 80, "on": "app", "from": ["@any"]},
    "app-https": {"port": 443, "on": "app", "from": ["@any"]},
}

# Baseline
timezone = "UTC"
journald_max_use = "500M"
journald_max_retention = "1month"
unattended_upgrades_reboot = False
node_exporter_port = 9100

# Binaries Debian does not package: pinned Go module versions, built on the
# control node by codeb/artifacts.py and uploaded with a checksum check.
artifacts = {
    # MinIO community edition: source-only, no longer maintained upstream (see README).
    "minio": {
        "module": "github.com/minio/minio",
        "version": "v0.0.0-20260212201848-7aac2a2c5b7c",
        "binary": "minio",
    },
    # MinIO client, for buckets, users and policies on the storage host: the version
    # the pinned server itself requires (go.mod of the minio pin), same maintenance risk.
    "mc": {
        "module": "github.com/minio/mc",
        "version": "v0.0.0-20250313080218-cf909e1063a9",
        "binary": "mc",
    },
}

# Storage host (roles/storage): PostgreSQL 17, Redis 8, MinIO, PowerDNS, all from Debian
# trixie except MinIO (artifacts above).
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
minio_port = 9000
minio_console_port = 9001  # localhost only
pdns_api_port = 8081
dns_ttl = 300

# App hosts (roles/app): Podman + Quadlet, blue/green slots per registry instance.
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
# derive.SECRET_CONTAINER_REGISTRY_TOKEN of the environment.
container_registry_auth = None
# Per container, enforced by systemd on the unit's cgroup.
app_limits = {"memory_max": "512M", "cpu_quota": "100%", "tasks_max": 512}
app_health = {"interval": "10s", "timeout": "5s", "retries": 3, "start_period": "10s"}
# systemctl start blocks until the health check passes (Notify=healthy), at most this long.
app_start_timeout = 120
app_lb_health_interval = "2s"
# Seconds between switching Caddy to the new slot and stopping the old one.
app_drain_seconds = 5
