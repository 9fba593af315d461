"""Backups: RPO trials, PITR restore time of a ~1 GB database, release under load.

RPO: a row is committed on the database host (clock_timestamp() at commit and the WAL
segment holding it, pg_walfile_name(pg_current_wal_insert_lsn())); nothing forces a WAL
switch: PostgreSQL's archive_timeout (group_data: postgresql_archive_timeout) closes the
segment and pgBackRest pushes it. Arrival = modification time of that segment's file in
the repository on the backup host (find -printf %T@). RPO = arrival - commit (shared clock).

PITR: pgbench -i -s BENCH_PGBENCH_SCALE (default 70, ~1 GB) in a scratch database, a full
backup on the backup host (codeb-pgbackrest-job full, timed), two marker rows around a
target time, then `make restore TARGET_TIME=<target> YES=1` timed end to end (archive the
current WAL, stop, delta restore, replay to the target, promotion, checks). The scratch
database is dropped afterwards.

Release under load: BENCH_RELEASE_THREADS (default 4) threads on the gateway request
https://<domain>/api/health through Caddy on the app host without pause while
`make release` (demo:2) and `make rollback` run; every non-200 or error counts as failed.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
import subprocess
import threading
import time

from bench.common import CA_CERT, REPO, addr, figure, group_data, hosts_in, log, percentile, save_section, sh, ssh

TRIALS = int(os.environ.get("BENCH_RPO_TRIALS", "5"))
SCALE = int(os.environ.get("BENCH_PGBENCH_SCALE", "70"))
THREADS = int(os.environ.get("BENCH_RELEASE_THREADS", "4"))
PROBE_DB = "bench_rpo_probe"
PITR_DB = "bench_pitr"


def psql(sql: str, db: str = "postgres", timeout: float = 600) -> str:
    storage = hosts_in("storage")[0]
    proc = ssh(storage, f"runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d {db}", stdin=sql + "\n",
               timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"psql on {storage}: {proc.stderr[-500:]}")
    return proc.stdout.strip()


def rpo_trials() -> list[dict]:
    data = group_data()
    backup = hosts_in("backup")[0]
    repo = f"{data['pgbackrest']['repo_path']}/archive/{data['pgbackrest_stanza']}"
    timeout = data["postgresql_archive_timeout"]
    if not psql(f"SELECT 1 FROM pg_database WHERE datname = '{PROBE_DB}'"):
        psql(f"CREATE DATABASE {PROBE_DB}")
    psql("CREATE TABLE IF NOT EXISTS probe (at timestamptz NOT NULL DEFAULT clock_timestamp())", PROBE_DB)
    figures, values = [], []
    try:
        for trial in range(1, TRIALS + 1):
            time.sleep(1.5)
            row = psql("INSERT INTO probe DEFAULT VALUES RETURNING extract(epoch FROM at), "
                       "pg_walfile_name(pg_current_wal_insert_lsn())", PROBE_DB).splitlines()[0]
            committed, segment = row.split("|")
            found = ssh(backup, f"for i in $(seq 1 {(timeout + 60) * 4}); do "
                                f"t=$(find {repo} -name '{segment}-*' -printf '%T@\\n' | head -1); "
                                f"[ -n \"$t\" ] && {{ echo $t; exit 0; }}; sleep 0.25; done; exit 1",
                        timeout=timeout + 90)
            if found.returncode:
                log(f"RPO trial {trial}: segment {segment} not in the repository after {timeout + 60} s")
                values.append(None)
                continue
            rpo = float(found.stdout.strip()) - float(committed)
            values.append(rpo)
            log(f"RPO trial {trial}/{TRIALS}: segment {segment} archived {rpo:.1f} s after the commit")
    finally:
        psql(f"DROP DATABASE IF EXISTS {PROBE_DB} WITH (FORCE)")
    got = [v for v in values if v is not None]
    figures.append(figure("RPO (commit -> WAL segment in the repository on the backup host)",
                          f"max {max(got):.1f}, median {percentile(got, 50):.1f}, min {min(got):.1f}" if got else "none",
                          "s", f"{len(got)} of {TRIALS} trials arrived ({', '.join(f'{v:.1f}' for v in got)} s); "
                          f"archive_timeout {timeout} s in this environment (production data: "
                          f"{_production_archive_timeout()} s, so its bound is that plus the push time)",
                          target="<= 70 s", ok=bool(got) and len(got) == TRIALS and max(got) <= 70))
    return figures


def _production_archive_timeout():
    import runpy

    return runpy.run_path(str(REPO / "group_data" / "all.py"))["postgresql_archive_timeout"]


def pitr() -> list[dict]:
    storage, backup = hosts_in("storage")[0], hosts_in("backup")[0]
    figures = []
    psql(f"DROP DATABASE IF EXISTS {PITR_DB} WITH (FORCE)")
    psql(f"CREATE DATABASE {PITR_DB}")
    try:
        log(f"PITR: pgbench -i -s {SCALE} in {PITR_DB} on {storage}")
        start = time.monotonic()
        ssh(storage, f"runuser -u postgres -- /usr/lib/postgresql/*/bin/pgbench -i -q -s {SCALE} {PITR_DB}",
            timeout=3600, check=True)
        t_init = time.monotonic() - start
        size = int(psql(f"SELECT pg_database_size('{PITR_DB}')"))
        log(f"PITR: {size / 2**30:.2f} GiB generated in {t_init:.0f} s; full backup on {backup}")
        start = time.monotonic()
        ssh(backup, "/usr/local/sbin/codeb-pgbackrest-job full", timeout=3600, check=True)
        t_full = time.monotonic() - start
        psql("CREATE TABLE marker (id int PRIMARY KEY, label text)", PITR_DB)
        psql("INSERT INTO marker VALUES (1, 'before')", PITR_DB)
        time.sleep(1)
        target = psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
        time.sleep(1)
        psql("INSERT INTO marker VALUES (2, 'after')", PITR_DB)
        log(f"PITR: make restore TARGET_TIME='{target}' YES=1")
        start = time.monotonic()
        proc = sh(["make", "-s", "restore", "ENV=local", f"TARGET_TIME={target}", "YES=1"], timeout=3600,
                  stdin=subprocess.DEVNULL)
        t_restore = time.monotonic() - start
        rows = psql("SELECT id FROM marker ORDER BY id", PITR_DB).split()
        ok = proc.returncode == 0 and rows == ["1"]
        figures.append(figure("PITR restore of the database cluster (delta)", round(t_restore, 1), "s",
                              f"`make restore` end to end with a {size / 2**30:.2f} GiB database (pgbench -i -s "
                              f"{SCALE}: {t_init:.0f} s) in a cluster of {_cluster_size_gib():.2f} GiB, from a full "
                              f"backup taken just before ({t_full:.0f} s); delta restore + WAL replay to the target; "
                              f"rows after restore {rows} (expected ['1']): {'ok' if ok else 'FAILED'}"))
        if proc.returncode:
            log(proc.stdout[-2000:] + proc.stderr[-1000:])
        # The same backup restored whole (not delta) into a scratch cluster on the backup host.
        log("restore drill: the latest backup (with the ~1 GB database) into a scratch cluster on the backup host")
        start = time.monotonic()
        drill = sh(["make", "-s", "restore-drill", "ENV=local"], timeout=3600, stdin=subprocess.DEVNULL)
        t_drill = time.monotonic() - start
        said = [ln for ln in drill.stdout.splitlines() if ln.startswith("restore drill:")]
        figures.append(figure("Full restore of the same backup (restore drill)", round(t_drill, 1), "s",
                              f"`make restore-drill` end to end: the latest backup (full, {size / 2**30:.2f} GiB "
                              f"database included) restored whole into an empty scratch cluster on {backup}, started, "
                              f"queried, removed; exit {drill.returncode}; it said: {said[-1] if said else '(nothing)'}"))
    finally:
        psql(f"DROP DATABASE IF EXISTS {PITR_DB} WITH (FORCE)")
    return figures


def _cluster_size_gib() -> float:
    return int(psql("SELECT sum(pg_database_size(datname)) FROM pg_database")) / 2**30


def resolve(domain: str) -> str:
    out = subprocess.run(["dig", "+short", "+time=2", "+tries=2", f"@{addr(hosts_in('storage')[0])}", domain, "A"],
                         capture_output=True, text=True).stdout.split()
    found = [a for a in out if re.fullmatch(r"[0-9.]+", a)]
    return found[0] if found else addr(hosts_in("app")[0])


def release_under_load() -> list[dict]:
    from codeb import registry

    inst = next(i for i in registry.load().instances if i.name == "workb-preview")
    domain = inst.domains[0]
    address = resolve(domain)
    ctx = ssl.create_default_context(cafile=str(CA_CERT))
    results: list = []
    stop = threading.Event()

    def hammer():
        end = time.monotonic() + 900
        while not stop.is_set() and time.monotonic() < end:
            try:
                sock = socket.create_connection((address, 443), 10)
                conn = http.client.HTTPSConnection(domain, 443, context=ctx, timeout=10)
                conn.sock = ctx.wrap_socket(sock, server_hostname=domain)
                conn.request("GET", "/api/health")
                resp = conn.getresponse()
                resp.read()
                results.append(resp.status)
                conn.close()
            except Exception as exc:  # noqa: BLE001 - every failure counts
                results.append(type(exc).__name__)

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(THREADS)]
    for t in threads:
        t.start()
    registry_addr = group_data()["container_registry"]
    try:
        time.sleep(2)
        log(f"release under load: make release {inst.project}/{inst.env} demo:2 with {THREADS} request loops")
        start = time.monotonic()
        rel = sh(["make", "-s", "release", f"APP={inst.project}", f"ENV={inst.env}",
                  f"IMAGE={registry_addr}/codeb/demo:2"], timeout=900)
        t_rel = time.monotonic() - start
        time.sleep(2)
        log("release under load: make rollback")
        start = time.monotonic()
        rb = sh(["make", "-s", "rollback", f"APP={inst.project}", f"ENV={inst.env}"], timeout=900)
        t_rb = time.monotonic() - start
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    failed = [r for r in results if r != 200]
    how = (f"{THREADS} loops on the gateway, each a new TLS connection per GET https://{domain}/api/health "
           f"(full health: database and Redis) through Caddy on {hosts_in('app')[0]}, during `make release` "
           f"(exit {rel.returncode}, {t_rel:.1f} s) and `make rollback` (exit {rb.returncode}, {t_rb:.1f} s); "
           f"{len(results)} requests in all")
    return [figure("Failed requests during a release and a rollback", len(failed), "requests",
                   how + (f"; failures: {failed[:5]}" if failed else ""), target="0",
                   ok=not failed and rel.returncode == 0 and rb.returncode == 0)]


def measure(parts=("rpo", "pitr", "release")) -> list[dict]:
    from bench.common import load_results

    previous = load_results().get("backups", {}).get("figures", [])
    figures = []
    for part, fn in (("rpo", rpo_trials), ("release", release_under_load), ("pitr", pitr)):
        if part in parts:
            figures += [dict(f, part=part) for f in fn()]
        else:  # keep the last measurement of a part not run now
            figures += [f for f in previous if f.get("part") == part]
    save_section("backups", figures)
    return figures


if __name__ == "__main__":
    import sys

    measure(tuple(sys.argv[1:]) or ("rpo", "pitr", "release"))
