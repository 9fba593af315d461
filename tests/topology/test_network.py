"""The public side and the private network, seen as an outsider, an admin and the hosts.

The lab's bridge is the public network. Two vantage points look at it: "the internet"
(a network namespace on the bridge whose address is not in admin_networks) and the
admins (the gateway, which is the local environment's admin network). Internal services
are reached only over the WireGuard mesh between the guests.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import subprocess

import pytest

from codeb import shared
from codeb.registry import HOST_GROUPS
from lab.topology import ensure_vantage
from services.baseline import model as baseline_model
from tests.topology.conftest import addr, group_data, hosts_in, inventory, lab_secrets, private, ssh_run

DATA = group_data()
INTERNET = "10.77.0.200"  # on the public bridge, outside admin_networks
PUBLIC_PORTS = {"app": {80, 443}, "streaming": {80, 443}, "storage": {53}, "backup": set()}


def public_ports(name: str) -> set[int]:
    ports: set[int] = set()
    for group in inventory()[name].groups:
        ports |= PUBLIC_PORTS[group]
    return ports


@pytest.fixture(scope="module")
def internet() -> str:
    outside = ipaddress.ip_address(INTERNET)
    assert not any(outside in ipaddress.ip_network(net) for net in DATA["admin_networks"])
    return ensure_vantage("internet", INTERNET)


def syn_scan(*, netns: str | None) -> dict[str, set[int]]:
    """One SYN scan of every TCP port of every guest's public address: address -> open ports."""
    addrs = [addr(n) for n in inventory()]
    cmd = ["nmap", "-Pn", "-sS", "-p-", "-T4", "--min-rate", "20000", "--max-retries", "1", "-oG", "-", *addrs]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True).stdout
    found = {a: set() for a in addrs}
    for line in out.splitlines():
        if line.startswith("Host:") and "Ports:" in line:
            host = line.split()[1]
            found[host] = {int(p.split("/")[0]) for p in line.split("Ports:")[1].split(",") if "/open/" in p}
    return found


@pytest.fixture(scope="module")
def scan_from_internet(internet):
    return syn_scan(netns=internet)


@pytest.fixture(scope="module")
def scan_from_admins():
    return syn_scan(netns=None)


@pytest.mark.each_host
def test_the_internet_sees_only_the_public_services(name, scan_from_internet):
    assert scan_from_internet[addr(name)] == public_ports(name), name


@pytest.mark.each_host
def test_admins_see_ssh_in_addition(name, scan_from_admins):
    assert scan_from_admins[addr(name)] == public_ports(name) | {22}, name


@pytest.mark.each_host
def test_dns_over_udp_answers_the_internet_only_on_dns_hosts(name, internet):
    ws = f"ws.{DATA['platform_domain']}"
    proc = subprocess.run(["ip", "netns", "exec", internet, "dig", "+notcp", "+time=2", "+tries=1", "+short",
                           f"@{addr(name)}", ws, "A"], capture_output=True, text=True, timeout=30)
    if "storage" in inventory()[name].groups:
        assert proc.returncode == 0 and sorted(proc.stdout.split()) == sorted(addr(n) for n in hosts_in("streaming")), proc
    else:
        assert proc.returncode != 0 and "timed out" in proc.stdout + proc.stderr, proc


def test_the_mesh_joins_every_host(any_host):
    name, h = any_host
    assert h.service("wg-quick@wg0").is_enabled and h.service("wg-quick@wg0").is_running
    others = [n for n in inventory() if n != name]
    allowed = h.check_output("wg show wg0 allowed-ips")
    endpoints = h.check_output("wg show wg0 endpoints")
    for other in others:
        assert f"{private(other)}/32" in allowed and f"{addr(other)}:{DATA['wireguard_port']}" in endpoints
        assert h.run(f"ping -c1 -W3 {private(other)}").rc == 0, f"{name} cannot reach {other} over the mesh"
    # The private key is the host's own, readable by root only.
    conf = h.file("/etc/wireguard/wg0.conf")
    assert conf.mode == 0o600 and conf.user == "root"
    assert h.check_output("wg show wg0 public-key") == baseline_model.wireguard_public_key(
        baseline_model.wireguard_private_key(lab_secrets()[shared.SECRET_WIREGUARD_SEED], name))


