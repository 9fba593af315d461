"""Caddy's global Caddyfile, for every inventory, checked by `caddy validate`."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from services.caddy import caddyfile, tls_directive, validate_site
from tests.unit.conftest import INVENTORIES, load_inventory


def _throwaway_ca(folder):
    """root.crt and root.key where the hosts have the environment's CA (a self-signed EC key)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit-test CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
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
    caddy = shutil.which("caddy")
    if not caddy:
        pytest.skip("caddy is not installed (make deps)")
    (tmp_path / "sites").mkdir()
    text = caddyfile(data).replace("/etc/caddy/sites/", f"{tmp_path}/sites/")
    if data.tls_mode == "internal":
        text = text.replace("/etc/caddy/pki/", f"{tmp_path}/")
        _throwaway_ca(tmp_path)
    (tmp_path / "Caddyfile").write_text(text)
    proc = subprocess.run([caddy, "validate", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_sites_carry_tls_internal_only_in_internal_mode():
    assert tls_directive("internal") == "tls internal"
    assert tls_directive("acme") == ""


def test_a_site_is_validated_inside_a_copy_of_the_live_configuration():
    """The check of a new site file never reads the live sites directory in place: it copies
    it, swaps in the new file, validates a Caddyfile importing the copy and removes the copy."""
    cmd = validate_site("app-shop")
    assert "cp -a /etc/caddy/sites/." in cmd and '"$d"/app-shop.caddy' in cmd
    assert "caddy validate --adapter caddyfile" in cmd and 'rm -rf "$d"' in cmd
