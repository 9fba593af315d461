"""`make drills`: fault injection on the local topology, each bounded in time, each ending healthy.

    python -m bench.drills [apply-kill] [reboot] [stop-storage] [backup-disk-full]

apply-kill        five times: drift is injected on every host (managed files edited at points spread
                  over the whole run, a managed service stopped), then a full apply is killed
                  (SIGKILL to pyinfra and its SSH children) at a random operation; the re-apply must
                  succeed and undo all the drift, and the next apply change nothing.
reboot            each guest in turn: `systemctl reboot` inside; systemd-nspawn --boot exits on a
                  guest reboot (exit 133) unless a supervisor restarts it, and the harness runs it
                  without one, so `lab.topology up` starts the guest again (nothing else is done);
                  every service must come back by itself and the health table turn green.
stop-storage      the storage guest is stopped whole: the apps' /api/health answer 503 through
                  Caddy, Centrifugo and Caddy on the streaming host keep running and accept a
                  WebSocket client; the guest is started again and everything recovers by itself.
backup-disk-full  the pgBackRest repository on the backup host is moved (inside the guest) onto a
                  small tmpfs which is then filled: a backup fails loudly (exit code, journal,
                  metric), WAL archiving fails and the WalArchiveTooOld alert fires in Prometheus
                  (queried on its API); the database host keeps serving with its data intact; the
                  repository is put back (segments that reached the tmpfs are copied back first).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request

from bench.common import (
    CA_CERT,
    LAB,
    PY,
    REPO,
    addr,
    group_data,
    health_ok,
    hosts_in,
    inventory,
    load_results,
    log,
    private,
    sh,
    ssh,
    wait_for,
)
from lab.topology import ssh_tunnel
from tools.run import count_changes

OP_LINE = re.compile(r"^--> Starting operation: (.*)$")


class Drill:
    def __init__(self, name: str):
        self.name, self.lines, self.ok, self.start = name, [], True, time.monotonic()

    def note(self, line: str, ok: bool = True) -> None:
        self.lines.append(line if ok else f"**FAIL** {line}")
        self.ok = self.ok and ok
        log(f"[{self.name}] {'ok  ' if ok else 'FAIL'} {line}")

    def save(self) -> None:
        results = load_results()
        results.setdefault("drills", {})[self.name] = {
            "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "ok": self.ok,
            "seconds": round(time.monotonic() - self.start), "lines": self.lines}
        from bench.common import RESULTS

        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1))


def apply(timeout: float = 1800) -> tuple[int, int | None, float, str]:
    start = time.monotonic()
    proc = sh([str(REPO / ".venv/bin/pyinfra"), "-y", "inventory/local.py", "deploy.py"], timeout=timeout)
    out = proc.stdout + proc.stderr
    return proc.returncode, count_changes(out), time.monotonic() - start, out


def final_health(d: Drill, timeout: float = 300) -> None:
    took = wait_for(lambda: health_ok()[0], timeout, 5)
    ok, last = health_ok()
    d.note(f"health table: {last}" + (f" (green after {took:.0f} s)" if took is not None else ""), ok)


# --- kill the apply at a random operation ------------------------------------------------------


def killed_apply(op_index: int, limit: float = 900) -> tuple[str, int]:
    """Start a full apply, SIGKILL its process group when the op_index-th operation starts."""
    proc = subprocess.Popen([str(REPO / ".venv/bin/pyinfra"), "-y", "inventory/local.py", "deploy.py"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen, name = 0, "(before the first operation)"
    start = time.monotonic()
    assert proc.stdout
    for line in proc.stdout:
        m = OP_LINE.match(line.strip())
        if m:
            seen += 1
            name = m.group(1)
            if seen >= op_index:
                time.sleep(random.uniform(0, 1.5))  # somewhere inside the operation
                break
        if time.monotonic() - start > limit:
            break
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return name, seen


DRIFT_MARK = "# drill drift"
# Managed files edited by hand before each killed apply, per host group: early in the run
# (common role), in the storage, backup, streaming and app phases, so that wherever the kill
# lands, part of the repair is done and part is left to the re-apply.
DRIFT_FILES = {
    "all": ["/etc/hosts"],
    "storage": ["/etc/postgresql/17/main/conf.d/10-platform.conf"],
    "backup": ["/etc/prometheus/prometheus.yml"],
    "streaming": ["/etc/caddy/Caddyfile"],
    "app": ["/etc/caddy/Caddyfile"],
}
DRIFT_SERVICE = "prometheus-node-exporter"


def drift_targets() -> dict[str, list[str]]:
    targets = {name: list(DRIFT_FILES["all"]) for name in inventory()}
    for group, paths in DRIFT_FILES.items():
        if group != "all":
            for name in hosts_in(group):
                targets[name].extend(paths)
    return targets


def inject_drift() -> bool:
    ok = True
    for name, paths in drift_targets().items():
        edits = " && ".join(f"echo {DRIFT_MARK!r} >> {p}" for p in paths)
        ok = ssh(name, f"{edits} && systemctl stop {DRIFT_SERVICE}", timeout=60).returncode == 0 and ok
    return ok


def drift_left() -> list[str]:
    """What of the injected drift is still there, read on the hosts (not pyinfra's view)."""
    left = []
    for name, paths in drift_targets().items():
        for path in paths:
            if ssh(name, f"grep -qF {DRIFT_MARK!r} {path}", timeout=60).returncode == 0:
                left.append(f"{name}:{path}")
        if ssh(name, f"systemctl is-active -q {DRIFT_SERVICE}", timeout=60).returncode != 0:
            left.append(f"{name}:{DRIFT_SERVICE} stopped")
    return left


def drill_apply_kill(times: int = 5) -> Drill:
    d = Drill("Kill the apply at a random operation")
    # How many operations a full run announces (from the last apply log, or a fresh count).
    rc, changes, took, out = apply()
    total = sum(1 for line in out.splitlines() if OP_LINE.match(line.strip()))
    d.note(f"baseline apply: exit {rc}, {changes} change(s), {total} operations, {took:.0f} s", rc == 0)
    rng = random.Random(int(os.environ.get("DRILL_SEED", str(int(time.time())))))
    for trial in range(1, times + 1):
        k = rng.randint(1, max(1, total))
        injected = inject_drift()
        name, seen = killed_apply(k)
        left_by_kill = len(drift_left())
        rc, changes, took, out = apply()
        left = drift_left()
        rc2, changes2, took2, _ = apply()
        d.note(f"trial {trial}: drift injected on every host ({'ok' if injected else 'FAILED'}), apply killed at "
               f"operation {seen}/{total} ({name}), {left_by_kill} drift item(s) left by it; re-apply exit {rc}, "
               f"{changes} change(s) in {took:.0f} s, drift left after it: {left or 'none'}; next apply exit "
               f"{rc2}, {changes2} change(s)",
               injected and rc == 0 and not left and rc2 == 0 and changes2 == 0)
        if rc:
            log(out[-3000:])
    final_health(d)
    d.save()
    return d


# --- reboot each guest ------------------------------------------------------------------------


def nspawn_alive(name: str) -> bool:
    try:
        pid = int((LAB / "run" / f"{name}.pid").read_text())
        os.kill(pid, 0)
        return True
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False


def ssh_up(name: str) -> bool:
    return ssh(name, "true", timeout=15, sudo=False).returncode == 0


def drill_reboot() -> Drill:
    d = Drill("Reboot each guest")
    for name in inventory():
        start = time.monotonic()
        try:
            ssh(name, "systemctl reboot", timeout=30)
        except subprocess.TimeoutExpired:
            pass  # the session may hang while the guest goes down
        gone = wait_for(lambda n=name: not nspawn_alive(n), 120, 1)
        restarted_by_itself = False
        if gone is None:
            restarted_by_itself = True  # still the same systemd-nspawn: the guest rebooted inside it
        back = wait_for(lambda n=name: ssh_up(n), 20, 2) if restarted_by_itself else None
        if back is None:
            sh([PY, "-m", "lab.topology", "up"], timeout=300)  # starts only the guest that stopped
        up = wait_for(lambda n=name: ssh_up(n), 180, 2)
        healthy = wait_for(lambda: health_ok()[0], 300, 5)
        d.note(f"{name}: `systemctl reboot` inside; systemd-nspawn "
               f"{'kept running' if restarted_by_itself else f'exited after {gone:.0f} s, started again by lab.topology up'}"
               f"; SSH after {time.monotonic() - start:.0f} s; health green "
               f"{'after %.0f s more' % healthy if healthy is not None else 'NOT within 300 s'} with no other action",
               up is not None and healthy is not None)
    final_health(d)
    d.save()
    return d


# --- stop the storage host ----------------------------------------------------------------------


def https_status(domain: str, address: str, path: str = "/api/health") -> str:
    proc = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert",
                           str(CA_CERT), "--resolve", f"{domain}:443:{address}", f"https://{domain}{path}"],
                          capture_output=True, text=True)
    return proc.stdout.strip()


