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
}
