"""Production: the four servers of the operations manual."""

environment = "production"
platform_domain = "codeb.kr"
# Public TLS through ACME (Caddy's automatic HTTPS).
tls_mode = "acme"
acme_email = "ops@codeb.kr"
apt_proxy = None
# Who reaches SSH (22) on the public addresses: the admins' and the CI runner's networks.
# Explicit networks only: the preflight refuses an empty list and any catch-all
# (0.0.0.0/0, ::/0). Internal UIs (Prometheus, ...) are reached through SSH tunnels.
admin_networks: list[str] = []  # to be set by the admins before the first apply
# Public key of the CI deploy account (the private half is a repository secret).
deploy_ssh_public_key = None
# App images are private on GHCR: the token is the secret `container_registry_token`.
container_registry_auth = {"registry": "ghcr.io", "username": "codeb-kr"}
