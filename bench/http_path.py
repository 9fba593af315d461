"""HTTP path: the demo app directly on its slot port vs through Caddy, same load tool, same host.

Load tool: h2load (nghttp2-client, Debian), installed on the app host for the run and removed
afterwards. Both runs go from the app host itself, so the only difference is Caddy (TLS
termination, reverse proxy with health checks, access log):

  direct:        http://127.0.0.1:<active slot port>/api/health
  through Caddy: https://<instance domain>/api/health, connected to 127.0.0.1:443 (--connect-to)

HTTP/1.1, BENCH_HTTP_CONCURRENCY connections (default 32), BENCH_HTTP_SECONDS (default 15)
after a 2 s warm-up, header `X-Health-Probe: liveness` (the demo answers it without touching
PostgreSQL or Redis: the figure is the HTTP path, not the database). p95 from h2load's
per-request log (--log-file), requests per second from its summary.
"""

from __future__ import annotations

import json
import os
import re

from bench.common import figure, hosts_in, log, percentile, ratio, save_section, ssh

CONCURRENCY = int(os.environ.get("BENCH_HTTP_CONCURRENCY", "32"))
SECONDS = int(os.environ.get("BENCH_HTTP_SECONDS", "15"))
HEADER = "X-Health-Probe: liveness"


def parse_h2load(summary: str, log_lines: str) -> dict:
    """req/s and counts from h2load's summary; latency percentiles (ms) from its --log-file."""
    rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", summary)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", summary)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", summary)
    durations = []
    for line in log_lines.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1].lstrip("-").isdigit():
            durations.append(int(parts[2]) / 1000.0)
    out = {"rps": float(rps.group(1)) if rps else None,
           "done": int(req.group(3)) if req else None, "succeeded": int(req.group(4)) if req else None,
           "failed": int(req.group(5)) if req else None, "errored": int(req.group(6)) if req else None,
           "non_2xx": sum(int(x) for x in codes.groups()[1:]) if codes else None, "samples": len(durations)}
    if durations:
        out.update({f"p{p}": round(percentile(durations, p), 2) for p in (50, 95, 99)})
    return out


def h2load(host: str, url: str, extra: str = "") -> dict:
    logf = "/tmp/codeb-bench-h2load.log"
    cmd = (f"rm -f {logf}; h2load --h1 -t 1 -c {CONCURRENCY} -D {SECONDS} --warm-up-time=2 -H '{HEADER}' "
           f"--log-file={logf} {extra} {url} > /tmp/codeb-bench-h2load.out 2>&1; rc=$?; "
           f"cat /tmp/codeb-bench-h2load.out; echo '---LOG---'; cat {logf}; rm -f {logf}; exit $rc")
    proc = ssh(host, cmd, timeout=SECONDS + 120)
    summary, _, lines = proc.stdout.partition("---LOG---")
    res = parse_h2load(summary, lines)
    res["exit"] = proc.returncode
    if res["rps"] is None:
        log(f"h2load output: {summary[-1500:]} {proc.stderr[-500:]}")
    return res


def measure() -> list[dict]:
    from codeb import registry

    host = hosts_in("app")[0]
    inst = next(i for i in registry.load().instances if i.group == "app")
    active = json.loads(ssh(host, f"cat /var/lib/platform/releases/{inst.name}.json", check=True).stdout)["active"]
    port = inst.slot_ports[active]
    domain = inst.domains[0]
    log(f"HTTP path: installing h2load (nghttp2-client) on {host} for the run")
    listed = "dpkg-query -W -f='${Package} ${Status}\\n' | awk '$NF == \"installed\" {print $1}' | sort"
    before = set(ssh(host, listed, check=True).stdout.split())
    ssh(host, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nghttp2-client",
        timeout=600, check=True)
    added = sorted(set(ssh(host, listed, check=True).stdout.split()) - before)
    version = ssh(host, "h2load --version | head -1").stdout.strip()
    try:
        log(f"direct: {CONCURRENCY} connections, {SECONDS} s, http://127.0.0.1:{port}/api/health ({inst.name}, {active} slot)")
        direct = h2load(host, f"http://127.0.0.1:{port}/api/health")
        log(f"  {direct}")
        log(f"through Caddy: https://{domain}/api/health via 127.0.0.1:443")
        caddy = h2load(host, f"https://{domain}/api/health", "--connect-to=127.0.0.1:443")
        log(f"  {caddy}")
    finally:
        if added:  # exactly what the run installed goes again
            log(f"removing {' '.join(added)} from {host}")
            ssh(host, f"DEBIAN_FRONTEND=noninteractive apt-get purge -y -q {' '.join(added)} >/dev/null", timeout=600)
    how = (f"{version} on {host} against the same host, HTTP/1.1, {CONCURRENCY} connections, {SECONDS} s after 2 s "
           f"warm-up, GET /api/health with '{HEADER}' (no database work) on {inst.name}'s {active} slot; "
           "req/s from h2load's summary, percentiles from its per-request log")
    figures = []
    for label, r in (("direct (127.0.0.1:slot port)", direct), ("through Caddy (HTTPS, 127.0.0.1:443)", caddy)):
        figures.append(figure(f"HTTP {label}", f"{r['rps']} req/s, p50 {r.get('p50')} ms, p95 {r.get('p95')} ms, "
                              f"p99 {r.get('p99')} ms; {r['failed']} failed, {r['non_2xx']} non-2xx of {r['done']}",
                              "", how))
    figures.append(figure("HTTP Caddy/direct", f"req/s x{ratio(caddy['rps'] or 0, direct['rps'] or 0)}, "
                          f"p95 x{ratio(caddy.get('p95') or 0, direct.get('p95') or 0)}", "",
                          "through Caddy / direct, same run (source plan: p95 32 ms at 4,154 req/s, other setup)"))
    save_section("http", figures, {"direct": direct, "caddy": caddy, "h2load": version})
    return figures


if __name__ == "__main__":
    measure()