def websocket_connects() -> bool:
    from bench.common import lab_secret
    from bench.realtime import jwt
    from codeb import registry, shared
    from services.centrifugo import model as centrifugo_model

    data = group_data()
    ws = shared.ws_domain(data["platform_domain"])
    inst = centrifugo_model.realtime_instances(registry.load().instances)[0]
    origin = centrifugo_model.origins([inst])[0]
    secret = lab_secret(f"centrifugo_hmac_secret.{inst.name}")
    code = (
        "import asyncio, json, ssl, sys, socket\n"
        "import centrifuge\n"
        f"real = socket.getaddrinfo\n"
        f"socket.getaddrinfo = lambda h, *a, **k: real({addr(hosts_in('streaming')[0])!r} if h == {ws!r} else h, *a, **k)\n"
        "async def main():\n"
        "    tok = sys.stdin.readline().strip()\n"
        f"    c = centrifuge.Client('wss://{ws}/{inst.name}/connection/websocket', token=tok, headers={{'Origin': {origin!r}}},"
        f" ssl_context=ssl.create_default_context(cafile={str(CA_CERT)!r}), proxy=None, timeout=5.0)\n"
        "    await c.connect(); await c.ready(timeout=10); await c.disconnect()\n"
        "asyncio.run(main())\n")
    proc = subprocess.run([PY, "-c", code], input=jwt({"sub": "drill"}, secret) + "\n", capture_output=True,
                          text=True, timeout=60)
    return proc.returncode == 0


