"""Realtime continuity on the local topology: clients keep every publication through change.

1,000 clients (CODEB_CONTINUITY_CLIENTS) connect through Caddy on the streaming hosts and
subscribe with recovery to one `project:` channel of one app instance. A publisher on the app
host sends one publication every 100 ms (CODEB_CONTINUITY_INTERVAL) through the instance's
HTTP API, failing over between the streaming hosts (an idempotency key per publication, so
a retry is never a duplicate). While it runs:

  (a) Caddy reloads on every streaming host;
  (b) an apply adds a project and a domain to the instance (its origins change, so its
      Centrifugo restarts on one streaming host, then the other), and a later apply takes
      both away again;
  (c) one streaming host stops (powered off) and starts again.

It passes when every client ends connected and subscribed, and received every publication
exactly once, in order, with no gap. The counts are printed (`pytest -s` shows them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.topology.conftest import CA_CERT, REPO, addr, group_data, hosts_in, lab_secrets, private, ssh_run
from tests.topology.test_streaming import A, jwt, origin, url

CLIENTS = int(os.environ.get("CODEB_CONTINUITY_CLIENTS", "1000"))
INTERVAL = float(os.environ.get("CODEB_CONTINUITY_INTERVAL", "0.1"))
PROCESSES = 4
DATA = group_data()
WS_DOMAIN = f"ws.{DATA['platform_domain']}"

PUBLISHER = r"""
import http.client, json, select, sys, time
key = sys.stdin.readline().strip()
urls, channel, interval = sys.argv[1].split(","), sys.argv[2], float(sys.argv[3])
acked, failures, seq, due = [], 0, 0, time.monotonic()
while True:
    ready, _, _ = select.select([sys.stdin], [], [], max(0.0, due - time.monotonic()))
    if ready:
        break  # "stop" (or the test went away)
    body = json.dumps({"channel": channel, "data": {"seq": seq, "sent": time.time()},
                       "idempotency_key": f"{channel}-{seq}"})
    done, deadline = False, time.monotonic() + 60
    while not done and time.monotonic() < deadline:
        for u in urls:
            host, port = u.split("//", 1)[1].split("/", 1)[0].split(":")
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=2)
                conn.request("POST", "/api/publish", body, {"X-API-Key": key, "Content-Type": "application/json"})
                resp = conn.getresponse()
                text = resp.read().decode()
                conn.close()
                if resp.status == 200 and "error" not in json.loads(text or "{}"):
                    done = True
                    break
            except (OSError, ValueError):
                pass
            failures += 1
        if not done:
            time.sleep(0.2)
    if not done:
        print(f"publication {seq} could not be published for 60 s", file=sys.stderr)
        break
    acked.append(seq)
    seq += 1
    due = max(due + interval, time.monotonic() - interval)
