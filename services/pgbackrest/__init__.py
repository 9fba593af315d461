"""PostgreSQL backups with pgBackRest, and point-in-time restore.

- Database hosts (storage): continuous WAL archiving (archive-push, async) through a
  PostgreSQL drop-in owned here, `pgbackrest server` (TLS) for the repository host, WAL
  freshness metrics, the point-in-time restore program (`make restore`).
- The backup host: the repository (stanza-create, check and a first full backup during
  the apply), systemd timers for full and incremental backups, verify and the restore
  drill, and the backup freshness metrics.

Transport between database and repository host: pgBackRest's TLS server in both
directions with certificates from the environment's CA (codeb/pki.py); no SSH account,
no shell, a client certificate's CN authorises one stanza (see README).

The programs that run on the hosts are static files of this folder (pgbackrest-job.sh,
backup_metrics.py, wal_metrics.py, restore-drill.sh, pitr.sh), installed unchanged under
/usr/local/sbin; each reads a configuration file rendered here (CONFIGS: KEY=value for the
shell programs, sourced; JSON for the Python ones), passed as `--config FILE` by the units
and defaulting to the same path when a person or a tool runs the program.
"""

from __future__ import annotations

import json
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from codeb import shared
from codeb.files import put
from codeb.host import PROM_WRITE, install_prom_write, shell_config
from codeb.inventory import group_addrs, platform_hosts
from codeb.ops import SBIN, UNITS, converge, host_names, host_tls, install_units, restart_on_change, timer, unit
from codeb.render import templates
from services.postgresql import RELOAD as PG_RELOAD
from services.postgresql import paths as pg_paths

from . import model

render = templates(__file__)

STATE = "/var/lib/codeb/backup"
TLS_DIR = model.PGBACKREST_TLS_DIR
PGBACKREST_CONF = model.PGBACKREST_CONF
DRILL_CONF = "/etc/pgbackrest/drill.conf"
DRILL_SCRATCH = "/var/lib/codeb/drill"
# Services on the database host that use PostgreSQL and are stopped around a restore.
PG_DEPENDENTS = ["pdns.service"]

SCRIPTS = {
    "job": f"{SBIN}/codeb-pgbackrest-job",
    "metrics": f"{SBIN}/codeb-backup-metrics",
    "wal_metrics": f"{SBIN}/codeb-wal-metrics",
    "drill": f"{SBIN}/codeb-restore-drill",
    "pitr": f"{SBIN}/codeb-pitr",
}
# The static program installed at each SCRIPTS path, and its configuration file.
HERE = Path(__file__).resolve().parent
SOURCES = {
    "job": HERE / "pgbackrest-job.sh",
    "metrics": HERE / "backup_metrics.py",
    "wal_metrics": HERE / "wal_metrics.py",
    "drill": HERE / "restore-drill.sh",
    "pitr": HERE / "pitr.sh",
}
CONF_DIR = "/etc/codeb/pgbackrest"
CONFIGS = {
    "job": f"{CONF_DIR}/job.conf",
    "metrics": f"{CONF_DIR}/backup-metrics.json",
    "wal_metrics": f"{CONF_DIR}/wal-metrics.json",
    "drill": f"{CONF_DIR}/restore-drill.conf",
    "pitr": f"{CONF_DIR}/pitr.conf",
}
PG_PROGRAMS = ("wal_metrics", "pitr")  # the database host's; the rest are the repository host's
# Serialises the backup jobs and the restore drill.
LOCK = "/run/lock/codeb-pgbackrest.lock"
UNIT_NAMES = {"full": "codeb-pgbackrest-full", "incr": "codeb-pgbackrest-incr",
              "verify": "codeb-pgbackrest-verify", "drill": "codeb-restore-drill"}


def _fqdn(name: str, data) -> str:
    return shared.tls_names(name, data.platform_domain)[0]


def command(key: str, *args: str) -> str:
    """The command line of program `key` with its configuration file."""
    return " ".join([SCRIPTS[key], "--config", CONFIGS[key], *args])


def _shell_conf(key: str, values: dict) -> str:
    return shell_config(values, f"Managed by the platform deploy (services/pgbackrest): configuration of\n"
                                f"{SCRIPTS[key]} (sourced by bash); local edits are overwritten.")


