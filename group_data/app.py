"""Data for app hosts (services/app)."""

# Podman's default bridge network: the containers' traffic to the storage and
# streaming hosts is forwarded (common firewall) and leaves masqueraded as the app
# host's own address, which pg_hba and the firewalls on n2/n3 allow.
container_networks = ["10.88.0.0/16"]
