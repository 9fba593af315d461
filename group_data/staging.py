"""Staging: same shape as production, on its own hosts (see inventory/staging.py)."""

environment = "staging"
platform_domain = "staging.codeb.kr"
tls_mode = "acme"
acme_email = "ops@codeb.kr"
apt_proxy = None
# Explicit networks only (see production.py); to be set before the first apply.
admin_networks: list[str] = []
deploy_ssh_public_key = None
