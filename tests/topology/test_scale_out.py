"""Scale-out: a second app host added to the local inventory joins everything; removed, it leaves no trace.

The test edits inventory/local.py exactly as an operator would (and restores it in
`finally`), runs `make up`'s harness (which creates the new guest) and the real
bootstrap + apply, then checks from the gateway and on the hosts.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.topology.conftest import CA_CERT, REPO, addr, connect, hosts_in, inventory, private

INVENTORY = REPO / "inventory" / "local.py"
NEW, NEW_ADDR, NEW_PRIVATE = "n1-2", "10.77.0.21", "10.78.0.21"
DOMAIN = "dashboard.codeb.kr"  # codeb-dashboard-production: round_robin
STORAGE = hosts_in("storage")[0]


def sh(*cmd, timeout=1800):
    proc = subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def upstreams_seen(via: str, n: int = 12) -> set[str]:
    seen = set()
    for _ in range(n):
        out = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-D", "-", "--cacert", str(CA_CERT), "--resolve",
             f"{DOMAIN}:443:{via}", f"https://{DOMAIN}/api/health"], capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[1] == "200", out.stdout
        seen |= {line.split(":", 1)[1].strip() for line in out.stdout.splitlines()
                 if line.lower().startswith("x-upstream:")}
    return seen


def traces(address: str, public: str) -> dict[str, bool]:
    """Where the new host's private (and, for the mesh, public) address shows up on the other hosts."""
    n3, n1 = connect(STORAGE), connect(hosts_in("app")[0])
    hba = n3.check_output("cat /etc/postgresql/17/main/pg_hba.conf")
    return {
        "mesh peer on the storage host": address in n3.check_output("wg show wg0 allowed-ips"),
        "mesh endpoint on the storage host": public in n3.check_output("wg show wg0 endpoints"),
        "wireguard firewall rule on the storage host": public in n3.check_output("nft list table inet platform"),
        "pg_hba on the storage host": address in hba,
        "firewall on the storage host": address in n3.check_output("nft list table inet platform"),
        "firewall on the app host": address in n1.check_output("nft list table inet platform"),
        "caddy sites on the app host": address in n1.check_output("cat /etc/caddy/sites/*.caddy"),
    }


@pytest.mark.skipif(NEW in inventory(), reason="inventory already has the extra host")
def test_second_app_host_joins_and_leaves_without_trace():
    original = INVENTORY.read_text()
    extra = (f'\napp.append(("{NEW}", {{"ssh_hostname": "{NEW_ADDR}", "public_ip": "{NEW_ADDR}", '
             f'"private_ip": "{NEW_PRIVATE}", **_ssh}}))\n')
    marker = 'local = environment_group('
    assert marker in original
    try:
        INVENTORY.write_text(original.replace(marker, extra + marker, 1))
        sh("-m", "lab.topology", "up")
        sh("-m", "codeb.run", "bootstrap", "local")
        assert all(traces(NEW_PRIVATE, NEW_ADDR).values()), traces(NEW_PRIVATE, NEW_ADDR)
        # The new host joined the mesh: the storage host reaches it over its private address.
        assert connect(STORAGE).run(f"ping -c1 -W3 {NEW_PRIVATE}").rc == 0
        # Both hosts' Caddy balance across both hosts (round robin), over the private network:
        # the upstream header shows both private addresses.
        for via in (addr(hosts_in("app")[0]), NEW_ADDR):
            seen = upstreams_seen(via)
            assert {u.split(":")[0] for u in seen} == {private(hosts_in("app")[0]), NEW_PRIVATE}, (via, seen)
        # The new host's own slot reaches PostgreSQL and Redis (pg_hba, ACLs and firewalls admitted it).
        slots = " ".join(f"http://{NEW_PRIVATE}:{p}/api/health" for p in (4000, 4001))
        body = connect(NEW).check_output(f"for u in {slots}; do curl -fsS -m 5 $u && break; done")
        health = json.loads(body)
        assert health["checks"]["database"]["ok"] and health["checks"]["redis"]["ok"], health
    finally:
        INVENTORY.write_text(original)
    sh("-m", "lab.topology", "up")  # removes the guest that left the inventory
    sh("-m", "codeb.run", "apply", "local")
    left = traces(NEW_PRIVATE, NEW_ADDR)
    assert not any(left.values()), left
    assert not (REPO / ".lab" / "guests" / NEW).exists()
    # Back to one app host: traffic is served locally again.
    assert {u.split(":")[0] for u in upstreams_seen(addr(hosts_in("app")[0]), 3)} == {"127.0.0.1"}
