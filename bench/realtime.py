"""Real-time path: N subscribers through Caddy on the streaming host vs directly to Centrifugo.

Subscribers: the official client (centrifuge-python), BENCH_WORKERS processes on the gateway
(default 2, one per core) holding BENCH_SUBSCRIBERS connections (default 2000) in total, all
subscribed to one channel of the `project` namespace (subscription tokens signed with the
environment's HMAC secret, as an app would).

  through Caddy: wss://ws.<domain>/connection/websocket from the gateway (TLS, Caddy on n2);
  direct:        ws://127.0.0.1:<client port>/connection/websocket from inside n2's network
                 namespace (nsenter on the gateway: same Python, same client, same clock; the
                 port listens on 127.0.0.1 only, an SSH tunnel would add its own hop and a
                 second Centrifugo listener would need a config change on the host).

Publisher: one process on the app host (python3, keep-alive HTTP) calls POST /api/publish
on the streaming host's internal API every BENCH_INTERVAL seconds, BENCH_MESSAGES times; each
publication carries time.time() at sending. Latency = receive time - sent (same kernel clock).
The first BENCH_WARMUP publications of each phase are left out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shlex
import subprocess
import threading
import time
import uuid

from bench.common import (
    CA_CERT,
    PY,
    REPO,
    addr,
    figure,
    group_data,
    hosts_in,
    lab_secret,
    log,
    private,
    ratio,
    save_section,
    ssh,
    summary_ms,
)
from lab.topology import netns_prefix

N = int(os.environ.get("BENCH_SUBSCRIBERS", "2000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "30"))
INTERVAL = float(os.environ.get("BENCH_INTERVAL", "0.5"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "3"))
CONCURRENCY = int(os.environ.get("BENCH_CONNECT_CONCURRENCY", "40"))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(claims: dict, secret: str, ttl: int = 3600) -> str:
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps({"exp": int(time.time()) + ttl, **claims}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def split(n: int, parts: int) -> list[int]:
    """n as `parts` near-equal positive shares."""
    parts = max(1, min(parts, n))
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


PUBLISHER = r"""
import http.client, json, sys, time
key = sys.stdin.readline().strip()
host, port, channel, count, interval = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
conn = http.client.HTTPConnection(host, port, timeout=10)
out = []
start = time.monotonic() + 0.2
for i in range(count):
    delay = start + i * interval - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    sent = time.time()
    body = json.dumps({"channel": channel, "data": {"seq": i, "sent": sent}})
    conn.request("POST", "/api/publish", body, {"X-API-Key": key, "Content-Type": "application/json"})
    r = conn.getresponse()
    text = r.read().decode()
    out.append([i, r.status, round(time.time() - sent, 6), "error" in json.loads(text or "{}")])
    if r.status != 200 or out[-1][3]:
        print("publish failed:", r.status, text[:200], file=sys.stderr)
print(json.dumps(out))
"""


def instance():
    """The app instance whose Centrifugo is measured (the first with realtime)."""
    from codeb import registry
    from services.centrifugo import model as centrifugo_model

    return centrifugo_model.realtime_instances(registry.load().instances)[0]


def ports() -> tuple[int, int]:
    """(client port, internal port) of the measured instance's Centrifugo."""
    data, inst = group_data(), instance()
    return inst.port + data["centrifugo_client_port_offset"], inst.port + data["centrifugo_internal_port_offset"]