def internal_expectations() -> dict[str, list[tuple[str, int, bool]]]:
    """source host -> [(target address, port, should connect)] for every internal port of every
    other host: on its private address only from the groups the firewall data names, and never
    on its public address."""
    priv = {g: sorted(private(n) for n in hosts_in(g)) for g in HOST_GROUPS}
    allowed: dict[tuple[str, int], set[str]] = {}  # (target, port) -> source networks
    for target in inventory():
        for rule in shared.firewall_rules(inventory()[target].groups, DATA["firewall_services"], priv,
                                          DATA["admin_networks"], private_interface=DATA["private_interface"]):
            if rule["iif"] and rule["proto"] == "tcp" and isinstance(rule["port"], int):
                allowed.setdefault((target, rule["port"]), set()).update(rule["v4"])
    probes: dict[str, list[tuple[str, int, bool]]] = {}
    for source in inventory():
        for (target, port), nets in sorted(allowed.items()):
            if target == source:
                continue
            probes.setdefault(source, []).append((private(target), port, f"{private(source)}/32" in nets))
            probes.setdefault(source, []).append((addr(target), port, False))
    return probes


PROBE = r"""
while read -r a p; do
  ( if timeout 3 bash -c "exec 3<>/dev/tcp/$a/$p" 2>/dev/null; then echo "$a $p open"; else echo "$a $p closed"; fi ) &
done
wait
"""


@pytest.mark.each_host(arg="source")
def test_internal_ports_answer_only_over_the_mesh_and_only_to_the_hosts_that_need_them(source):
    probes = internal_expectations()[source]
    assert any(ok for _, _, ok in probes), "nothing to prove reachable"
    listing = "\n".join(f"{a} {p}" for a, p, _ in probes) + "\n"
    result = ssh_run(source, f"bash -c {shlex.quote(PROBE)}", stdin=listing, timeout=120)
    seen = {(a, int(p)): state == "open" for a, p, state in (line.split() for line in result.stdout.splitlines())}
    wrong = [(a, p, "expected open" if ok else "expected closed") for a, p, ok in probes if seen.get((a, p)) != ok]
    assert not wrong, (source, wrong)


# --- what crosses the public bridge ------------------------------------------------------------------


def secret_markers() -> dict[str, bytes]:
    """What must never be readable on the public network: every Redis password and S3 secret
    key, the Centrifugo and PowerDNS API keys, and the shapes of a Redis AUTH and an S3 signature."""
    secrets = lab_secrets()
    markers = {name: value.encode() for name, value in secrets.items()
               if name.startswith(("redis_", "s3_key_secret.", "centrifugo_api_key."))
               or name in ("pdns_api_key", "garage_admin_token", "garage_metrics_token",
                           "garage_rpc_secret")}
    markers["Redis AUTH command"] = b"\r\n$4\r\nAUTH\r\n"
    markers["S3 signature (header)"] = b"AWS4-HMAC-SHA256 Credential="
    markers["S3 signature (query)"] = b"X-Amz-Signature="
    return markers


@pytest.mark.public_capture
def test_the_public_bridge_carried_no_secret_in_clear_text(public_capture):
    """Runs last: the capture covers the whole topology suite (tests/topology/conftest.py)."""
    canary = public_capture["canary"]
    pcap = public_capture["stop"]()
    data = pcap.read_bytes()
    # The capture is real: it holds the cleartext canary sent on the bridge, and the guests'
    # internal traffic as WireGuard packets (UDP to the mesh port) between public addresses.
    assert canary in data, "the capture does not hold the canary: it saw nothing"
    summary = subprocess.run(["tcpdump", "-nn", "-r", str(pcap), "udp", "port", str(DATA["wireguard_port"])],
                             capture_output=True, text=True, timeout=600).stdout
    wg_packets = len(summary.splitlines())
    assert wg_packets > 1000, f"only {wg_packets} WireGuard packets: the internal traffic did not cross the mesh"
    leaked = [name for name, marker in secret_markers().items() if marker in data]
    assert not leaked, f"in clear text on the public bridge: {leaked}"
    assert not re.search(rb"Authorization: AWS4-HMAC", data)
