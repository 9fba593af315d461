"""The backup host against the running topology: pgBackRest over TLS, the RPO of
continuous archiving, point-in-time restore, the restore drill, file backups and Prometheus.

Run: .venv/bin/pytest tests/topology/test_backup.py

The point-in-time test restores the whole n3 cluster to a time a few seconds back: it works
on a database of its own (backup_pitr_drill), drops it at the end and checks that every
project database is still there. Measurements (RPO, restore durations) are printed and
appended to .lab/logs/backup-measurements.log.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest

from codeb import registry
from lab.topology import ssh_tunnel
from tests.topology.conftest import CA_CERT, LAB, REPO, addr, connect, first, group_data, hosts_in, private
from tests.topology.s3_clients import config, python_client

DATA = group_data()
STANZA = DATA["pgbackrest_stanza"]
PITR_DB = "backup_pitr_drill"
RPO_DB = "backup_rpo_probe"


def storage_host() -> str:
    return first("storage")


def backup_host() -> str:
    return first("backup")


def record(line: str) -> None:
    print(line)
    (LAB / "logs").mkdir(parents=True, exist_ok=True)
    with open(LAB / "logs" / "backup-measurements.log", "a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {line}\n")


def host_output(host: str, command: str, timeout: int = 600) -> str:
    """The output of a command on a host (as root); it must succeed."""
    out = connect(host).run(f"timeout {timeout} sh -c {json.dumps(command)}")
    assert out.rc == 0, f"{host}: {command}\n{out.stdout}\n{out.stderr}"
    return out.stdout.strip()


def psql(sql: str, db: str = "postgres") -> str:
    return host_output(storage_host(), f"runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d {db} -c {json.dumps(sql)}")


def pgbackrest(*args: str) -> str:
    return host_output(backup_host(), f"runuser -u postgres -- pgbackrest --stanza={STANZA} {' '.join(args)}")


def make(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["make", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def project_databases() -> list[str]:
    from codeb import registry, shared

    reg = registry.load()
    return sorted([shared.db_name(i) for i in shared.with_need(reg.instances, "database")] + [shared.PDNS_DB])


# --- pgBackRest -------------------------------------------------------------------------------


def test_same_pgbackrest_version_on_both_hosts():
    versions = {h: host_output(h, "pgbackrest version") for h in (storage_host(), backup_host())}
    assert len(set(versions.values())) == 1, versions


def test_transport_is_tls_only_between_the_two_hosts():
    port = DATA["pgbackrest_tls_port"]
    for host in hosts_in("app") + hosts_in("streaming"):
        for target in (storage_host(), backup_host()):
            out = connect(host).run(f"timeout 3 bash -c 'echo > /dev/tcp/{private(target)}/{port}'")
            assert out.rc != 0, f"{host} reaches pgBackRest on {target}"
    # A client without a certificate from the backup CA gets nothing from the TLS server.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    answered = b""
    try:
        with socket.create_connection((addr(backup_host()), port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(b"{}\n")
                answered = tls.recv(100)
    except (ssl.SSLError, OSError):
        pass
    assert answered == b"", "pgBackRest answered a client without a certificate"


def test_archiving_settings_on_the_database_host():
    settings = dict(line.split("|", 1) for line in psql(
        "SELECT name, setting FROM pg_settings WHERE name IN ('archive_mode','archive_command','archive_timeout')"
    ).splitlines())
    assert settings["archive_mode"] == "on"
    assert settings["archive_command"] == f"pgbackrest --stanza={STANZA} archive-push %p"
    assert int(settings["archive_timeout"]) == DATA["postgresql_archive_timeout"]
    conf = host_output(storage_host(), "cat /etc/pgbackrest/pgbackrest.conf")
    assert "archive-async=y" in conf and "repo1-host-type=tls" in conf


def test_pgbackrest_check_passes():
    pgbackrest("--log-level-console=warn", "check")


def in_repository(segment: str) -> bool:
    repo = f"{DATA['pgbackrest']['repo_path']}/archive/{STANZA}"
    return bool(connect(backup_host()).run(f"find {repo} -name '{segment}-*' | head -1").stdout.strip())


def test_rpo_commit_reaches_the_repository_within_archive_timeout():
    """No pg_switch_wal for the measured commit: its segment must arrive on n4 by archive_timeout alone.

    The probe database's own setup (CREATE DATABASE writes megabytes of WAL) is switched out
    and archived first, so the measurement covers one ordinary commit and nothing else."""
    timeout = DATA["postgresql_archive_timeout"]
    if not psql(f"SELECT 1 FROM pg_database WHERE datname = '{RPO_DB}'"):
        psql(f"CREATE DATABASE {RPO_DB}")
    psql("CREATE TABLE IF NOT EXISTS probe (at timestamptz NOT NULL DEFAULT clock_timestamp())", RPO_DB)
    setup = psql("SELECT pg_walfile_name(pg_switch_wal())", RPO_DB).splitlines()[0]
    settle = time.monotonic() + 60
    while not in_repository(setup) and time.monotonic() < settle:
        time.sleep(0.5)
    assert in_repository(setup), f"setup segment {setup} never reached the repository"
    # Commit, then read the segment that holds the commit record.
    segment = psql("INSERT INTO probe DEFAULT VALUES RETURNING pg_walfile_name(pg_current_wal_insert_lsn())",
                   RPO_DB).splitlines()[0]
    committed = time.monotonic()
    deadline = committed + timeout + 10
    arrived = None
    while time.monotonic() < deadline + 5:
        if in_repository(segment):
            arrived = time.monotonic() - committed
            break
        time.sleep(0.5)
    record(f"RPO: segment {segment} in the repository after "
           f"{'%.1f s' % arrived if arrived is not None else 'more than %d s' % (timeout + 15)} "
           f"(archive_timeout {timeout} s, bound {timeout + 10} s)")
    psql(f"DROP DATABASE IF EXISTS {RPO_DB} WITH (FORCE)")
    assert arrived is not None and arrived <= timeout + 10


# --- schedules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key,unit,host", [
    ("full", "codeb-pgbackrest-full", "backup"), ("incr", "codeb-pgbackrest-incr", "backup"),
    ("verify", "codeb-pgbackrest-verify", "backup"), ("drill", "codeb-restore-drill", "backup"),
    ("files_prune", "codeb-file-prune", "backup"), ("files", "codeb-file-backup", "storage"),
    ("files", "codeb-file-backup", "backup"),
])
def test_timers_exist_with_their_schedules(key, unit, host):
    h = connect(hosts_in(host)[0])
    assert h.service(f"{unit}.timer").is_enabled
    assert h.run(f"systemctl is-active {unit}.timer").stdout.strip() == "active"
    calendar = h.run(f"systemctl show -p TimersCalendar --value {unit}.timer").stdout
    for expr in DATA["backup_schedule"][key]:
        normalised = h.run(f"systemd-analyze calendar '{expr}' | sed -n 's/^ *Normalized form: //p'").stdout.strip()
        assert f"OnCalendar={normalised}" in calendar, calendar
    assert h.run(f"systemctl show -p ActiveState --value {unit}.service").stdout.strip() != "failed"


def test_verify_passes_and_is_published():
    host_output(backup_host(), "/usr/local/sbin/codeb-pgbackrest-job verify", timeout=900)
    text = host_output(backup_host(), f"cat {DATA['node_exporter_textfile_dir']}/codeb_pgbackrest_job_verify.prom")
    assert 'codeb_pgbackrest_job_last_exit_code{job="verify"} 0' in text


# --- restore drill ------------------------------------------------------------------------------


def test_make_restore_drill_reports_result_and_duration():
    start = time.monotonic()
    out = make("restore-drill", "ENV=local")
    assert out.returncode == 0, out.stdout + out.stderr
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("restore drill:")][-1]
    assert line.startswith("restore drill: ok in ")
    record(f"drill: {line} (make: {time.monotonic() - start:.1f} s)")
    text = host_output(backup_host(), f"cat {DATA['node_exporter_textfile_dir']}/codeb_restore_drill.prom")
    assert "codeb_restore_drill_success 1" in text
    # The scratch cluster is gone and nothing listens on the drill port.
    assert connect(backup_host()).run(f"ss -Hltn 'sport = :{DATA['restore_drill_port']}'").stdout.strip() == ""


# --- file backups -------------------------------------------------------------------------------


def test_an_s3_data_block_restores_from_the_file_backup():
    """Garage's data blocks and a metadata snapshot taken just before (ExecStartPre) are in
    the storage host's file backup; a block restores byte-identical."""
    storage = connect(storage_host())
    buckets = [i for i in registry.load().instances if "bucket" in i.needs]
    python_client("put_block", config(buckets[0], buckets[1]))
    path = host_output(storage_host(), "find /var/lib/garage/data -type f -size +200k -mmin -5 | sort | head -1")
    assert path, "Garage wrote no data block for the object"
    digest = host_output(storage_host(), f"sha256sum '{path}' | cut -d' ' -f1")
    snapshots_before = host_output(storage_host(), "ls /var/lib/garage/meta/snapshots 2>/dev/null | sort").split()
    start = time.monotonic()
    host_output(storage_host(), "systemctl start codeb-file-backup.service", timeout=900)
    record(f"file backup of {storage_host()}: {time.monotonic() - start:.1f} s")
    assert "codeb_file_backup_last_exit_code 0" in host_output(
        storage_host(), f"cat {DATA['node_exporter_textfile_dir']}/codeb_file_backup.prom")
    snapshots = host_output(storage_host(), "ls /var/lib/garage/meta/snapshots | sort").split()
    assert snapshots and snapshots[-1] not in snapshots_before, "no fresh metadata snapshot"
    # The documented single-file restore, on the backup host.
    restored = host_output(backup_host(), f"codeb-file-restore {storage_host()} '{path}'").splitlines()[-1]
    assert restored.endswith(path)
    assert host_output(backup_host(), f"sha256sum '{restored}' | cut -d' ' -f1") == digest
    host_output(backup_host(), f"rm -rf /var/tmp/codeb-restore/{storage_host()}")
    # Append-only: the client host cannot delete its snapshots.
    out = storage.run("set -a; . /etc/codeb/backup/restic.env; restic forget --keep-last 1 --prune 2>&1; "
                      "restic snapshots --json latest")
    snaps = json.loads(out.stdout.strip().splitlines()[-1])
    assert snaps, "snapshots disappeared"
    forget = storage.run("set -a; . /etc/codeb/backup/restic.env; restic forget " + snaps[0]["short_id"])
    assert forget.rc != 0 or snaps[0]["short_id"] in storage.run(
        "set -a; . /etc/codeb/backup/restic.env; restic snapshots").stdout