def publish(channel: str) -> list:
    streaming = hosts_in("streaming")[0]
    app = hosts_in("app")[0]
    cmd = (f"python3 -c {shlex.quote(PUBLISHER)} {private(streaming)} {ports()[1]} "
           f"{channel} {MESSAGES} {INTERVAL}")
    proc = ssh(app, cmd, stdin=lab_secret(f"centrifugo_api_key.{instance().name}") + "\n", sudo=False,
               timeout=60 + MESSAGES * INTERVAL)
    if proc.returncode != 0:
        raise RuntimeError(f"publisher on {app} failed: {proc.stderr[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rss_kib(host: str, comm: str) -> int:
    out = ssh(host, f"ps -o rss= -C {comm} | awk '{{s+=$1}} END {{print s+0}}'", check=True).stdout
    return int(out.strip() or 0)


def num_clients() -> int | None:
    """Centrifugo's own count of connections, from its API (asked from the app host)."""
    api = f"http://{private(hosts_in('streaming')[0])}:{ports()[1]}/api/info"
    script = ('set -eu; h=$(mktemp); trap \'rm -f "$h"\' EXIT; cat > "$h"; '
              f'curl -sS --fail --max-time 5 -H @"$h" -X POST -d "{{}}" {api}')
    proc = ssh(hosts_in("app")[0], script, stdin=f"X-API-Key: {lab_secret(f'centrifugo_api_key.{instance().name}')}\n",
               sudo=False)
    try:
        return sum(n.get("num_clients", 0) for n in json.loads(proc.stdout)["result"]["nodes"])
    except (ValueError, KeyError):
        return None


class Worker:
    def __init__(self, idx: int, cmd: list[str], tokens: list, label: str):
        self.idx, self.label = idx, label
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        self.proc.stdin.write(json.dumps({"tokens": tokens}) + "\n")
        self.proc.stdin.flush()
        self.ready: dict | None = None
        self.result: dict | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev["event"] == "progress":
                log(f"  {self.label} worker {self.idx}: {ev['connected']} connected ({ev['seconds']} s)")
            elif ev["event"] == "error":
                log(f"  {self.label} worker {self.idx}: connection error {ev['error']}")
            elif ev["event"] == "ready":
                self.ready = ev
            elif ev["event"] == "result":
                self.result = ev

    def stop(self):
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass


def phase(label: str, url: str, prefix: list[str], extra: list[str]) -> dict:
    secret = lab_secret(f"centrifugo_hmac_secret.{instance().name}")
    channel = f"project:bench-{uuid.uuid4().hex[:10]}"
    from services.centrifugo import model as centrifugo_model

    origin = centrifugo_model.origins([instance()])[0]
    streaming = hosts_in("streaming")[0]
    rss_before = {c: rss_kib(streaming, c) for c in ("centrifugo", "caddy")}
    clients_before = num_clients() or 0
    workers = []
    base = 0
    start = time.monotonic()
    log(f"{label}: connecting {N} subscribers to {url} ({WORKERS} processes, {CONCURRENCY} handshakes at a time)")
    for i, share in enumerate(split(N, WORKERS)):
        tokens = [[jwt({"sub": f"bench{base + k}"}, secret), jwt({"sub": f"bench{base + k}", "channel": channel}, secret)]
                  for k in range(share)]
        base += share
        cmd = [*prefix, PY, "-m", "bench.rt_worker", "--url", url, "--origin", origin, "--channel", channel,
               "--concurrency", str(max(1, CONCURRENCY // WORKERS)), *extra]
        workers.append(Worker(i, cmd, tokens, label))
    deadline = time.monotonic() + max(120, N * 0.15)
    while any(w.ready is None for w in workers):
        if time.monotonic() > deadline or any(w.proc.poll() is not None and w.ready is None for w in workers):
            for w in workers:
                w.proc.kill()
            errs = " | ".join(w.proc.stderr.read()[-500:] for w in workers if w.proc.poll() is not None)
            raise RuntimeError(f"{label}: subscribers not ready in time {errs}")
        time.sleep(0.5)
    connect_s = time.monotonic() - start
    connected = sum(w.ready["connected"] for w in workers)
    failed = sum(w.ready["failed"] for w in workers)
    log(f"{label}: {connected} connected and subscribed, {failed} failed, in {connect_s:.1f} s")
    time.sleep(2)
    held_server = num_clients()
    rss_after = {c: rss_kib(streaming, c) for c in ("centrifugo", "caddy")}
    log(f"{label}: publishing {MESSAGES} messages from {hosts_in('app')[0]} every {INTERVAL} s")
    pubs = publish(channel)
    time.sleep(3)
    for w in workers:
        w.stop()
    for w in workers:
        w.reader.join(timeout=120)
        w.proc.wait(timeout=60)
    samples = [s for w in workers for s in (w.result or {}).get("samples", [])]
    held = sum((w.result or {}).get("held", 0) for w in workers)
    disconnects = sum((w.result or {}).get("disconnects", 0) for w in workers)
    measured = [lat for seq, lat in samples if seq >= WARMUP]
    first = {}
    for seq, lat in samples:
        if seq >= WARMUP:
            first[seq] = min(first.get(seq, lat), lat)
    expected = connected * (MESSAGES - WARMUP)
    api_ms = sorted(p[2] for p in pubs[WARMUP:])
    return {
        "label": label, "url": url, "subscribers": N, "connected": connected, "failed": failed,
        "connect_seconds": round(connect_s, 1), "held_client_side": held, "held_server": held_server,
        "clients_before": clients_before, "disconnects": disconnects,
        "latency": summary_ms(measured) if measured else None,
        "first_receipt": summary_ms(list(first.values())) if first else None,
        "received": len(measured), "expected": expected,
        "publish_api_p50_ms": round(api_ms[len(api_ms) // 2] * 1000, 2) if api_ms else None,
        "publish_errors": sum(1 for p in pubs if p[1] != 200 or p[3]),
        "rss_kib_before": rss_before, "rss_kib_after": rss_after,
    }


def measure() -> list[dict]:
    data = group_data()
    from codeb import shared

    ws = shared.ws_domain(data["platform_domain"])
    streaming = hosts_in("streaming")[0]
    caddy = phase("through Caddy", f"wss://{ws}/{instance().name}/connection/websocket", [],
                  ["--cafile", str(CA_CERT), "--resolve", f"{ws}={addr(streaming)}"])
    time.sleep(3)
    direct = phase("direct", f"ws://{private(streaming)}:{ports()[0]}/connection/websocket",
                   netns_prefix(streaming), [])
    figures = []
    setup = (f"{N} centrifuge-python clients in {WORKERS} processes, one channel; {MESSAGES} publications "
             f"every {INTERVAL}s from {hosts_in('app')[0]} via POST /api/publish (first {WARMUP} dropped); "
             "latency = receipt time - publisher's time.time() in the payload (shared kernel clock), "
             "over every (publication, subscriber) pair")
    for ph in (caddy, direct):
        where = ("from the gateway through Caddy (TLS) on " + streaming if ph is caddy else
                 f"from inside {streaming}'s network namespace (nsenter) to its private address, no TLS")
        lat = ph["latency"] or {}
        figures.append(figure(f"WebSocket publish->receive latency, {ph['label']}",
                              f"p50 {lat.get('p50')} / p95 {lat.get('p95')} / p99 {lat.get('p99')} (max {lat.get('max')})",
                              "ms", f"{setup}; subscribers {where}; {ph['received']} of {ph['expected']} deliveries "
                              f"received, {ph['connected']} of {N} connected ({ph['failed']} failed) in "
                              f"{ph['connect_seconds']} s",
                              target="p99 <= 50 ms" if ph is caddy else None,
                              ok=(lat.get("p99", 1e9) <= 50) if ph is caddy else None))
        fr = ph["first_receipt"] or {}
        figures.append(figure(f"First receipt of each publication, {ph['label']}",
                              f"p50 {fr.get('p50')} / p95 {fr.get('p95')} / p99 {fr.get('p99')}", "ms",
                              "per publication, the earliest subscriber's latency: the server path without "
                              "the client processes' queueing of the fan-out"))
    if caddy["latency"] and direct["latency"]:
        r = ratio(caddy["latency"]["p99"], direct["latency"]["p99"])
        figures.append(figure("Caddy/direct p99 latency ratio", r, "x",
                              "p99 through Caddy / p99 direct, same run, same N, same publication schedule",
                              target="<= 1.2", ok=r is not None and r <= 1.2))
        r50 = ratio(caddy["latency"]["p50"], direct["latency"]["p50"])
        figures.append(figure("Caddy/direct p50 latency ratio", r50, "x", "p50 through Caddy / p50 direct"))
    figures.append(figure("Connections held (through Caddy)", f"{caddy['held_client_side']} client-side / "
                          f"{caddy['held_server']} server-side", "connections",
                          "client side: clients still CONNECTED when the publications ended; server side: "
                          "num_clients from Centrifugo's /api/info (asked from the app host) with all connected"))
    for ph in (caddy, direct):
        delta = ph["rss_kib_after"]["centrifugo"] - ph["rss_kib_before"]["centrifugo"]
        per = round(delta / max(1, ph["connected"]), 1)
        figures.append(figure(f"Centrifugo memory per connection, {ph['label']}", per, "KiB",
                              f"RSS of centrifugo on {streaming} (ps) before connecting "
                              f"({ph['rss_kib_before']['centrifugo']} KiB) and with all {ph['connected']} "
                              f"connected ({ph['rss_kib_after']['centrifugo']} KiB), difference / connections"
                              + ("; Go keeps freed heap, so the second phase starts from a grown RSS"
                                 if ph is direct else "")))
    cd = caddy["rss_kib_after"]["caddy"] - caddy["rss_kib_before"]["caddy"]
    figures.append(figure("Caddy memory per proxied WebSocket", round(cd / max(1, caddy["connected"]), 1), "KiB",
                          f"RSS of caddy on {streaming} before/after the through-Caddy connections, / connections"))
    save_section("realtime", figures, {"phases": [caddy, direct], "subscribers": N, "workers": WORKERS})
    return figures


if __name__ == "__main__":
    measure()
