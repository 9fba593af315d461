"""The app host on the running topology: Quadlet units, env files, Caddy, releases.

    .venv/bin/pytest tests/topology/test_app.py

Names resolve through PowerDNS on the storage host (dig @n3). Tests that break
something (PostgreSQL stopped, a changed secret) put it back in `finally`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest
import yaml

from tests.topology.conftest import CA_CERT, LAB, REPO, addr, connect, first, group_data


def app_host() -> str:
    return first("app")


def storage_host() -> str:
    return first("storage")


def registry():
    from codeb import registry as reg

    return [i for i in reg.load().instances if i.group == "app"]


def instance(name):
    return next(i for i in registry() if i.name == name)


def resolve(domain: str) -> str:
    """The domain's address from PowerDNS on the storage host."""
    out = subprocess.run(["dig", "+short", "+time=2", "+tries=2", f"@{addr(storage_host())}", domain, "A"],
                         capture_output=True, text=True).stdout.split()
    addrs = [a for a in out if re.fullmatch(r"[0-9.]+", a)]
    assert addrs, f"PowerDNS on {storage_host()} does not resolve {domain}"
    return addrs[0]


class PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a name at a given address (the resolved one), verified with the topology CA."""

    def __init__(self, domain: str, address: str, timeout: float = 10):
        ctx = ssl.create_default_context(cafile=str(CA_CERT))
        super().__init__(domain, 443, context=ctx, timeout=timeout)
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, 443), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def get(domain: str, path: str = "/api/health", address: str | None = None):
    conn = PinnedHTTPS(domain, address or resolve(domain))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), resp.read()
    finally:
        conn.close()


def state(inst) -> dict:
    host = connect(app_host())
    return json.loads(host.check_output(f"cat /var/lib/platform/releases/{inst.name}.json"))


def applied(proc: subprocess.CompletedProcess) -> tuple[int, str]:
    """(exit code, output) of an apply (the apply fixture)."""
    return proc.returncode, proc.stdout + proc.stderr


def on_app_host(apply, env: dict | None = None) -> tuple[int, str]:
    """The deploy applied to the app host only."""
    return applied(apply("--limit", app_host(), env=env))


def changes(output: str) -> str:
    m = re.search(r"^\s*Grand total\s+(\S+)\s+(\S+)", output, re.M)
    assert m, output[-2000:]
    return m.group(2)


def started_at(unit: str) -> str:
    return connect(app_host()).check_output(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}")


def active_units() -> dict[str, str]:
    return {i.name: f"{i.name}-{state(i)['active']}.service" for i in registry()}


# --- units and files ---------------------------------------------------------------------------


def test_units_pass_quadlet_dryrun_on_the_app_host():
    host = connect(app_host())
    out = host.run("/usr/libexec/podman/quadlet -dryrun")
    assert out.rc == 0, out.stderr
    for inst in registry():
        for slot in ("blue", "green"):
            assert f"---{inst.name}-{slot}.service---" in out.stdout


def test_env_files_are_private_and_complete():
    host = connect(app_host())
    for inst in registry():
        f = host.file(f"/etc/platform/apps/{inst.name}.env")
        assert f.exists and f.user == "root" and f.mode == 0o600, inst.name
        keys = {line.split("=", 1)[0] for line in f.content_string.splitlines()}
        assert {"NODE_ENV", "PORT", "DATABASE_URL", "REDIS_URL", "REDIS_PREFIX", "CENTRIFUGO_URL",
                "CENTRIFUGO_API_URL", "CENTRIFUGO_API_KEY", "CENTRIFUGO_SECRET"} <= keys
        if "bucket" in inst.needs:
            assert {"S3_ENDPOINT", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"} <= keys


def test_only_the_active_slot_runs_and_make_ports_matches():
    out = subprocess.run(["make", "-s", "ports"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    manifest = {}
    for line in out.splitlines()[1:]:
        project, env, slot, port, _ = line.split(None, 4)
        manifest[f"{project}-{env}-{slot}"] = int(port)
    host = connect(app_host())
    running = {}
    for line in host.check_output("podman ps --format '{{.Names}} {{.Ports}}'").splitlines():
        name, ports = line.split(" ", 1)
        m = re.match(r"127\.0\.0\.1:(\d+)->", ports)
        running[name] = int(m.group(1)) if m else None
    expected = {f"{i.name}-{state(i)['active']}" for i in registry()}
    assert expected <= set(running)
    for name in expected:
        assert running[name] == manifest[name], name
        assert host.socket(f"tcp://127.0.0.1:{manifest[name]}").is_listening
    for inst in registry():
        idle = f"{inst.name}-{'green' if state(inst)['active'] == 'blue' else 'blue'}"
        assert idle not in running
        assert not host.socket(f"tcp://127.0.0.1:{manifest[idle]}").is_listening
    # Slot ports are never reachable from outside the app host.
    for port in manifest.values():
        with pytest.raises(OSError):
            socket.create_connection((addr(app_host()), port), timeout=2).close()


# --- Caddy ----------------------------------------------------------------------------------------


def test_every_domain_serves_health_through_caddy():
    for inst in registry():
        for domain in inst.domains:
            status, headers, body = get(domain)
            assert status == 200, (domain, body)
            checks = json.loads(body)["checks"]
            assert checks["database"]["ok"] and checks["redis"]["ok"], (domain, checks)
            assert headers["x-upstream"] == f"127.0.0.1:{inst.slot_ports[state(inst)['active']]}"
            assert headers["strict-transport-security"].startswith("max-age=")
            assert headers["x-content-type-options"] == "nosniff"
            assert "server" not in headers


def test_demo_page_loads_the_centrifugo_client():
    inst = registry()[0]
    status, _, body = get(inst.domains[0], "/")
    assert status == 200 and b'<script src="/static/centrifuge.js">' in body
    status, headers, js = get(inst.domains[0], "/static/centrifuge.js")
    assert status == 200 and "javascript" in headers["content-type"] and b"Centrifuge" in js
    status, _, token = get(inst.domains[0], "/api/token")
    assert status == 200 and json.loads(token)["token"].count(".") == 2


def test_access_log_is_json():
    inst = registry()[0]
    get(inst.domains[0])
    line = connect(app_host()).check_output("journalctl -u caddy -n 50 --no-pager -o cat | grep '\"http.log.access' | tail -1")
    assert json.loads(line)["request"]["host"] in inst.domains


@pytest.mark.destructive
def test_postgresql_stopped_gives_503_and_other_sites_keep_serving():
    storage = connect(storage_host())
    target, other = instance("workb-preview"), instance("codeb-dashboard-production")
    domain = target.domains[0]
    # Resolved first: PowerDNS's records live in PostgreSQL, so it cannot answer while it is down.
    addresses = {i.domains[0]: resolve(i.domains[0]) for i in registry()}
    try:
        storage.check_output("systemctl stop postgresql")
        deadline = time.monotonic() + 20
        while True:
            status, _, body = get(domain, address=addresses[domain])
            if status == 503 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert status == 503, body
        checks = json.loads(body)["checks"]
        assert checks["database"]["ok"] is False and checks["redis"]["ok"] is True
        # Caddy keeps the instance in rotation (the outage is not the instance's own) and
        # every other site goes on serving its pages.
        for inst in registry():
            status, _, _ = get(inst.domains[0], "/", address=addresses[inst.domains[0]])
            assert status == 200, inst.name
        status, headers, _ = get(other.domains[0], "/static/centrifuge.js", address=addresses[other.domains[0]])
        assert status == 200
    finally:
        storage.run("systemctl start postgresql")
    deadline = time.monotonic() + 60
    while get(domain, address=addresses[domain])[0] != 200:
        assert time.monotonic() < deadline, "health did not come back after PostgreSQL restarted"
        time.sleep(1)


# --- releases ------------------------------------------------------------------------------------


class Hammer(threading.Thread):
    """Continuous requests (bounded in time) recording status and upstream of each.

    `retry_resets`: a request whose connection is reset before any response is sent again
    once, as HTTP clients do for idempotent requests (RFC 9110, 9.2.2); such retries are
    counted in `retried`, and a second reset is a failure like any other."""

    def __init__(self, domain: str, address: str, limit: float = 300, retry_resets: bool = False):
        super().__init__(daemon=True)
        self.domain, self.address, self.limit, self.retry_resets = domain, address, limit, retry_resets
        self.results: list[tuple[int | str, str]] = []
        self.retried: list[str] = []
        self.stop = threading.Event()

    def run(self):
        end = time.monotonic() + self.limit
        while not self.stop.is_set() and time.monotonic() < end:
            for attempt in (1, 2):
                try:
                    status, headers, _ = get(self.domain, address=self.address)
                    self.results.append((status, headers.get("x-upstream", "")))
                except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected) as exc:
                    if self.retry_resets and attempt == 1:
                        self.retried.append(type(exc).__name__)
                        continue
                    self.results.append((type(exc).__name__, ""))
                except Exception as exc:  # noqa: BLE001 - every failure counts
                    self.results.append((type(exc).__name__, ""))
                break
            time.sleep(0.02)


def make(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.destructive
def test_release_then_rollback_without_a_failed_request():
    inst = instance("workb-preview")
    domain = inst.domains[0]
    before = state(inst)
    old, new = before["active"], "green" if before["active"] == "blue" else "blue"
    registry_addr = group_data()["container_registry"]
    # A request whose new connection Caddy closes before answering (its graceful reload closes
    # connections that have not sent a request yet) is sent again once, as HTTP clients do for
    # idempotent requests; the retries are counted and printed, and a second failure fails.
    hammer = Hammer(domain, resolve(domain), retry_resets=True)
    hammer.start()
    try:
        time.sleep(1)
        rel = make("release", f"APP={inst.project}", f"ENV={inst.env}", f"IMAGE={registry_addr}/codeb/demo:2")
        assert rel.returncode == 0, rel.stdout + rel.stderr
        after = state(inst)
        assert after["active"] == new and after["previous"] == old and "@sha256:" in after["slots"][new]
        status, headers, body = get(domain)
        assert headers["x-upstream"].endswith(f":{inst.slot_ports[new]}") and json.loads(body)["version"] == "2"
        time.sleep(1)
        rb = make("rollback", f"APP={inst.project}", f"ENV={inst.env}")
        assert rb.returncode == 0, rb.stdout + rb.stderr
        time.sleep(1)
    finally:
        hammer.stop.set()
        hammer.join()
    assert state(inst)["active"] == old and state(inst)["slots"][old] == before["slots"][old]
    failures = [r for r in hammer.results if r[0] != 200]
    print(f"{len(hammer.results)} requests, {len(hammer.retried)} sent again after a closed connection: "
          f"{hammer.retried}")
    assert not failures, f"{len(failures)} of {len(hammer.results)} requests failed: {failures[:5]}"
    assert len(hammer.retried) <= 3, hammer.retried  # two reloads: at most a few connections each
    upstreams = [u for _, u in hammer.results]
    # Traffic moved old -> new -> old, with no request lost on the way.
    seq = [u for i, u in enumerate(upstreams) if i == 0 or u != upstreams[i - 1]]
    assert seq == [f"127.0.0.1:{inst.slot_ports[s]}" for s in (old, new, old)], seq
    assert len(hammer.results) > 50


def test_a_release_that_fails_its_health_check_keeps_traffic():
    inst = instance("workb-preview")
    before = state(inst)
    registry_addr = group_data()["container_registry"]
    rel = make("release", f"APP={inst.project}", f"ENV={inst.env}", f"IMAGE={registry_addr}/codeb/demo:broken")
    assert rel.returncode != 0
    assert "ABORTED" in rel.stdout and f"traffic stays on the {before['active']} slot" in rel.stdout
    assert state(inst) == before
    status, headers, _ = get(inst.domains[0])
    assert status == 200 and headers["x-upstream"].endswith(f":{inst.slot_ports[before['active']]}")
    idle = f"{inst.name}-{'green' if before['active'] == 'blue' else 'blue'}.service"
    assert not connect(app_host()).service(idle).is_running


# --- converge ------------------------------------------------------------------------------------


@pytest.mark.destructive
def test_a_changed_env_file_switches_that_instance_slots_without_a_failed_request(apply):
    """A changed secret of one instance (its S3 key, rotated as `make secrets` would: a new id
    and secret) rewrites its env file alone, and reaches the app through the release switch:
    the idle slot starts with the new env, Caddy moves, the old slot stops. No request fails,
    no other instance restarts, and the next apply changes nothing."""
    import secrets as random

    target = instance("workb-preview")
    domain = target.domains[0]
    units = active_units()
    before = {name: started_at(unit) for name, unit in units.items()}
    old = state(target)["active"]
    secrets = yaml.safe_load((LAB / "secrets" / "local.yml").read_text())
    changed = LAB / "secrets" / "test-app-changed.yml"
    secrets[f"s3_key_id.{target.name}"] = "GK" + random.token_hex(12)
    secrets[f"s3_key_secret.{target.name}"] = random.token_hex(32)
    fd = os.open(changed, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(secrets, fh)
    # As in the release test: a new connection closed by Caddy's graceful reload before it
    # answered is sent again once (counted, printed, bounded).
    hammer = Hammer(domain, resolve(domain), retry_resets=True)
    hammer.start()
    try:
        # Every host: the storage host imports the new key, which the app's health check uses.
        rc, out = applied(apply(env={"CODEB_SECRETS_FILE": str(changed)}))
        assert rc == 0, out[-3000:]
        time.sleep(1)
        hammer.stop.set()
        hammer.join()
        new = state(target)["active"]
        assert new != old and state(target)["previous"] == old
        assert not connect(app_host()).service(f"{target.name}-{old}.service").is_running
        env = connect(app_host()).check_output(f"podman exec {target.name}-{new} printenv S3_ACCESS_KEY_ID")
        assert env == secrets[f"s3_key_id.{target.name}"]
        after = {name: started_at(unit) for name, unit in units.items()}
        assert {name for name in units if after[name] != before[name]} == {target.name}
        failures = [r for r in hammer.results if r[0] != 200]
        print(f"{len(hammer.results)} requests, {len(hammer.retried)} sent again after a closed connection")
        assert not failures, f"{len(failures)} of {len(hammer.results)} requests failed: {failures[:5]}"
        assert len(hammer.retried) <= 3, hammer.retried
        assert {u for _, u in hammer.results} == {f"127.0.0.1:{target.slot_ports[s]}" for s in (old, new)}
        rc, out = applied(apply(env={"CODEB_SECRETS_FILE": str(changed)}))
        assert rc == 0 and changes(out) == "-", out[-3000:]
    finally:
        hammer.stop.set()
        changed.unlink(missing_ok=True)
        rc, out = applied(apply())
        assert rc == 0, out[-3000:]


def test_second_apply_changes_nothing(apply):
    rc, out = on_app_host(apply)
    assert rc == 0, out[-3000:]
    assert changes(out) == "-", [line for line in out.splitlines() if re.search(r"\s1\s+1\s+-\s+-\s*$", line)]


@pytest.mark.destructive
def test_removing_an_instance_stops_and_removes_its_units_but_keeps_its_volume(tmp_path, apply):
    target = instance("workb-preview")
    raw = yaml.safe_load((REPO / "group_data" / "projects.yml").read_text())
    del raw["projects"][target.project]["environments"][target.env]
    reduced = tmp_path / "projects.yml"
    reduced.write_text(yaml.safe_dump(raw))
    host = connect(app_host())
    try:
        rc, out = on_app_host(apply, {"CODEB_REGISTRY_FILE": str(reduced)})
        assert rc == 0, out[-3000:]
        for slot in ("blue", "green"):
            assert not host.file(f"/etc/containers/systemd/{target.name}-{slot}.container").exists
            assert not host.service(f"{target.name}-{slot}.service").is_running
        assert not host.file(f"/etc/platform/apps/{target.name}.env").exists
        assert not host.file(f"/etc/caddy/sites/app-{target.name}.caddy").exists
        assert host.run(f"podman volume exists {target.name}-data").rc == 0
        # The other instances keep serving.
        assert get(instance("workb-production").domains[0])[0] == 200
    finally:
        rc, out = on_app_host(apply)
        assert rc == 0, out[-3000:]
    assert get(target.domains[0])[0] == 200
