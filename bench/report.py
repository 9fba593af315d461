"""docs/BENCHMARKS.md and docs/DRILLS.md from the stored results, with the machine and versions."""

from __future__ import annotations

import platform
import subprocess
import time
from importlib.metadata import version as pkg_version

from bench.common import REPO, hosts_in, load_results, log, save_section, ssh

SECTIONS = [("converge", "Converge"), ("realtime", "Real-time path"), ("http", "HTTP path"),
            ("backups", "Backups and releases")]


def _local(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


def machine() -> dict:
    """Cores, memory, CPU, kernel and the versions that shape the figures."""
    info = {
        "cores": _local("nproc"),
        "memory": _local("free -h | awk '/^Mem:/ {print $2}'"),
        "cpu": _local("sed -n 's/^model name\\s*: //p' /proc/cpuinfo | head -1"),
        "kernel": platform.release(),
        "gateway OS": _local(". /etc/os-release; echo $PRETTY_NAME"),
        "Python (gateway)": platform.python_version(),
        "pyinfra": pkg_version("pyinfra"),
        "centrifuge-python": pkg_version("centrifuge-python"),
        "websockets": pkg_version("websockets"),
    }
    probes = {
        "guest OS": ("streaming", ". /etc/os-release; echo $PRETTY_NAME"),
        "Centrifugo": ("streaming", "/usr/local/bin/centrifugo version | head -1"),
        "Caddy": ("streaming", "caddy version | cut -d' ' -f1"),
        "PostgreSQL": ("storage", "runuser -u postgres -- psql -XAtc 'SHOW server_version'"),
        "pgBackRest": ("backup", "pgbackrest version"),
        "Podman": ("app", "podman --version"),
    }
    for label, (group, cmd) in probes.items():
        try:
            info[label] = ssh(hosts_in(group)[0], cmd, timeout=20).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - the report still gets written
            info[label] = "(unreachable)"
    return info


NOTES = [
    "- **One machine, 2 cores.** The guests, Caddy, Centrifugo, PostgreSQL, the load generators and the "
    "subscriber processes all share the cores listed above. Figures are comparable within one run, not with "
    "figures taken on dedicated servers (such as the source plan's p95 32 ms at 4,154 req/s).",
    "- **WebSocket latency at N subscribers is bound by the subscribers.** Every publication is delivered to "
    "all N clients, and the N clients are Python (centrifuge-python) in BENCH_WORKERS processes on the same "
    "cores: the last delivery of a fan-out waits for the client processes to decode the N-1 before it (plus, "
    "through Caddy, Python's TLS). A loopback smoke test with 1,000 subscribers against a local Centrifugo "
    "already gave p99 ~90 ms with no network and no proxy. The *first receipt* rows (the earliest subscriber "
    "of each publication) show the server path itself; the p99 target of 50 ms at 2,000 subscribers is a "
    "server-side target this single-machine setup cannot isolate. `BENCH_SUBSCRIBERS=200 make bench "
    "ONLY=realtime COLD=0` shows the same path unsaturated.",
    "- **Direct** WebSocket clients run in the streaming guest's network namespace (nsenter), because the "
    "client port listens on 127.0.0.1 only: they skip the bridge as well as TLS and Caddy, so the ratio is an "
    "upper bound of what Caddy itself adds.",
    "- **HTTP through Caddy, p99.** The demo app is Python's ThreadingHTTPServer: HTTP/1.0 (one connection per "
    "request, also from Caddy to the slot) and a listen backlog of 5. A p99 near 1,000 ms through Caddy is the "
    "kernel's 1 s SYN retransmission when that backlog overflows under Caddy's new upstream connections; "
    "p50/p95 are the proxy's real cost. h2load connects to Caddy with keep-alive.",
    "- **No-op converge vs by hand.** pyinfra runs each state check as its own SSH command under sudo (counts "
    "in the row) and builds every host's operation graph in Python first; the hand-run "
    "script runs the same distinct commands in one shell per host. The ratio measures that per-command "
    "overhead on 2 shared cores.",
]


def table(figures: list[dict]) -> list[str]:
    lines = ["| figure | value | target | how it was measured |", "| --- | --- | --- | --- |"]
    for f in figures:
        target = "" if "target" not in f else f"{f['target']}: {'met' if f.get('ok') else '**not met**'}"
        value = f"{f['value']} {f['unit']}".strip()
        lines.append(f"| {f['name']} | {value} | {target} | {f['how'].replace('|', '/')} |")
    return lines


def write_benchmarks(results: dict | None = None) -> None:
    results = results or load_results()
    m = results.get("machine", {}).get("info", {})
    out = ["# Benchmarks", "",
           "Written by `make bench` (bench/, results in .lab/bench/results.json). Every figure comes from one run "
           "on the machine below, side by side; absolute figures drift on this shared machine, the ratios less. "
           "The four guests are systemd-nspawn containers on the same machine as the load generators: every "
           "figure shares the same cores.", "", "## Machine and versions", "",
           "| | |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in m.items()]
    for key, title in SECTIONS:
        sec = results.get(key)
        out += ["", f"## {title}", ""]
        if not sec:
            out.append("Not measured in this run.")
            continue
        out.append(f"Measured {sec['at']}.")
        out.append("")
        out += table(sec["figures"])
    out += ["", "## Reading the figures", "", *NOTES]
    (REPO / "docs" / "BENCHMARKS.md").write_text("\n".join(out) + "\n")
    log("wrote docs/BENCHMARKS.md")


def write_drills(results: dict | None = None) -> None:
    results = results or load_results()
    drills = results.get("drills", {})
    out = ["# Fault drills", "", "Written by `make drills` (bench/drills.py). Each drill is bounded in time and "
           "ends by checking that the topology is healthy (`make health` all ok) and converged.", ""]
    for name, d in drills.items():
        out += [f"## {name}", "", f"Run {d['at']}: **{'passed' if d['ok'] else 'FAILED'}** in {d['seconds']} s.", ""]
        out += [f"- {line}" for line in d["lines"]]
        out.append("")
    (REPO / "docs" / "DRILLS.md").write_text("\n".join(out))
    log("wrote docs/DRILLS.md")


def record_machine() -> None:
    save_section("machine", [], {"info": machine(), "at_epoch": time.time()})
