"""Caddy's global Caddyfile, for every inventory, checked by `caddy validate`."""

from __future__ import annotations

import subprocess

import pytest

from codeb import artifacts
from codeb.ops import restart_commands
from services.caddy import (
    BINARY,
    CHECK,
    DIVERT,
    MARKER,
    RESTART,
    RESTART_MARKER,
    VALIDATE_CADDYFILE,
    caddyfile,
    tls_directive,
    validate_site,
)
from services.caddy.tests import pinned_caddy
from tests.unit.conftest import INVENTORIES, load_inventory


def _throwaway_ca(folder):
    """root.crt and root.key where the hosts have the environment's CA (a self-signed EC key).
    Valid for 30 days: Caddy 2.11 refuses a root that expires before the intermediates it
    issues (7 days by default); the environments' CAs live for years."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit-test CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    (folder / "root.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "root.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))


def _caddy_hosts():
    out = []
    for env in INVENTORIES:
        inv = load_inventory(env)
        h = next(h for h in inv if {"app", "streaming"} & set(h.groups))
        out.append(pytest.param(h.data, id=env))
    return out


@pytest.mark.parametrize("data", _caddy_hosts())
def test_the_global_caddyfile_passes_caddy_validate(data, tmp_path):
    caddy = pinned_caddy()
    (tmp_path / "sites").mkdir()
    text = caddyfile(data).replace("/etc/caddy/sites/", f"{tmp_path}/sites/")
    if data.tls_mode == "internal":
        text = text.replace("/etc/caddy/pki/", f"{tmp_path}/")
        _throwaway_ca(tmp_path)
    (tmp_path / "Caddyfile").write_text(text)
    proc = subprocess.run([caddy, "validate", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]  # Caddy logs errors to stdout


def test_sites_carry_tls_internal_only_in_internal_mode():
    assert tls_directive("internal") == "tls internal"
    assert tls_directive("acme") == ""


def test_a_site_is_validated_inside_a_copy_of_the_live_configuration():
    """The check of a new site file never reads the live sites directory in place: it copies
    it, swaps in the new file, validates a Caddyfile importing the copy and removes the copy."""
    cmd = validate_site("app-shop")
    assert "cp -a /etc/caddy/sites/." in cmd and '"$d"/app-shop.caddy' in cmd
    assert "caddy validate --adapter caddyfile" in cmd and 'rm -rf "$d"' in cmd


def test_the_pinned_caddy_is_the_pinned_version_with_the_rate_limit_plugin():
    caddy = pinned_caddy()
    pin = artifacts.pins()["caddy"]
    version = subprocess.run([caddy, "version"], capture_output=True, text=True, check=True).stdout
    assert version.split()[0] == pin["version"]
    modules = subprocess.run([caddy, "list-modules"], capture_output=True, text=True, check=True).stdout.split()
    assert "http.handlers.rate_limit" in modules and "http.handlers.reverse_proxy" in modules


def test_debians_binary_is_diverted_and_every_check_runs_the_pinned_one():
    """The package keeps its user, unit and /etc/caddy; its binary moves to caddy.debian (where
    upgrades of the package write it too), and the pinned one is what validates."""
    assert DIVERT == "dpkg-divert --local --rename --divert /usr/bin/caddy.debian --add /usr/bin/caddy"
    assert BINARY == "/usr/bin/caddy"
    for check in (CHECK, VALIDATE_CADDYFILE, validate_site("app-shop")):
        assert "/usr/bin/caddy validate " in check and " caddy validate" not in check


def test_a_new_binary_restarts_and_counts_as_the_configuration_reload():
    state, apply = restart_commands([BINARY], RESTART, marker=RESTART_MARKER, validate=CHECK)
    assert state.startswith(f"sha256sum {BINARY} ") and RESTART_MARKER in state
    assert apply.startswith(f"( {CHECK} ) && systemctl restart caddy && ")
    # The restart loaded the configuration too: its marker is recorded, so no reload follows.
    assert f"> {MARKER}" in apply and f"> {RESTART_MARKER}" in apply
    assert "systemctl reload" not in apply
