"""The baseline on every host of the topology, checked on the hosts and from the gateway."""

import subprocess

import pytest

from codeb import derive
from tests.topology.conftest import addr, connect, gateway_ssh, group_data, hosts_in, inventory

DATA = group_data()


def test_hostname_and_platform_names(any_host):
    name, h = any_host
    assert h.check_output("hostname") == name
    hosts_file = h.file("/etc/hosts").content_string
    for other, info in inventory().items():
        assert f"{info['addr']}\t{other}.{DATA['platform_domain']} {other}" in hosts_file


def test_sshd_effective_config_is_hardened(any_host):
    _, h = any_host
    effective = h.check_output("sshd -T").splitlines()
    for line in ("permitrootlogin no", "passwordauthentication no", "kbdinteractiveauthentication no",
                 f"allowgroups {DATA['ssh_group']}", "x11forwarding no", "allowtcpforwarding no"):
        assert line in effective, line


@pytest.mark.parametrize("name", list(inventory()))
def test_root_login_is_refused(name):
    proc = gateway_ssh("root", addr(name))
    assert proc.returncode == 255 and "Permission denied" in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", list(inventory()))
def test_password_authentication_is_refused(name):
    proc = gateway_ssh(DATA["deploy_user"], addr(name), "-o", "PubkeyAuthentication=no",
                       "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", list(inventory()))
def test_deploy_account_logs_in_with_its_key(name):
    proc = gateway_ssh(DATA["deploy_user"], addr(name))
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


def expected_open_from_gateway(name: str) -> set[int]:
    """Ports the firewall data opens to the gateway (an admin network here) on this host."""
    rules = derive.firewall_rules(inventory()[name]["groups"], DATA["firewall_services"],
                                  {g: [addr(n) for n in hosts_in(g)] for g in ("app", "streaming", "storage",
                                                                                 "backup")},
                                  DATA["admin_networks"])
    gateway = DATA["gateway"]
    return {r["port"] for r in rules if r["proto"] == "tcp" and (r["v4"] is None or f"{gateway}/32" in r["v4"])}


@pytest.fixture(scope="module")
def port_scan() -> dict[str, set[int]]:
    """One SYN scan of every TCP port of every guest from the gateway: address -> open ports."""
    addrs = [addr(n) for n in inventory()]
    out = subprocess.run(["nmap", "-Pn", "-sS", "-p-", "-T4", "--min-rate", "20000", "--max-retries", "1",
                          "-oG", "-", *addrs], capture_output=True, text=True, timeout=600, check=True).stdout
    found = {a: set() for a in addrs}
    for line in out.splitlines():
        if line.startswith("Host:") and "Ports:" in line:
            host = line.split()[1]
            found[host] = {int(p.split("/")[0]) for p in line.split("Ports:")[1].split(",") if "/open/" in p}
    return found


@pytest.mark.parametrize("name", list(inventory()))
def test_port_scan_from_the_gateway_finds_only_allowed_ports(name, port_scan):
    open_ports = port_scan[addr(name)]
    assert 22 in open_ports
    assert open_ports <= expected_open_from_gateway(name), open_ports


def test_firewall_is_default_deny_and_enabled_at_boot(any_host):
    _, h = any_host
    ruleset = h.check_output("nft list table inet platform")
    assert "hook input priority filter; policy drop;" in ruleset
    assert "hook forward priority filter; policy drop;" in ruleset
    assert h.service("nftables").is_enabled


def test_node_exporter_answers_only_the_backup_host(any_host):
    name, h = any_host
    assert h.service("prometheus-node-exporter").is_running
    url = f"http://{addr(name)}:9100/metrics"
    for other in inventory():
        result = connect(other).run(f"curl -sS -m 3 -o /dev/null -w '%{{http_code}}' {url}")
        if "backup" in inventory()[other]["groups"]:
            assert result.stdout == "200", (other, result.stderr)
        elif other != name:
            assert result.rc != 0, f"{other} reached node-exporter on {name}"
    gw = subprocess.run(["curl", "-sS", "-m", "3", url], capture_output=True)
    assert gw.returncode != 0, "the gateway reached node-exporter"


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