def _json_conf(key: str, values: dict) -> str:
    return json.dumps({"_comment": f"Managed by the platform deploy (services/pgbackrest): configuration of "
                                   f"{SCRIPTS[key]}; local edits are overwritten.", **values}, indent=2) + "\n"


def databases(data) -> list[str]:
    """Databases a restore must bring back: every project database and PowerDNS's."""
    return sorted([shared.db_name(i) for i in shared.with_need(data.projects.instances, "database")]
                  + [shared.PDNS_DB])


def pg_rendered(data, name: str, private_ip: str, hosts, addrs) -> dict[str, str]:
    """The database host's files: pgbackrest.conf, the archiving drop-in, the programs'
    configuration, units."""
    p = pg_paths(data.postgresql_version)
    sections = model.pgbackrest_conf(
        "pg", stanza=data.pgbackrest_stanza, private_ip=private_ip, tls_port=data.pgbackrest_tls_port,
        peer_names=[_fqdn(n, data) for n in host_names("backup", hosts, addrs)], pg_path=p["datadir"],
        pg_port=data.postgresql_port, settings=data.pgbackrest)
    return {
        PGBACKREST_CONF: render("pgbackrest.conf.j2", sections=sections),
        f"{p['confdir']}/conf.d/20-archiving.conf": render(
            "archiving.conf.j2", archive_command=model.pgbackrest_archive_command(data.pgbackrest_stanza),
            archive_timeout=int(data.postgresql_archive_timeout)),
        CONFIGS["wal_metrics"]: _json_conf("wal_metrics", {
            "textfile_dir": data.node_exporter_textfile_dir,
            "archive_status": f"{p['datadir']}/pg_wal/archive_status"}),
        CONFIGS["pitr"]: _shell_conf("pitr", {
            "SERVICE": p["service"], "DEPENDENTS": PG_DEPENDENTS, "EXPECTED": databases(data),
            "STANZA": data.pgbackrest_stanza}),
        f"{UNITS}/{p['service']}.service.d/20-archive-timeout.conf": render(
            "archive-timeout.conf.j2", port=data.postgresql_port),
        f"{UNITS}/codeb-wal-metrics.service": unit(
            "WAL archiving metrics for node-exporter (roles/backup)", command("wal_metrics", "--loop", "15"),
            type="simple", unit_lines=[f"After={p['service']}.service"],
            service_lines=["Restart=always", "RestartSec=10"], install=True),
    }


def repo_rendered(data, name: str, private_ip: str, hosts, addrs) -> dict[str, str]:
    """The repository host's files (pgBackRest, drill, the programs' configuration, timers, units)."""
    stanza = data.pgbackrest_stanza
    pgv = data.postgresql_version
    sections = model.pgbackrest_conf(
        "repo", stanza=stanza, private_ip=private_ip, tls_port=data.pgbackrest_tls_port,
        peer_names=[_fqdn(n, data) for n in host_names("storage", hosts, addrs)],
        pg_path=pg_paths(pgv)["datadir"], pg_port=data.postgresql_port, settings=data.pgbackrest)
    sched = {k: list(v) for k, v in data.backup_schedule.items()}
    textfile = data.node_exporter_textfile_dir
    out = {
        PGBACKREST_CONF: render("pgbackrest.conf.j2", sections=sections),
        DRILL_CONF: render("drill.conf.j2", repo_path=data.pgbackrest["repo_path"], stanza=stanza,
                           scratch=DRILL_SCRATCH, port=data.restore_drill_port,
                           process_max=data.pgbackrest.get("process_max", 2)),
        CONFIGS["job"]: _shell_conf("job", {
            "STANZA": stanza, "LOCK": LOCK, "TEXTFILE_DIR": textfile, "PROM_WRITE": PROM_WRITE,
            "METRICS": SCRIPTS["metrics"], "METRICS_CONFIG": CONFIGS["metrics"]}),
        CONFIGS["metrics"]: _json_conf("metrics", {
            "textfile_dir": textfile, "repo_path": data.pgbackrest["repo_path"], "stanza": stanza}),
        CONFIGS["drill"]: _shell_conf("drill", {
            "SCRATCH": DRILL_SCRATCH, "BIN": pg_paths(pgv)["bindir"], "PORT": data.restore_drill_port,
            "MAX_CONNECTIONS": data.postgresql_max_connections, "EXPECTED": databases(data),
            "DRILL_CONF": DRILL_CONF, "STANZA": stanza, "LOCK": LOCK, "TEXTFILE_DIR": textfile,
            "PROM_WRITE": PROM_WRITE}),
        f"{UNITS}/codeb-backup-metrics.service": unit(
            "Backup freshness metrics for node-exporter (roles/backup)", command("metrics", "--loop", "60"),
            type="simple", service_lines=["Restart=always", "RestartSec=30"], install=True),
    }
    jobs = {
        "full": ("Full PostgreSQL backup (pgBackRest, then expire)", command("job", "full")),
        "incr": ("Incremental PostgreSQL backup (pgBackRest, then expire)", command("job", "incr")),
        "verify": ("Verify the pgBackRest repository", command("job", "verify")),
        "drill": ("Restore drill: latest backup into a scratch cluster", command("drill")),
    }
    for key, (desc, cmd) in jobs.items():
        svc = UNIT_NAMES[key]
        out[f"{UNITS}/{svc}.service"] = unit(desc, cmd, service_lines=["Nice=10", "IOSchedulingClass=idle"]
                                             if key != "drill" else ["Nice=10"])
        out[f"{UNITS}/{svc}.timer"] = timer(desc, sched[key], f"{svc}.service")
    return out


