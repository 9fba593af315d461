#!/usr/bin/python3
# Managed by the platform deploy (services/pgbackrest): installed as codeb-wal-metrics.
"""WAL archiving on the database host, for node-exporter's textfile collector.

codeb_postgresql_wal_last_archived_timestamp_seconds: when the last segment reached the
repository (pg_stat_archiver; archive-push returns only once it is there).
codeb_postgresql_wal_ready_segments / ..._oldest_ready_timestamp_seconds: completed
segments still waiting (pg_wal/archive_status/*.ready) and since when; an idle cluster
archives nothing and waits for nothing, so the alert looks at waiting segments.
    codeb-wal-metrics [--config FILE] --once | --loop SECONDS

FILE (JSON, default /etc/codeb/pgbackrest/wal-metrics.json):
    {"textfile_dir": ..., "archive_status": "<data directory>/pg_wal/archive_status"}
Parsing and formatting are pure functions (`parse_archiver`, `format_lines`), tested
against recorded psql answers (services/pgbackrest/tests/recorded)."""

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

DEFAULT_CONFIG = "/etc/codeb/pgbackrest/wal-metrics.json"
QUERY = ("SELECT coalesce(extract(epoch FROM last_archived_time)::bigint, 0), archived_count, failed_count, "
         "coalesce(extract(epoch FROM last_failed_time)::bigint, 0) FROM pg_stat_archiver")


def load_config(path):
    with open(path) as fh:
        conf = json.load(fh)
    return {"textfile_dir": conf["textfile_dir"], "archive_status": conf["archive_status"]}


def write(textfile_dir, name, lines):
    """Write node-exporter textfile <name>.prom atomically."""
    fd, tmp = tempfile.mkstemp(dir=textfile_dir, prefix=f".{name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(textfile_dir, f"{name}.prom"))


def gauge(lines, name, help_, value, kind="gauge"):
    lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]


def parse_archiver(output):
    """(up, last_archived, archived, failed, last_failed) from psql's answer to QUERY
    (-XAtq -F ' ': one line of four integers); None (psql failed) or anything else: all 0."""
    try:
        last, archived, failed, last_failed = (int(x) for x in output.split())
        return 1, last, archived, failed, last_failed
    except Exception:
        return 0, 0, 0, 0, 0


def ready_mtimes(archive_status):
    """Modification times of the segments waiting to be archived (archive_status/*.ready)."""
    ready = []
    for path in glob.glob(os.path.join(archive_status, "*.ready")):
        try:
            ready.append(os.stat(path).st_mtime)
        except FileNotFoundError:
            pass
    return ready


def format_lines(stats, ready):
    """The textfile's lines from parse_archiver's tuple and the waiting segments' times."""
    up, last, archived, failed, last_failed = stats
    lines = []
    gauge(lines, "codeb_postgresql_up", "1 when the archiver statistics could be read.", up)
    gauge(lines, "codeb_postgresql_wal_last_archived_timestamp_seconds",
          "When the last WAL segment was archived to the repository.", last)
    gauge(lines, "codeb_postgresql_wal_archived_total", "WAL segments archived since the statistics reset.",
          archived, "counter")
    gauge(lines, "codeb_postgresql_wal_archive_failed_total", "Failed archive attempts.", failed, "counter")
    gauge(lines, "codeb_postgresql_wal_last_failed_timestamp_seconds", "Last failed archive attempt.",
          last_failed)
    gauge(lines, "codeb_postgresql_wal_ready_segments", "Completed WAL segments waiting to be archived.",
          len(ready))
    gauge(lines, "codeb_postgresql_wal_oldest_ready_timestamp_seconds",
          "Completion time of the oldest segment waiting (0: none waiting).", f"{min(ready):.0f}" if ready else 0)
    return lines


def query_archiver():
    """psql's answer to QUERY as postgres, or None when it failed."""
    try:
        return subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-F", " ", "-d", "postgres",
                               "-c", QUERY], capture_output=True, text=True, timeout=30, check=True).stdout
    except Exception:
        return None


def collect(conf):
    stats = parse_archiver(query_archiver())
    write(conf["textfile_dir"], "codeb_postgresql_wal", format_lines(stats, ready_mtimes(conf["archive_status"])))


def main(argv):
    config = DEFAULT_CONFIG
    if argv[:1] == ["--config"]:
        if len(argv) < 2:
            sys.exit("usage: codeb-wal-metrics [--config FILE] --once | --loop SECONDS")
        config, argv = argv[1], argv[2:]
    conf = load_config(config)
    if argv[:1] == ["--loop"]:
        interval = int(argv[1])
        while True:
            collect(conf)
            time.sleep(interval)
    collect(conf)


if __name__ == "__main__":
    main(sys.argv[1:])