# --- monitoring ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_url():
    """Prometheus listens on the backup host's private address: admins reach it through an SSH tunnel."""
    with ssh_tunnel(backup_host(), private(backup_host()), DATA["prometheus_port"]) as url:
        yield url


def prom(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=10) as resp:
        return json.load(resp)["data"]


def test_prometheus_targets_all_up(prometheus_url):
    deadline = time.monotonic() + 60
    while True:
        targets = prom(prometheus_url, "/api/v1/targets")["activeTargets"]
        down = [(t["scrapeUrl"], t["lastError"]) for t in targets if t["health"] != "up"]
        if not down or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert not down
    jobs = {t["labels"]["job"] for t in targets}
    assert {"node", "centrifugo", "garage"} <= jobs
    nodes = {t["labels"]["host"] for t in targets if t["labels"]["job"] == "node"}
    assert nodes == set(hosts_in("app") + hosts_in("streaming") + hosts_in("storage") + hosts_in("backup"))


@pytest.mark.parametrize("metric", [
    "codeb_pgbackrest_last_backup_timestamp_seconds",
    "codeb_pgbackrest_last_wal_archived_timestamp_seconds",
    "codeb_postgresql_wal_last_archived_timestamp_seconds",
    "codeb_postgresql_wal_ready_segments",
    "codeb_restore_drill_success",
    "codeb_restore_drill_duration_seconds",
    "codeb:pgbackrest_last_backup_age_seconds",
])
def test_freshness_metrics_in_prometheus(metric, prometheus_url):
    deadline = time.monotonic() + 90
    while not prom(prometheus_url, f"/api/v1/query?query={metric}")["result"]:
        assert time.monotonic() < deadline, f"{metric} not in Prometheus"
        time.sleep(5)