print(json.dumps({"acked": acked, "failed_attempts": failures}))
"""


def log(msg: str) -> None:
    print(f"[continuity] {msg}", flush=True)


class Clients:
    """One subscriber process (tests/topology/continuity_client.py) with its share of clients."""

    def __init__(self, idx: int, tokens: list, channel: str, targets: list[str]):
        cmd = [sys.executable, "-m", "tests.topology.continuity_client", "--url", url(A), "--origin", origin(A),
               "--channel", channel, "--cafile", str(CA_CERT), "--name", WS_DOMAIN, "--targets", ",".join(targets)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
        self.proc.stdin.write(json.dumps({"tokens": tokens}) + "\n")
        self.proc.stdin.flush()
        self.idx = idx

    def event(self, kind: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"subscriber process {self.idx} ended before '{kind}'")
            ev = json.loads(line)
            if ev.get("event") == kind:
                return ev
            log(f"process {self.idx}: {ev}")
        raise AssertionError(f"subscriber process {self.idx}: no '{kind}' within {timeout:.0f} s")

    def stop(self) -> dict:
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        result = self.event("result", 300)
        self.proc.wait(timeout=60)
        return result


def changed_registry(path: Path) -> Path:
    """The registry with one more project (realtime) and one more domain on the instance A."""
    doc = yaml.safe_load((REPO / "group_data" / "projects.yml").read_text())
    doc["projects"][A.project]["environments"][A.env]["domains"].append(f"continuity.{DATA['platform_domain']}")
    doc["projects"]["continuity"] = {
        "description": "continuity test: added and removed while clients listen",
        "image": "ghcr.io/codeb-kr/continuity",
        "needs": {"database": False, "redis": False, "bucket": False, "realtime": True},
        "environments": {"production": {"port": 4300, "domains": [f"live.{DATA['platform_domain']}"],
                                        "tag": "1.0.0"}},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def nspawn_alive(name: str) -> bool:
    try:
        os.kill(int((REPO / ".lab" / "run" / f"{name}.pid").read_text()), 0)
        return True
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False


def wait_for(check, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def node_healthy(name: str) -> bool:
    port = A.port + DATA["centrifugo_internal_port_offset"]
    proc = ssh_run(hosts_in("app")[0], f"curl -fsS -o /dev/null -m 3 http://{private(name)}:{port}/health",
                   timeout=20)
    return proc.returncode == 0


@pytest.mark.destructive
def test_every_client_gets_every_publication_once_in_order_through_reload_restarts_and_a_host_stop(tmp_path, apply):
    streaming = hosts_in("streaming")
    assert len(streaming) >= 2, "the continuity test needs two streaming hosts"
    channel = f"project:continuity-{uuid.uuid4().hex[:10]}"
    secret = lab_secrets()[f"centrifugo_hmac_secret.{A.name}"]
    targets = [addr(h) for h in streaming]
    shares = [CLIENTS // PROCESSES + (1 if i < CLIENTS % PROCESSES else 0) for i in range(PROCESSES)]
    procs, base = [], 0
    for i, share in enumerate(shares):
        tokens = [[jwt({"sub": f"c{base + k}"}, secret), jwt({"sub": f"c{base + k}", "channel": channel}, secret)]
                  for k in range(share)]
        base += share
        order = targets[i % len(targets):] + targets[:i % len(targets)]  # spread over the streaming hosts
        procs.append(Clients(i, tokens, channel, order))
    ready = [p.event("ready", 600) for p in procs]
    connected = sum(r["connected"] for r in ready)
    log(f"{connected} of {CLIENTS} clients connected and subscribed "
        f"in {max(r['seconds'] for r in ready):.0f} s through Caddy on {', '.join(streaming)}")
    assert connected == CLIENTS, ready

    apis = [f"http://{private(h)}:{A.port + DATA['centrifugo_internal_port_offset']}/api" for h in streaming]
    publisher = subprocess.Popen(
        ssh_command(hosts_in("app")[0], f"python3 -c {sh_quote(PUBLISHER)} {','.join(apis)} {channel} {INTERVAL}"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    publisher.stdin.write(lab_secrets()[f"centrifugo_api_key.{A.name}"] + "\n")
    publisher.stdin.flush()
    timeline = []
    started = time.monotonic()

    def mark(what: str) -> None:
        timeline.append(f"{time.monotonic() - started:6.1f} s  {what}")
        log(timeline[-1])

    registry_file = changed_registry(tmp_path / "projects.yml")
    try:
        time.sleep(5)
        # (a) Caddy reloads on every streaming host.
        for name in streaming:
            assert ssh_run(name, "sudo systemctl reload caddy").returncode == 0
            mark(f"(a) Caddy reloaded on {name}")
            time.sleep(3)
        # (b) a project and a domain of the instance are added: new origins, one node at a time.
        env = {"CODEB_REGISTRY_FILE": str(registry_file)}
        secrets = subprocess.run([sys.executable, "-m", "tools.cli", "secrets", "local"], cwd=REPO,
                                 capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
        assert secrets.returncode == 0, secrets.stdout + secrets.stderr
        mark("(b) apply: a project and a domain added")
        applied = apply(env=env)
        assert applied.returncode == 0, applied.stdout[-3000:]
        assert f"Check config, restart centrifugo@{A.name}.service" in applied.stdout
        mark("(b) applied: the instance's Centrifugo restarted on each streaming host in turn")
        time.sleep(5)
        # (c) one streaming host stops, then starts again.
        victim = streaming[0]
        ssh_run(victim, "sudo systemctl poweroff", timeout=30)
        gone = wait_for(lambda: not nspawn_alive(victim), 120, f"{victim} powering off")
        mark(f"(c) {victim} stopped ({gone:.0f} s)")
        time.sleep(10)
        up = subprocess.run([sys.executable, "-m", "lab.topology", "up"], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        back = wait_for(lambda: node_healthy(victim), 300, f"{victim}'s node healthy again")
        mark(f"(c) {victim} started again; its node healthy {back:.0f} s after the harness started it")
        time.sleep(5)
    finally:
        restored = apply()
        mark("(b) apply: the project and the domain taken away again")
        time.sleep(5)
        publisher.stdin.write("stop\n")
        publisher.stdin.flush()
        out, err = publisher.communicate(timeout=120)
        time.sleep(2)
        results = [p.stop() for p in procs]
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert publisher.returncode == 0, err[-2000:]
    published = json.loads(out.strip().splitlines()[-1])
    acked = published["acked"]
    assert acked == list(range(len(acked))) and len(acked) > 100
    clients = [c for r in results for c in r["clients"]]
    problems = [c for c in clients
                if not (c["connected"] and c["subscribed"] and c["count"] == len(acked) and c.get("first") == 0
                        and c.get("last") == len(acked) - 1 and c["duplicates"] == 0 and c["out_of_order"] == 0
                        and c["missing_count"] == 0)]
    report = {
        "clients": len(clients),
        "publications": len(acked),
        "publish attempts that failed over or were retried": published["failed_attempts"],
        "deliveries": sum(c["count"] for c in clients),
        "expected deliveries": len(clients) * len(acked),
        "client reconnections (connection lost, then back)": sum(c["reconnects"] for c in clients),
        "clients that reconnected at least once": sum(1 for c in clients if c["reconnects"]),
        "client disconnects (final)": sum(c["disconnects"] for c in clients),
        "subscriptions not recovered": sum(c["unrecovered"] for c in clients),
        "clients ending connected": sum(c["connected"] for c in clients),
        "clients with a gap, a duplicate or a reordering": len(problems),
    }
    log("timeline:\n  " + "\n  ".join(timeline))
    log("counts: " + json.dumps(report, indent=2))
    assert len(clients) == CLIENTS
    assert not problems, f"{len(problems)} clients did not get every publication once, in order: {problems[:3]}"


def ssh_command(name: str, remote: str) -> list[str]:
    from codeb import ssh
    from tests.topology.conftest import inventory

    return ssh.command(inventory()[name].data, remote)


def sh_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
