"""Scale-out: a second app host added to the local inventory joins everything; removed, it leaves no trace.

The test writes a copy of inventory/local.py with one more app host, as an operator would add
it, into a temporary directory (the tracked inventory is never edited). The harness brings the
topology up from that copy (it creates the new guest) and the real bootstrap + apply run on it;
the checks are made from the gateway and on the hosts. Then, whatever happened, the topology is
brought back to inventory/local.py (the harness removes the guest, an apply removes the host
from every other host's configuration) and the test checks that nothing of the host is left.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab.topology import INVENTORY
from tests.topology.conftest import CA_CERT, REPO, addr, connect, deploy, first, inventory, private

NEW, NEW_ADDR, NEW_PRIVATE = "n1-2", "10.77.0.21", "10.78.0.21"
DOMAIN = "dashboard.codeb.kr"  # codeb-dashboard-production: round_robin


def harness(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """python -m lab.topology ARGS (the local topology harness)."""
    return subprocess.run([sys.executable, "-m", "lab.topology", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == 0


def tail(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[-4000:] + proc.stderr[-2000:]


def with_extra_host(directory) -> str:
    """A copy of inventory/local.py with the extra app host, in `directory`; its path."""
    original = INVENTORY.read_text()
    marker = "local = environment_group("
    assert marker in original
    extra = (f'\napp.append(("{NEW}", {{"ssh_hostname": "{NEW_ADDR}", "public_ip": "{NEW_ADDR}", '
             f'"private_ip": "{NEW_PRIVATE}", **_ssh}}))\n')
    path = directory / "local.py"  # the file's name is the environment group's, as pyinfra reads it
    path.write_text(original.replace(marker, extra + marker, 1))
    return str(path)


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
    n3, n1 = connect(first("storage")), connect(first("app"))
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


@pytest.mark.destructive
def test_second_app_host_joins_and_leaves_without_trace(tmp_path, apply):
    if NEW in inventory():
        pytest.skip("inventory/local.py already has the extra host")
    app, storage = first("app"), first("storage")
    scaled = with_extra_host(tmp_path)
    try:
        up = harness("up", "--inventory", scaled)
        assert ok(up), tail(up)
        joined = deploy("bootstrap", inventory_file=scaled, timeout=1800)
        assert ok(joined), tail(joined)
        assert all(traces(NEW_PRIVATE, NEW_ADDR).values()), traces(NEW_PRIVATE, NEW_ADDR)
        # The new host joined the mesh: the storage host reaches it over its private address.
        assert connect(storage).run(f"ping -c1 -W3 {NEW_PRIVATE}").rc == 0
        # Both hosts' Caddy balance across both hosts (round robin), over the private network:
        # the upstream header shows both private addresses.
        for via in (addr(app), NEW_ADDR):
            seen = upstreams_seen(via)
            assert {u.split(":")[0] for u in seen} == {private(app), NEW_PRIVATE}, (via, seen)
        # The new host's own slot reaches PostgreSQL and Redis (pg_hba, ACLs and firewalls admitted it).
        slots = " ".join(f"http://{NEW_PRIVATE}:{p}/api/health" for p in (4000, 4001))
        body = connect(NEW).check_output(f"for u in {slots}; do curl -fsS -m 5 $u && break; done")
        health = json.loads(body)
        assert health["checks"]["database"]["ok"] and health["checks"]["redis"]["ok"], health
    finally:
        # Back to inventory/local.py, even after a failure above: the harness removes the guest
        # that is not in it, the apply removes the host from the others' configuration.
        down = harness("up")
        back = apply(timeout=1800)
    assert ok(down), tail(down)
    assert ok(back), tail(back)
    left = traces(NEW_PRIVATE, NEW_ADDR)
    assert not any(left.values()), left
    assert not (REPO / ".lab" / "guests" / NEW).exists()
    # Back to one app host: traffic is served locally again.
    assert {u.split(":")[0] for u in upstreams_seen(addr(app), 3)} == {"127.0.0.1"}