def drill_stop_storage() -> Drill:
    from codeb import registry
    from lab.topology import RUN, stop_pid

    d = Drill("Stop the storage host")
    storage, app, streaming = hosts_in("storage")[0], hosts_in("app")[0], hosts_in("streaming")[0]
    insts = [i for i in registry.load().instances if i.group == "app" and "database" in i.needs][:3]
    start = time.monotonic()
    stop_pid(RUN / f"{storage}.pid")
    d.note(f"{storage} stopped (systemd-nspawn terminated by the harness) in {time.monotonic() - start:.0f} s")
    try:
        for inst in insts:
            took = wait_for(lambda i=inst: https_status(i.domains[0], addr(app)) == "503", 60, 2)
            d.note(f"{inst.domains[0]}/api/health through Caddy on {app}: "
                   f"{'503 after %.0f s' % took if took is not None else https_status(inst.domains[0], addr(app))}",
                   took is not None)
        page = https_status(insts[0].domains[0], addr(app), "/static/centrifuge.js")
        d.note(f"static page of {insts[0].name} still served: HTTP {page}", page == "200")
        active = ssh(streaming, "systemctl is-active centrifugo caddy", timeout=20).stdout.split()
        d.note(f"on {streaming}: centrifugo and caddy {active}", active == ["active", "active"])
        d.note("a WebSocket client connects through Caddy while the storage host is down", websocket_connects())
    finally:
        start = time.monotonic()
        sh([PY, "-m", "lab.topology", "up"], timeout=300)
        d.note(f"{storage} started again by lab.topology up ({time.monotonic() - start:.0f} s)")
    for inst in insts:
        took = wait_for(lambda i=inst: https_status(i.domains[0], addr(app)) == "200", 300, 3)
        d.note(f"{inst.domains[0]}/api/health back to 200 "
               f"{'after %.0f s' % took if took is not None else 'NOT within 300 s'}, no manual step",
               took is not None)
    final_health(d)
    d.save()
    return d


# --- fill the backup repository's disk --------------------------------------------------------


def prom(path: str):
    """Prometheus is on the backup host's private address: through an admin's SSH tunnel."""
    data = group_data()
    backup = hosts_in("backup")[0]
    with ssh_tunnel(backup, private(backup), data["prometheus_port"]) as base:
        with urllib.request.urlopen(base + path, timeout=10) as resp:
            return json.load(resp)["data"]


def firing(alert: str) -> bool:
    return any(a["labels"].get("alertname") == alert and a["state"] == "firing" for a in prom("/api/v1/alerts")["alerts"])