def _install_programs(keys, rendered: dict[str, str]):
    """The static programs `keys` (755) and their configuration files (644: no secrets)."""
    files.directory(name=CONF_DIR, path=CONF_DIR, user="root", group="root", mode="755")
    for key in keys:
        put(CONFIGS[key], rendered[CONFIGS[key]], "644")
        put(SCRIPTS[key], SOURCES[key].read_text(), "755")


@deploy("pgBackRest: WAL archiving and TLS server (database host)")
def archiving():
    data = host.data
    hosts, addrs = platform_hosts(), group_addrs()
    r = pg_rendered(data, host.name, data.private_ip, hosts, addrs)
    p = pg_paths(data.postgresql_version)

    apt.packages(name="pgBackRest", packages=["pgbackrest"], update=True, cache_time=3600, no_recommends=True)
    files.directory(name="/etc/pgbackrest", path="/etc/pgbackrest", user="root", group="postgres", mode="750")
    host_tls(data, TLS_DIR, "postgres", "postgres")
    put(PGBACKREST_CONF, r[PGBACKREST_CONF], "640", group="postgres")
    files.directory(name="/var/spool/pgbackrest", path="/var/spool/pgbackrest", user="postgres", group="postgres",
                    mode="750")
    files.directory(name=STATE, path=STATE, user="root", group="root", mode="700")

    # The TLS server the repository host connects to (Debian's unit, runs as postgres).
    restart_on_change("pgBackRest TLS server: restart on new configuration or certificates", [PGBACKREST_CONF, f"{TLS_DIR}/host.crt", f"{TLS_DIR}/host.key", f"{TLS_DIR}/ca.crt"],
                      "systemctl enable pgbackrest.service && systemctl restart pgbackrest.service",
                      marker=f"{STATE}/server.applied")
    systemd.service(name="pgBackRest TLS server running", service="pgbackrest.service", running=True, enabled=True)

    # Archiving drop-in, then the storage role's checked reload (restarts for archive_mode).
    dropin = f"{p['confdir']}/conf.d/20-archiving.conf"
    put(dropin, r[dropin], "644", user="postgres", group="postgres")
    converge(
        name="Check and apply the archiving settings (restart once for archive_mode)",
        state_command=("runuser -u postgres -- psql -XAtq -d postgres -c \"SELECT "
                       f"(pg_stat_file('{dropin}')).modification >= pg_conf_load_time() "
                       "OR EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart) "
                       "OR current_setting('archive_mode') <> 'on'\""),
        expected=["f"],
        apply_command=PG_RELOAD,
    )

    _install_programs(PG_PROGRAMS, r)
    install_units({k: v for k, v in r.items() if k.startswith(UNITS)}, "pgBackRest")
    restart_on_change("WAL metrics service: restart on a new program or configuration", [SCRIPTS["wal_metrics"], CONFIGS["wal_metrics"]],
                      "systemctl enable codeb-wal-metrics.service && systemctl restart codeb-wal-metrics.service",
                      marker=f"{STATE}/wal-metrics.applied")
    systemd.service(name="WAL metrics running", service="codeb-wal-metrics.service", running=True, enabled=True)


