"""The common role's files, rendered for every host of every inventory and checked by the real tools."""

import shutil
import subprocess
from pathlib import Path

import pytest

from roles.common import rendered_files
from roles.topology import group_addrs, platform_hosts
from tests.unit.conftest import all_hosts

HOSTS = all_hosts()
IDS = [f"{env}-{h.name}" for env, _, h in HOSTS]


def files_of(inv, host):
    return rendered_files(host.data, host.name, host.groups, group_addrs(inv), platform_hosts(inv))


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
    assert ssh_rules
    for net in host.data.admin_networks:
        assert any(net in line for line in ssh_rules), (net, ssh_rules)


@pytest.mark.parametrize("env,inv,host", HOSTS, ids=IDS)
def test_node_exporter_only_from_the_backup_host(env, inv, host):
    content, _ = files_of(inv, host)["/etc/nftables.conf"]
    rules = [line.strip() for line in content.splitlines() if 'comment "node-exporter"' in line]
    backup = group_addrs(inv)["backup"]
    assert rules == [f"ip saddr {{ {', '.join(a + '/32' for a in backup)} }} tcp dport 9100 accept "
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
