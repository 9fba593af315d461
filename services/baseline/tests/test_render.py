"""The common role's files, rendered for every host of every inventory and checked by the real tools."""

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from codeb import shared
from codeb.inventory import group_addrs, mesh_peers, platform_hosts
from services.baseline import model as baseline_model
from services.baseline import rendered_files
from tests.unit.conftest import all_hosts

HOSTS = all_hosts()
IDS = [f"{env}-{h.name}" for env, _, h in HOSTS]


def files_of(inv, host):
    return rendered_files(host.data, host.name, host.groups, group_addrs(inv), platform_hosts(inv), mesh_peers(inv))


@pytest.mark.parametrize("env,inv,host", HOSTS, ids=IDS)
def test_nftables_ruleset_is_accepted_by_nft(env, inv, host, tmp_path):
    content, _ = files_of(inv, host)["/etc/nftables.conf"]
    path = tmp_path / "nftables.conf"
    path.write_text(content)
    proc = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "policy drop;" in content.split("chain input")[1].split("}")[0]
    assert "policy drop;" in content.split("chain forward")[1].split("}")[0]


@pytest.mark.parametrize("env,inv,host", HOSTS, ids=IDS)
def test_firewall_never_locks_out_the_admins(env, inv, host):
    content, _ = files_of(inv, host)["/etc/nftables.conf"]
    ssh_rules = [line for line in content.splitlines() if 'comment "ssh"' in line]
    # Production and staging leave admin_networks for the admins to set (the preflight
    # refuses an apply until then): no rule, and never one open to everyone.
    assert bool(ssh_rules) == bool(host.data.admin_networks)
    assert all("saddr" in line for line in ssh_rules)
    for net in host.data.admin_networks:
        assert any(net in line for line in ssh_rules), (net, ssh_rules)


@pytest.mark.parametrize("env,inv,host", HOSTS, ids=IDS)
def test_node_exporter_only_from_the_backup_host(env, inv, host):
    content, _ = files_of(inv, host)["/etc/nftables.conf"]
    rules = [line.strip() for line in content.splitlines() if 'comment "node-exporter"' in line]
    backup = group_addrs(inv)["backup"]
    assert rules == [f"iifname \"wg0\" ip saddr {{ {', '.join(a + '/32' for a in backup)} }} tcp dport 9100 accept "
                     f'comment "node-exporter"']


@pytest.mark.parametrize("env,inv,host", HOSTS, ids=IDS)
def test_sshd_dropin_is_valid_and_effective(env, inv, host, tmp_path):
    content, mode = files_of(inv, host)["/etc/ssh/sshd_config.d/10-platform.conf"]
    (tmp_path / "10-platform.conf").write_text(content)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hostkey")], check=True)
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {tmp_path}/10-platform.conf\nHostKey {tmp_path}/hostkey\n")
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd -t insists on its privilege separation directory
    subprocess.run([sshd, "-t", "-f", str(main)], check=True)
    effective = subprocess.run([sshd, "-T", "-f", str(main)], capture_output=True, text=True, check=True).stdout
    for expected in ("permitrootlogin no", "passwordauthentication no", "kbdinteractiveauthentication no",
                     f"allowgroups {host.data.ssh_group}", "x11forwarding no", "maxauthtries 3"):
        assert expected in effective.splitlines(), expected
    assert mode == "600"


@pytest.mark.parametrize("env,inv,host", HOSTS, ids=IDS)
def test_sudoers_is_accepted_by_visudo(env, inv, host, tmp_path):
    content, mode = files_of(inv, host)["/etc/sudoers.d/platform"]
    path = tmp_path / "platform"
    path.write_text(content)
    subprocess.run(["visudo", "-c", "-q", "-f", str(path)], check=True)
    assert mode == "440"


@pytest.mark.parametrize("env,inv,host", HOSTS, ids=IDS)
def test_hosts_file_names_every_platform_host(env, inv, host):
    content, _ = files_of(inv, host)["/etc/hosts"]
    for name, addr in platform_hosts(inv):
        assert f"{addr}\t{name}.{host.data.platform_domain} {name}" in content