def drill_backup_disk_full(alert_wait: float = 600) -> Drill:
    from bench.backups import psql

    d = Drill("Fill the backup repository's disk")
    data = group_data()
    backup, storage = hosts_in("backup")[0], hosts_in("storage")[0]
    repo = data["pgbackrest"]["repo_path"]
    stanza = data["pgbackrest_stanza"]
    # The storage host's data before: a checksum over every project database's table sizes.
    psql("DROP DATABASE IF EXISTS drill_disk_full WITH (FORCE)")
    psql("CREATE DATABASE drill_disk_full")
    psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g", "drill_disk_full")
    before = psql("SELECT count(*), md5(string_agg(v, '' ORDER BY id)) FROM t", "drill_disk_full")
    mount = (f"set -e; used=$(du -sm {repo} | cut -f1); size=$((used + 48)); mkdir -p /run/codeb-drill/orig "
             f"/run/codeb-drill/fs; mount --bind {repo} /run/codeb-drill/orig; "
             f"mount -t tmpfs -o size=${{size}}m,mode=750 codeb-drill /run/codeb-drill/fs; "
             f"cp -a {repo}/. /run/codeb-drill/fs/; chown --reference={repo} /run/codeb-drill/fs; "
             f"chmod --reference={repo} /run/codeb-drill/fs; mount --bind /run/codeb-drill/fs {repo}; "
             f"dd if=/dev/zero of={repo}/fill bs=1M status=none || true; df -m {repo} | tail -1")
    proc = ssh(backup, mount, timeout=600)
    d.note(f"repository {repo} on {backup} moved onto a tmpfs sized to its contents + 48 MiB and filled: "
           f"{proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]}",
           proc.returncode == 0)
    try:
        job = ssh(backup, "/usr/local/sbin/codeb-pgbackrest-job incr 2>&1 | tail -3; exit ${PIPESTATUS[0]}",
                  timeout=900)
        d.note(f"backup job (codeb-pgbackrest-job incr) exit {job.returncode}: "
               f"{' / '.join(job.stdout.strip().splitlines()[-2:])[:300]}", job.returncode != 0)
        metric = ssh(backup, f"cat {data['node_exporter_textfile_dir']}/codeb_pgbackrest_job_incr.prom | "
                             "grep '^codeb_pgbackrest_job_last_exit_code'").stdout.strip()
        d.note(f"metric published for Prometheus: {metric}", metric != "" and not metric.endswith(" 0"))
        # WAL keeps coming: close a few segments; archive-push must fail and keep them.
        for _ in range(3):
            psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(20001, 20100) g ON CONFLICT DO NOTHING; "
                 "SELECT pg_switch_wal();", "drill_disk_full")
            time.sleep(2)
        start = time.monotonic()
        log(f"waiting for WalArchiveTooOld (wal_max_age {data['backup_alerts']['wal_max_age']}) on Prometheus, "
            f"at most {alert_wait:.0f} s")
        took = wait_for(lambda: firing("WalArchiveTooOld"), alert_wait, 10)
        failed = psql("SELECT failed_count, last_failed_wal FROM pg_stat_archiver")
        d.note(f"pg_stat_archiver on {storage}: failed_count|last_failed_wal = {failed}", failed.split("|")[0] != "0")
        d.note("Prometheus alert WalArchiveTooOld " + (f"firing after {time.monotonic() - start:.0f} s"
                                                       if took is not None else f"NOT firing within {alert_wait:.0f} s"),
               took is not None)
        after = psql("SELECT count(*) FILTER (WHERE id <= 20000), md5(string_agg(v, '' ORDER BY id) FILTER "
                     "(WHERE id <= 20000)) FROM t", "drill_disk_full")
        d.note(f"data on {storage} unharmed: before {before}, after {after}; PostgreSQL accepting writes",
               before == after)
    finally:
        restore = (f"set -e; rm -f {repo}/fill; cp -an /run/codeb-drill/fs/archive/. /run/codeb-drill/orig/archive/ "
                   f"2>/dev/null || true; umount {repo}; umount /run/codeb-drill/fs; umount /run/codeb-drill/orig; "
                   f"rmdir /run/codeb-drill/fs /run/codeb-drill/orig; df -m {repo} | tail -1")
        proc = ssh(backup, restore, timeout=600)
        d.note(f"repository put back on the guest's own filesystem (new archive segments copied back): "
               f"exit {proc.returncode}", proc.returncode == 0)
    check = ssh(backup, f"runuser -u postgres -- pgbackrest --stanza={stanza} --log-level-console=warn check",
                timeout=600)
    d.note(f"pgbackrest check after: exit {check.returncode}", check.returncode == 0)
    job = ssh(backup, "/usr/local/sbin/codeb-pgbackrest-job incr", timeout=1800)
    d.note(f"incremental backup after: exit {job.returncode}", job.returncode == 0)
    cleared = wait_for(lambda: not firing("WalArchiveTooOld"), 300, 10)
    d.note("WalArchiveTooOld " + ("resolved" if cleared is not None else "still firing after 300 s"),
           cleared is not None)
    psql("DROP DATABASE IF EXISTS drill_disk_full WITH (FORCE)")
    final_health(d)
    d.save()
    return d


DRILLS = {"apply-kill": drill_apply_kill, "stop-storage": drill_stop_storage, "reboot": drill_reboot,
          "backup-disk-full": drill_backup_disk_full}


def main(argv: list[str]) -> int:
    from bench import report

    wanted = argv or list(DRILLS)
    failed = []
    for name in wanted:
        log(f"=== drill: {name} ===")
        try:
            d = DRILLS[name]()
            if not d.ok:
                failed.append(name)
        except Exception as exc:  # noqa: BLE001
            log(f"{name}: error {exc!r}")
            failed.append(name)
    report.write_drills()
    log("drills done" + (f"; failed: {failed}" if failed else ": all passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
