"""Production: the four servers of the operations manual."""

environment = "production"
platform_domain = "codeb.kr"
# Public TLS through ACME (Caddy's automatic HTTPS).
tls_mode = "acme"
acme_email = "ops@codeb.kr"
apt_proxy = None
# SSH is key-only; narrow this to the admins' networks when they are fixed.
admin_networks = ["0.0.0.0/0", "::/0"]
# Public key of the CI deploy account (the private half is a repository secret).
deploy_ssh_public_key = None
# App images are private on GHCR: the token is the secret `container_registry_token`.
container_registry_auth = {"registry": "ghcr.io", "username": "codeb-kr"}