def test_alert_rules_loaded(prometheus_url):
    names = {r["name"] for g in prom(prometheus_url, "/api/v1/rules")["groups"] for r in g["rules"] if r["type"] == "alerting"}
    assert {"BackupTooOld", "WalArchiveTooOld", "RestoreDrillFailed", "HostDown"} <= names


def test_prometheus_only_through_an_admin_tunnel():
    """No host and no network reaches Prometheus; admins tunnel to it over SSH (see the fixture)."""
    for host in hosts_in("app") + hosts_in("storage"):
        out = connect(host).run(f"timeout 3 bash -c 'echo > /dev/tcp/{private(backup_host())}/{DATA['prometheus_port']}'")
        assert out.rc != 0, f"{host} reaches Prometheus"


# --- point-in-time restore (last: it restarts PostgreSQL) -----------------------------------------


def app_health_ok(deadline: float) -> bool | None:
    """True when the app instances' /api/health answer 200 through Caddy on the app host by
    the deadline (the apps reconnect by themselves); None when no app is deployed there."""
    from codeb import registry

    apps = hosts_in("app")
    if not apps or connect(apps[0]).run("systemctl is-active caddy").stdout.strip() != "active":
        return None
    domains = [i.domains[0] for i in registry.load().instances if "database" in i.needs][:3]
    pending = set(domains)
    while pending and time.monotonic() < deadline:
        for domain in sorted(pending):
            code = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert",
                 str(CA_CERT), "--resolve", f"{domain}:443:{addr(apps[0])}", f"https://{domain}/api/health"],
                capture_output=True, text=True).stdout
            if code == "200":
                pending.discard(domain)
        if pending:
            time.sleep(2)
    return not pending


