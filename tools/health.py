"""Every service's health in one table: `make health ENV=<env>`.

What to check per host group is data (`health_checks` in group_data/all.py):
systemd units that must be active, and HTTP endpoints each host probes on
itself. Exit code 0 only when every row is ok.
"""

from __future__ import annotations

import runpy
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from codeb import registry, ssh
from codeb.inventory import REPO, read_inventory, unique_hosts


def host_groups(env: str) -> dict[str, tuple[dict, list[str]]]:
    """name -> (inventory data, host groups) of every host of the environment's inventory."""
    return {name: (h.data, list(h.groups)) for name, h in unique_hosts(read_inventory(env)).items()}


def checks_for(groups: list[str], table: dict, private_ip: str = "127.0.0.1") -> list[tuple[str, str]]:
    """(label, shell check) for a host in these groups; each check prints nothing and exits 0 when ok.
    An URL may name `{private_ip}`: services bound to the private address only."""
    out = []
    for group in ["all", *groups]:
        spec = table.get(group, {})
        for unit in spec.get("units", []):
            out.append((unit, f"systemctl is-active --quiet {shlex.quote(unit)}"))
        for label, url in spec.get("http", {}).items():
            url = url.format(private_ip=private_ip)
            out.append((label, f"curl -fsS -o /dev/null -m 5 {shlex.quote(url)}"))
    if "streaming" in groups:
        from services.centrifugo import model as centrifugo

        offset = runpy.run_path(str(REPO / "group_data" / "all.py"))["centrifugo_internal_port_offset"]
        for inst in centrifugo.realtime_instances(registry.load().instances):
            out.append((centrifugo.unit(inst), f"systemctl is-active --quiet {centrifugo.unit(inst)}"))
            health = f"http://{private_ip}:{centrifugo.internal_port(inst, offset)}/health"
            out.append((f"{inst.name} centrifugo /health", f"curl -fsS -o /dev/null -m 5 {health}"))
    if "app" in groups:
        for inst in registry.load().instances:
            ports = list(inst.slot_ports.values())
            urls = " || ".join(f"curl -fsS -o /dev/null -m 5 http://127.0.0.1:{p}/api/health" for p in ports)
            out.append((f"{inst.name} /api/health", f"( {urls} )"))
    return out


def probe(name: str, data: dict, checks: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    script = "\n".join(f"if {cmd} >/dev/null 2>&1; then echo 'ok {label}'; else echo 'FAIL {label}'; fi"
                       for label, cmd in checks)
    proc = subprocess.run(ssh.command(data, "sudo -n sh -s", connect_timeout=5), input=script, capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0 and not proc.stdout:
        return [(name, "ssh", "FAIL")]
    rows = []
    for line in proc.stdout.splitlines():
        status, _, label = line.partition(" ")
        rows.append((name, label, status))
    return rows


def main(env: str) -> int:
    table = runpy.run_path(str(REPO / "group_data" / "all.py"))["health_checks"]
    hosts = host_groups(env)
    with ThreadPoolExecutor(max_workers=8) as pool:
        def one(item):
            name, (data, groups) = item
            return probe(name, data, checks_for(groups, table, data.get("private_ip", "127.0.0.1")))

        results = list(pool.map(one, hosts.items()))
    rows = [row for host_rows in results for row in host_rows]
    width = max(len(r[1]) for r in rows)
    print(f"{'HOST':6} {'CHECK':{width}} STATUS")
    for host, label, status in rows:
        print(f"{host:6} {label:{width}} {status}")
    failed = [r for r in rows if r[2] != "ok"]
    print(f"{len(rows) - len(failed)}/{len(rows)} ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "local"))