def test_environment_differences_are_data():
    """Local uses the gateway's apt proxy and the internal CA; production neither."""
    by_env = {env: h for env, _, h in HOSTS}
    assert by_env["local"].data.apt_proxy and by_env["local"].data.tls_mode == "internal"
    assert not by_env["production"].data.apt_proxy and by_env["production"].data.tls_mode == "acme"
    assert by_env["production"].data.platform_domain == "codeb.kr"
    assert by_env["local"].data.platform_domain == "codeb.test"


@pytest.mark.parametrize("env,inv,host", HOSTS, ids=IDS)
def test_wireguard_config_names_every_other_host_and_only_its_own_key(env, inv, host):
    files = files_of(inv, host)
    content, mode = files["/etc/wireguard/wg0.conf"]
    assert mode == "600"
    peers = [p for p in mesh_peers(inv) if p["name"] != host.name]
    assert content.count("[Peer]") == len(peers)
    assert f"Address = {host.data.private_ip}/24" in content
    for p in peers:
        assert f"Endpoint = {p['public_ip']}:{host.data.wireguard_port}" in content
        assert f"AllowedIPs = {p['private_ip']}/32" in content
    # No other host's private key, ever.
    seed = host.data.secrets[shared.SECRET_WIREGUARD_SEED]
    for p in peers:
        assert baseline_model.wireguard_private_key(seed, p["name"]) not in content
    assert f"PrivateKey = {baseline_model.wireguard_private_key(seed, host.name)}" in content


@pytest.mark.parametrize("env,inv,host", HOSTS, ids=IDS)
def test_the_mesh_port_is_open_only_to_the_platform_hosts(env, inv, host):
    content, _ = files_of(inv, host)["/etc/nftables.conf"]
    (rule,) = [line.strip() for line in content.splitlines() if 'comment "wireguard"' in line]
    publics = sorted((p["public_ip"] for p in mesh_peers(inv)), key=ipaddress.ip_address)
    assert rule == f"ip saddr {{ {', '.join(a + '/32' for a in publics)} }} udp dport 51820 accept comment \"wireguard\""


@pytest.mark.parametrize("env,inv,host", HOSTS, ids=IDS)
def test_internal_ports_are_bound_to_the_private_interface(env, inv, host):
    content, _ = files_of(inv, host)["/etc/nftables.conf"]
    for line in content.splitlines():
        if "accept comment" in line and "saddr" in line and "dport" in line:
            name = line.split('comment "')[1].rstrip('"')
            public = name in ("ssh", "wireguard")
            assert ('iifname "wg0"' in line) is not public, line
    exporter, _ = files_of(inv, host)["/etc/default/prometheus-node-exporter"]
    assert f"--web.listen-address={host.data.private_ip}:9100" in exporter


@pytest.mark.parametrize("env,inv,host", HOSTS, ids=IDS)
def test_internal_uis_are_reached_through_ssh_tunnels_only(env, inv, host):
    content, _ = files_of(inv, host)["/etc/ssh/sshd_config.d/10-platform.conf"]
    if "backup" in host.groups:
        assert "AllowTcpForwarding local" in content
        assert f"PermitOpen {host.data.private_ip}:{host.data.prometheus_port}" in content
    else:
        assert "AllowTcpForwarding no" in content and "PermitOpen" not in content
    assert not any(r["name"] == "prometheus" for r in shared.firewall_rules(
        host.groups, host.data.firewall_services, group_addrs(inv), host.data.admin_networks))


@pytest.mark.parametrize("env,inv,host", [h for h in HOSTS if "storage" in h[2].groups],
                         ids=[i for i, h in zip(IDS, HOSTS, strict=True) if "storage" in h[2].groups])
def test_minio_port_is_open_only_while_a_storage_host_migrates(env, inv, host):
    """MinIO's port stays open to the app and backup hosts (mesh only) while the storage host
    still runs MinIO, and is closed otherwise."""
    def minio_lines(migrating):
        content = rendered_files(host.data, host.name, host.groups, group_addrs(inv), platform_hosts(inv),
                                 mesh_peers(inv), minio_migration=migrating)["/etc/nftables.conf"][0]
        return [line for line in content.splitlines() if 'comment "minio-migration"' in line]

    assert minio_lines(False) == []
    lines = minio_lines(True)
    assert lines and all("dport 9000" in line and 'iifname "' in line for line in lines)
    app = set(group_addrs(inv)["app"]) | set(group_addrs(inv)["backup"])
    assert all(a in " ".join(lines) for a in app)
