#!/usr/bin/python3
# Managed by the platform deploy (services/pgbackrest): installed as codeb-backup-metrics.
"""Backup freshness on the repository host, for node-exporter's textfile collector:
the last backup of each type and the newest WAL segment in the repository.
    codeb-backup-metrics [--config FILE] --once | --loop SECONDS

FILE (JSON, default /etc/codeb/pgbackrest/backup-metrics.json):
    {"textfile_dir": ..., "repo_path": ..., "stanza": ...}
Parsing and formatting are pure functions (`summarise`, `format_lines`), tested against
recorded `pgbackrest info` answers (services/pgbackrest/tests/recorded)."""

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

DEFAULT_CONFIG = "/etc/codeb/pgbackrest/backup-metrics.json"


def load_config(path):
    with open(path) as fh:
        conf = json.load(fh)
    return {"textfile_dir": conf["textfile_dir"], "repo_path": conf["repo_path"], "stanza": conf["stanza"]}


def write(textfile_dir, name, lines):
    """Write node-exporter textfile <name>.prom atomically."""
    fd, tmp = tempfile.mkstemp(dir=textfile_dir, prefix=f".{name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(textfile_dir, f"{name}.prom"))


def summarise(output):
    """(info, ok) from the output of `pgbackrest --output=json info` for one stanza; output
    None (the command failed) or anything unreadable gives no backups and ok = 0."""
    try:
        info = json.loads(output)[0]
        ok = 1 if info["status"]["code"] == 0 else 0
    except Exception:
        info, ok = {"backup": []}, 0
    return info, ok


def newest_wal(repo_path, stanza):
    """Modification time of the newest WAL segment in the repository (0 when none):
    archive/<stanza>/<archive id>/<16 hex>/<segment>, history files left out."""
    newest = 0.0
    for path in glob.glob(os.path.join(repo_path, "archive", stanza, "*", "*", "*")):
        name = os.path.basename(path)
        if len(name) >= 24 and not name.endswith(".history"):
            newest = max(newest, os.stat(path).st_mtime)
    return newest


def format_lines(stanza, info, ok, newest):
    """The textfile's lines for one stanza: health, newest valid backup by type, count of
    valid backups, arrival of the newest WAL segment."""
    label = '{stanza="%s"}' % stanza
    lines = ["# HELP codeb_pgbackrest_stanza_ok 1 when `pgbackrest info` reports the stanza healthy.",
             "# TYPE codeb_pgbackrest_stanza_ok gauge", "codeb_pgbackrest_stanza_ok%s %d" % (label, ok)]
    last = {}
    for b in info.get("backup", []):
        if b.get("error"):
            continue
        last[b["type"]] = max(last.get(b["type"], 0), b["timestamp"]["stop"])
    lines += ["# HELP codeb_pgbackrest_last_backup_timestamp_seconds End of the newest valid backup by type.",
              "# TYPE codeb_pgbackrest_last_backup_timestamp_seconds gauge"]
    for kind, ts in sorted(last.items()):
        lines.append('codeb_pgbackrest_last_backup_timestamp_seconds{stanza="%s",type="%s"} %d' % (stanza, kind, ts))
    lines += ["# HELP codeb_pgbackrest_backups Valid backups in the repository.",
              "# TYPE codeb_pgbackrest_backups gauge",
              "codeb_pgbackrest_backups%s %d" % (label, len([b for b in info.get("backup", []) if not b.get("error")]))]
    lines += ["# HELP codeb_pgbackrest_last_wal_archived_timestamp_seconds Arrival of the newest WAL segment "
              "in the repository.",
              "# TYPE codeb_pgbackrest_last_wal_archived_timestamp_seconds gauge",
              "codeb_pgbackrest_last_wal_archived_timestamp_seconds%s %.0f" % (label, newest)]
    return lines


def pgbackrest_info(stanza):
    """The stdout of `pgbackrest --output=json info` as postgres, or None when it failed."""
    try:
        return subprocess.run(["runuser", "-u", "postgres", "--", "pgbackrest", f"--stanza={stanza}",
                               "--output=json", "info"], capture_output=True, text=True, timeout=120,
                              check=True).stdout
    except Exception:
        return None


def collect(conf):
    info, ok = summarise(pgbackrest_info(conf["stanza"]))
    lines = format_lines(conf["stanza"], info, ok, newest_wal(conf["repo_path"], conf["stanza"]))
    write(conf["textfile_dir"], "codeb_pgbackrest", lines)


def main(argv):
    config = DEFAULT_CONFIG
    if argv[:1] == ["--config"]:
        if len(argv) < 2:
            sys.exit("usage: codeb-backup-metrics [--config FILE] --once | --loop SECONDS")
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