@pytest.mark.destructive
def test_point_in_time_restore_keeps_rows_before_t_and_drops_rows_after():
    psql(f"DROP DATABASE IF EXISTS {PITR_DB} WITH (FORCE)")
    psql(f"CREATE DATABASE {PITR_DB}")
    psql("CREATE TABLE drill (id int PRIMARY KEY, label text NOT NULL)", PITR_DB)
    psql("INSERT INTO drill VALUES (1, 'A'), (2, 'A')", PITR_DB)
    time.sleep(1)
    target = psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    time.sleep(1)
    psql("INSERT INTO drill VALUES (3, 'B'), (4, 'B')", PITR_DB)
    record(f"PITR: target {target}")

    start = time.monotonic()
    out = make("restore", "ENV=local", f"TARGET_TIME={target}", "YES=1")
    took = time.monotonic() - start
    assert out.returncode == 0, out.stdout + out.stderr
    record(f"PITR: make restore took {took:.1f} s")

    rows = psql("SELECT id, label FROM drill ORDER BY id", PITR_DB).splitlines()
    assert rows == ["1|A", "2|A"], rows
    present = set(psql("SELECT datname FROM pg_database").splitlines())
    assert set(project_databases()) <= present
    assert connect(storage_host()).service("pdns").is_running

    health = app_health_ok(time.monotonic() + 90)
    if health is not None:
        assert health, "the apps' /api/health did not return to 200 after the restore"

    psql(f"DROP DATABASE IF EXISTS {PITR_DB} WITH (FORCE)")
    # Archiving continues on the new timeline.
    pgbackrest("--log-level-console=warn", "check")


def test_make_restore_refuses_without_confirmation_or_zone():
    out = make("restore", "ENV=local", "TARGET_TIME=2025-01-01 00:00:00")
    assert out.returncode != 0 and "zone" in (out.stdout + out.stderr)
    out = make("restore", "ENV=local", "TARGET_TIME=2025-01-01 00:00:00+00")
    assert out.returncode != 0 and "YES=1" in (out.stdout + out.stderr)
