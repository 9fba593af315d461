"""Staging: same shape as production, on its own hosts (see inventory/staging.py)."""

environment = "staging"
platform_domain = "staging.codeb.kr"
tls_mode = "acme"
acme_email = "ops@codeb.kr"
apt_proxy = None
admin_networks = ["0.0.0.0/0", "::/0"]
deploy_ssh_public_key = None
