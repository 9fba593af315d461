"""The baseline on every host of the topology, checked on the hosts and from the gateway."""

import subprocess

import pytest

from tests.topology.conftest import addr, connect, gateway_ssh, group_data, inventory, private

DATA = group_data()


def test_hostname_and_platform_names(any_host):
    name, h = any_host
    assert h.check_output("hostname") == name
    hosts_file = h.file("/etc/hosts").content_string
    for other, info in inventory().items():
        # Platform names are the private (mesh) addresses: what the hosts talk to each other on.
        assert f"{info.private_ip}\t{other}.{DATA['platform_domain']} {other}" in hosts_file


def test_sshd_effective_config_is_hardened(any_host):
    name, h = any_host
    effective = h.check_output("sshd -T").splitlines()
    for line in ("permitrootlogin no", "passwordauthentication no", "kbdinteractiveauthentication no",
                 f"allowgroups {DATA['ssh_group']}", "x11forwarding no", "permittunnel no"):
        assert line in effective, line
    # Forwarding only where an internal UI runs, and only to it (admins' SSH tunnels).
    uis = sorted(f"{private(name) if a == 'private' else a}:{port}"
                 for g, entries in DATA["admin_uis"].items() if g in inventory()[name].groups for a, port in entries)
    if uis:
        assert "allowtcpforwarding local" in effective
        assert f"permitopen {' '.join(uis)}" in effective
    else:
        assert "allowtcpforwarding no" in effective


@pytest.mark.each_host
def test_root_login_is_refused(name):
    proc = gateway_ssh("root", name)
    assert proc.returncode == 255 and "Permission denied" in proc.stderr, proc.stderr


@pytest.mark.each_host
def test_password_authentication_is_refused(name):
    proc = gateway_ssh(DATA["deploy_user"], name, "-o", "PubkeyAuthentication=no",
                       "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr, proc.stderr


@pytest.mark.each_host
def test_deploy_account_logs_in_with_its_key(name):
    proc = gateway_ssh(DATA["deploy_user"], name)
    assert proc.returncode == 0, proc.stderr


def test_accounts_follow_the_team_registry(any_host):
    _, h = any_host
    deploy = h.user(DATA["deploy_user"])
    assert deploy.exists and DATA["ssh_group"] in deploy.groups
    for person in DATA["team"]:
        account = h.user(person["name"])
        if person["role"] == "admin":
            assert account.exists and DATA["ssh_group"] in account.groups
        else:
            assert not account.exists, f"{person['role']} {person['name']} must have no account"


def test_firewall_is_default_deny_and_enabled_at_boot(any_host):
    _, h = any_host
    ruleset = h.check_output("nft list table inet platform")
    assert "hook input priority filter; policy drop;" in ruleset
    assert "hook forward priority filter; policy drop;" in ruleset
    assert h.service("nftables").is_enabled


def test_node_exporter_answers_only_the_backup_host(any_host):
    name, h = any_host
    assert h.service("prometheus-node-exporter").is_running
    url = f"http://{private(name)}:9100/metrics"
    for other in inventory():
        result = connect(other).run(f"curl -sS -m 3 -o /dev/null -w '%{{http_code}}' {url}")
        if "backup" in inventory()[other].groups:
            assert result.stdout == "200", (other, result.stderr)
        elif other != name:
            assert result.rc != 0, f"{other} reached node-exporter on {name}"
    gw = subprocess.run(["curl", "-sS", "-m", "3", f"http://{addr(name)}:9100/metrics"], capture_output=True)
    assert gw.returncode != 0, "the gateway reached node-exporter on the public address"
    assert f"{private(name)}:9100 " in h.check_output("ss -Hltn") and ":9100 " not in \
        h.check_output("ss -Hltn").replace(f"{private(name)}:9100 ", ""), "node-exporter listens beyond the private address"


def test_upkeep_services(any_host):
    _, h = any_host
    assert h.service("unattended-upgrades").is_enabled
    assert h.service("systemd-timesyncd").is_enabled
    assert 'Unattended-Upgrade "1"' in h.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    journald = h.file("/etc/systemd/journald.conf.d/10-platform.conf").content_string
    assert f"SystemMaxUse={DATA['journald_max_use']}" in journald


def test_apt_goes_through_the_environment_proxy(any_host):
    _, h = any_host
    assert h.file("/etc/apt/apt.conf.d/01platform-proxy").contains(DATA["apt_proxy"])
    # The guests have no route beyond the bridge: only the proxy gets packages.
    assert "default" not in h.check_output("ip route")