@deploy("pgBackRest: repository, schedules, restore drill (backup host)")
def repository():
    data = host.data
    hosts, addrs = platform_hosts(), group_addrs()
    r = repo_rendered(data, host.name, data.private_ip, hosts, addrs)
    stanza = data.pgbackrest_stanza
    pgv = data.postgresql_version

    # Server binaries for the restore drill, without a `main` cluster of their own.
    files.directory(name="/etc/postgresql-common/createcluster.d", path="/etc/postgresql-common/createcluster.d",
                    user="root", group="root", mode="755")
    put("/etc/postgresql-common/createcluster.d/10-no-main.conf",
        "# Managed by the platform deploy (services/pgbackrest): the backup host runs no cluster of its own.\n"
        "create_main_cluster = false\n", "644")
    apt.packages(name="pgBackRest, PostgreSQL server binaries (drill)",
                 packages=["pgbackrest", f"postgresql-{pgv}", "bc"],
                 update=True, cache_time=3600, no_recommends=True)
    files.directory(name="/etc/pgbackrest", path="/etc/pgbackrest", user="root", group="postgres", mode="750")
    host_tls(data, TLS_DIR, "postgres", "postgres")
    put(PGBACKREST_CONF, r[PGBACKREST_CONF], "640", group="postgres")
    put(DRILL_CONF, r[DRILL_CONF], "640", group="postgres")
    files.directory(name=data.pgbackrest["repo_path"], path=data.pgbackrest["repo_path"], user="postgres",
                    group="postgres", mode="750")
    files.directory(name=DRILL_SCRATCH, path=DRILL_SCRATCH, user="postgres", group="postgres", mode="700")
    files.directory(name=STATE, path=STATE, user="root", group="root", mode="700")

    restart_on_change("pgBackRest TLS server: restart on new configuration or certificates", [PGBACKREST_CONF, f"{TLS_DIR}/host.crt", f"{TLS_DIR}/host.key", f"{TLS_DIR}/ca.crt"],
                      "systemctl enable pgbackrest.service && systemctl restart pgbackrest.service",
                      marker=f"{STATE}/server.applied")
    systemd.service(name="pgBackRest TLS server running", service="pgbackrest.service", running=True, enabled=True)

    install_prom_write()
    _install_programs([k for k in SCRIPTS if k not in PG_PROGRAMS], r)
    install_units({k: v for k, v in r.items() if k.startswith(UNITS)}, "pgBackRest")

    pg = f"runuser -u postgres -- pgbackrest --stanza={stanza}"
    converge(
        name=f"pgBackRest stanza {stanza} (stanza-create once)",
        state_command=f"test -s {data.pgbackrest['repo_path']}/backup/{stanza}/backup.info || echo missing",
        apply_command=f"{pg} --log-level-console=warn stanza-create",
    )
    converge(
        name="pgBackRest check (archiving and backups work end to end)",
        state_command=f"{pg} --log-level-console=off check >/dev/null 2>&1 || echo failed",
        apply_command=f"{pg} --log-level-console=warn check",
    )
    converge(
        name="First full backup (only while the repository has none)",
        state_command=(f"{pg} --output=json info | python3 -c "
                       "\"import json,sys; print('' if json.load(sys.stdin)[0]['backup'] else 'none')\""),
        apply_command=command("job", "full"),
    )
    for name in UNIT_NAMES.values():
        systemd.service(name=f"{name}.timer", service=f"{name}.timer", running=True, enabled=True)
    restart_on_change("Backup metrics service: restart on a new program or configuration", [SCRIPTS["metrics"], CONFIGS["metrics"]],
                      "systemctl enable codeb-backup-metrics.service && systemctl restart codeb-backup-metrics.service",
                      marker=f"{STATE}/metrics.applied")
    systemd.service(name="Backup metrics running", service="codeb-backup-metrics.service", running=True,
                    enabled=True)

