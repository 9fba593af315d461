"""The backup host (issue 6) and what the other hosts need for it.

- Database hosts (storage): continuous WAL archiving with pgBackRest (archive-push, async)
  through a PostgreSQL drop-in owned here, `pgbackrest server` (TLS) for the repository
  host, WAL freshness metrics, the point-in-time restore script (`make restore`).
- The backup host: the pgBackRest repository (stanza-create, check and a first full
  backup during the apply), systemd timers for full/incremental backups, verify and the
  restore drill, rest-server for file backups, Prometheus with the alert rules.
- Every host: the weekly file backup (restic) and its freshness metric.

Transport between database and repository host: pgBackRest's TLS server in both
directions with certificates from the environment's backup CA (codeb/pki.py); no SSH
account, no shell, a client certificate's CN authorises one stanza (see README).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from codeb import derive, pki
from codeb.render import render
from roles.files import put, put_secret
from roles.storage.ops import apply_when_changed, converge
from roles.storage.postgresql import RELOAD as PG_RELOAD
from roles.storage.postgresql import paths as pg_paths
from roles.topology import group_addrs, platform_hosts

SBIN = "/usr/local/sbin"
LIB = "/usr/local/lib/codeb"
UNITS = "/etc/systemd/system"
STATE = "/var/lib/codeb/backup"
TLS_DIR = derive.PGBACKREST_TLS_DIR
PGBACKREST_CONF = derive.PGBACKREST_CONF
DRILL_CONF = "/etc/pgbackrest/drill.conf"
DRILL_SCRATCH = "/var/lib/codeb/drill"
CLIENT_DIR = "/etc/codeb/backup"
REPO_PASSWORDS = "/etc/codeb/backup/repositories"
RESTORE_DIR = "/var/tmp/codeb-restore"
REST_USER = "restic-rest-server"
REST_DIR = "/etc/restic-rest-server"
PROM_RULES = "/etc/prometheus/rules/codeb.yml"
PROM_CONF = "/etc/prometheus/prometheus.yml"
S3_METRICS_TOKEN = "/etc/prometheus/garage-metrics.token"
# Services on the database host that use PostgreSQL and are stopped around a restore.
PG_DEPENDENTS = ["pdns.service"]

SCRIPTS = {
    "job": f"{SBIN}/codeb-pgbackrest-job",
    "metrics": f"{SBIN}/codeb-backup-metrics",
    "wal_metrics": f"{SBIN}/codeb-wal-metrics",
    "drill": f"{SBIN}/codeb-restore-drill",
    "pitr": f"{SBIN}/codeb-pitr",
    "file_backup": f"{SBIN}/codeb-file-backup",
    "file_restore": f"{SBIN}/codeb-file-restore",
    "file_prune": f"{SBIN}/codeb-file-prune",
    "restic_init": f"{SBIN}/codeb-restic-init",
}


# --- pure rendering (unit tests call these with any inventory) ---------------------------


def _fqdn(name: str, data) -> str:
    return derive.tls_names(name, data.platform_domain)[0]


def _names(group: str, hosts, addrs) -> list[str]:
    wanted = set(addrs.get(group, []))
    return sorted(n for n, a in hosts if a in wanted)


def databases(data) -> list[str]:
    """Databases a restore must bring back: every project database and PowerDNS's."""
    return sorted([derive.db_name(i) for i in derive.with_need(data.projects.instances, "database")]
                  + [derive.PDNS_DB])


def unit(description: str, exec_start: str, **kw) -> str:
    return render("backup/unit.service.j2", description=description, exec_start=exec_start, **kw)


def timer(description: str, calendar: list[str], unit_name: str, jitter: str = "0") -> str:
    return render("backup/unit.timer.j2", description=description, calendar=calendar, unit=unit_name,
                  jitter=jitter)


def pg_rendered(data, name: str, private_ip: str, hosts, addrs) -> dict[str, str]:
    """The database host's files: pgbackrest.conf, the archiving drop-in, scripts, units."""
    p = pg_paths(data.postgresql_version)
    sections = derive.pgbackrest_conf(
        "pg", stanza=data.pgbackrest_stanza, private_ip=private_ip, tls_port=data.pgbackrest_tls_port,
        peer_names=[_fqdn(n, data) for n in _names("backup", hosts, addrs)], pg_path=p["datadir"],
        pg_port=data.postgresql_port, settings=data.pgbackrest)
    return {
        PGBACKREST_CONF: render("backup/pgbackrest.conf.j2", sections=sections),
        f"{p['confdir']}/conf.d/20-archiving.conf": render(
            "backup/archiving.conf.j2", archive_command=derive.pgbackrest_archive_command(data.pgbackrest_stanza),
            archive_timeout=int(data.postgresql_archive_timeout)),
        SCRIPTS["wal_metrics"]: render("backup/wal-metrics.py.j2", textfile_dir=data.node_exporter_textfile_dir,
                                       datadir=p["datadir"]),
        SCRIPTS["pitr"]: render("backup/pitr.sh.j2", service=p["service"], dependents=PG_DEPENDENTS,
                                databases=databases(data), stanza=data.pgbackrest_stanza),
        f"{UNITS}/{p['service']}.service.d/20-archive-timeout.conf": render(
            "backup/archive-timeout.conf.j2", port=data.postgresql_port),
        f"{UNITS}/codeb-wal-metrics.service": unit(
            "WAL archiving metrics for node-exporter (roles/backup)", f"{SCRIPTS['wal_metrics']} --loop 15",
            type="simple", unit_lines=[f"After={p['service']}.service"],
            service_lines=["Restart=always", "RestartSec=10"], install=True),
    }


def schedules(data) -> dict[str, list[str]]:
    return {k: list(v) for k, v in data.backup_schedule.items()}


def repo_rendered(data, name: str, private_ip: str, hosts, addrs) -> dict[str, str]:
    """The repository host's files (pgBackRest, drill, rest-server, jobs, timers)."""
    stanza = data.pgbackrest_stanza
    pgv = data.postgresql_version
    sections = derive.pgbackrest_conf(
        "repo", stanza=stanza, private_ip=private_ip, tls_port=data.pgbackrest_tls_port,
        peer_names=[_fqdn(n, data) for n in _names("storage", hosts, addrs)],
        pg_path=pg_paths(pgv)["datadir"], pg_port=data.postgresql_port, settings=data.pgbackrest)
    host_names = [n for n, _ in hosts]
    sched = schedules(data)
    job = SCRIPTS["job"]
    out = {
        PGBACKREST_CONF: render("backup/pgbackrest.conf.j2", sections=sections),
        DRILL_CONF: render("backup/drill.conf.j2", repo_path=data.pgbackrest["repo_path"], stanza=stanza,
                           scratch=DRILL_SCRATCH, port=data.restore_drill_port,
                           process_max=data.pgbackrest.get("process_max", 2)),
        job: render("backup/pgbackrest-job.sh.j2", stanza=stanza, textfile_dir=data.node_exporter_textfile_dir,
                    metrics=SCRIPTS["metrics"]),
        SCRIPTS["metrics"]: render("backup/backup-metrics.py.j2", textfile_dir=data.node_exporter_textfile_dir,
                                   repo_path=data.pgbackrest["repo_path"], stanza=stanza),
        SCRIPTS["drill"]: render("backup/restore-drill.sh.j2", textfile_dir=data.node_exporter_textfile_dir,
                                 scratch=DRILL_SCRATCH, bindir=pg_paths(pgv)["bindir"], port=data.restore_drill_port,
                                 databases=databases(data), drill_conf=DRILL_CONF, stanza=stanza,
                                 max_connections=data.postgresql_max_connections),
        SCRIPTS["file_restore"]: render("backup/file-restore.sh.j2", restore_dir=RESTORE_DIR,
                                        repo_root=data.file_backup_repo_path, password_dir=REPO_PASSWORDS),
        SCRIPTS["file_prune"]: render("backup/file-prune.sh.j2", hosts=host_names,
                                      repo_root=data.file_backup_repo_path, password_dir=REPO_PASSWORDS,
                                      retention=data.file_backup_retention),
        SCRIPTS["restic_init"]: render("backup/restic-init.sh.j2", hosts=host_names, self_host=name,
                                       repo_root=data.file_backup_repo_path, password_dir=REPO_PASSWORDS,
                                       server_user=REST_USER),
        "/etc/default/restic-rest-server": render(
            "backup/rest-server.default.j2", listen=f"{private_ip}:{data.file_backup_port}",
            repo_root=data.file_backup_repo_path, htpasswd=f"{REST_DIR}/users.htpasswd",
            cert=f"{REST_DIR}/tls/host.crt", key=f"{REST_DIR}/tls/host.key"),
        f"{UNITS}/codeb-backup-metrics.service": unit(
            "Backup freshness metrics for node-exporter (roles/backup)", f"{SCRIPTS['metrics']} --loop 60",
            type="simple", service_lines=["Restart=always", "RestartSec=30"], install=True),
    }
    jobs = {
        "full": ("Full PostgreSQL backup (pgBackRest, then expire)", f"{job} full"),
        "incr": ("Incremental PostgreSQL backup (pgBackRest, then expire)", f"{job} incr"),
        "verify": ("Verify the pgBackRest repository", f"{job} verify"),
        "drill": ("Restore drill: latest backup into a scratch cluster", SCRIPTS["drill"]),
        "files_prune": ("File backup retention (restic forget --prune)", SCRIPTS["file_prune"]),
    }
    for key, (desc, cmd) in jobs.items():
        svc = unit_names(key)
        out[f"{UNITS}/{svc}.service"] = unit(desc, cmd, service_lines=["Nice=10", "IOSchedulingClass=idle"]
                                             if key != "drill" else ["Nice=10"])
        out[f"{UNITS}/{svc}.timer"] = timer(desc, sched[key], f"{svc}.service")
    return out


def unit_names(key: str) -> str:
    return {"full": "codeb-pgbackrest-full", "incr": "codeb-pgbackrest-incr", "verify": "codeb-pgbackrest-verify",
            "drill": "codeb-restore-drill", "files": "codeb-file-backup", "files_prune": "codeb-file-prune"}[key]


def repo_timers() -> list[str]:
    return [unit_names(k) for k in ("full", "incr", "verify", "drill", "files_prune")]


def client_rendered(data, name: str, groups, hosts, addrs) -> tuple[dict[str, str], dict[str, str]]:
    """Every host's weekly file backup: (files shown by --diff, files holding secrets)."""
    local = "backup" in groups
    backup_hosts = _names("backup", hosts, addrs)
    repository = derive.restic_repository(name, _fqdn(derive.pgbackrest_repo_host(backup_hosts), data),
                                          data.file_backup_port, local, data.file_backup_repo_path)
    svc = unit_names("files")
    public = {
        SCRIPTS["file_backup"]: render("backup/file-backup.sh.j2", local=local, host=name,
                                       env_file=f"{CLIENT_DIR}/restic.env", textfile_dir=data.node_exporter_textfile_dir,
                                       paths=derive.file_backup_paths(groups, data.file_backup_paths)),
        f"{UNITS}/{svc}.service": unit("Weekly file backup (restic)", SCRIPTS["file_backup"],
                                       service_lines=["Nice=10", "IOSchedulingClass=idle", *[
                                           f"ExecStartPre={cmd}"
                                           for cmd in derive.file_backup_paths(groups, data.file_backup_pre)]]),
        f"{UNITS}/{svc}.timer": timer("Weekly file backup (restic)", schedules(data)["files"], f"{svc}.service",
                                      jitter="15min"),
    }
    secret = {
        f"{CLIENT_DIR}/restic.password": derive.restic_repo_password(data.secrets, name) + "\n",
        f"{CLIENT_DIR}/restic.env": render(
            "backup/restic.env.j2", repository=repository, password_file=f"{CLIENT_DIR}/restic.password",
            username=None if local else name,
            server_password=None if local else derive.restic_server_password(data.secrets, name),
            ca_file=f"{CLIENT_DIR}/ca.crt"),
    }
    return public, secret


def prometheus_rendered(data, private_ip: str, hosts, addrs) -> dict[str, str]:
    alerts = data.backup_alerts
    secs = {k: derive.duration_seconds(v) for k, v in alerts.items() if k.endswith("_age")}
    return {
        "/etc/default/prometheus": render("backup/prometheus.default.j2",
                                          listen=f"{private_ip}:{data.prometheus_port}",
                                          retention=data.prometheus_retention),
        PROM_CONF: render(
            "backup/prometheus.yml.j2", scrape_interval="15s", environment=data.environment, rules_file=PROM_RULES,
            self_target=f"{private_ip}:{data.prometheus_port}",
            scrape_configs=derive.prometheus_scrape_configs(
                hosts, addrs, node_port=data.node_exporter_port, centrifugo_port=data.centrifugo_internal_port,
                s3_admin_port=data.garage_admin_port, s3_metrics_token_file=S3_METRICS_TOKEN)),
        PROM_RULES: render("backup/rules.yml.j2", host_down_for=alerts["host_down_for"],
                           **{k: v for k, v in secs.items()},
                           **{f"{k}_text": alerts[k] for k in secs}),
    }


def s3_metrics_token(data) -> str:
    return data.secrets["garage_metrics_token"] + "\n"


# --- operations ----------------------------------------------------------------------------


def _tls(data, dest_dir: str, owner: str, group: str):
    """This host's certificate, key and the backup CA under dest_dir; returns the ops."""
    issued = pki.issue(data.environment, data.get("backup_ca"), host.name,
                       derive.tls_names(host.name, data.platform_domain), data.secrets)
    files.directory(name=dest_dir, path=dest_dir, user="root", group=group, mode="750")
    return [
        put(f"{dest_dir}/ca.crt", issued.ca, "644"),
        put(f"{dest_dir}/host.crt", issued.cert, "644"),
        put_secret(f"{dest_dir}/host.key", issued.key, "640" if owner == "root" else "600", user=owner, group=group),
    ]


def _units(rendered: dict[str, str]):
    """Upload scripts (755) and units (644); daemon-reload when a unit changed."""
    unit_ops = []
    for dest, text in sorted(rendered.items()):
        if dest.startswith(UNITS):
            unit_ops.append(put(dest, text, "644"))
        elif dest.startswith(SBIN):
            put(dest, text, "755")
    systemd.daemon_reload(name="systemd daemon-reload (backup units)",
                          _if=lambda: any(op.did_change() for op in unit_ops))


@deploy("Backup: WAL archiving and pgBackRest server (database host)")
def archiving():
    data = host.data
    hosts, addrs = platform_hosts(), group_addrs()
    r = pg_rendered(data, host.name, data.private_ip, hosts, addrs)
    p = pg_paths(data.postgresql_version)

    apt.packages(name="pgBackRest", packages=["pgbackrest"], update=True, cache_time=3600, no_recommends=True)
    files.directory(name="/etc/pgbackrest", path="/etc/pgbackrest", user="root", group="postgres", mode="750")
    _tls(data, TLS_DIR, "postgres", "postgres")
    put(PGBACKREST_CONF, r[PGBACKREST_CONF], "640", group="postgres")
    files.directory(name="/var/spool/pgbackrest", path="/var/spool/pgbackrest", user="postgres", group="postgres",
                    mode="750")
    files.directory(name=STATE, path=STATE, user="root", group="root", mode="700")

    # The TLS server the repository host connects to (Debian's unit, runs as postgres).
    apply_when_changed("pgBackRest TLS server: restart on new configuration or certificates",
                       [PGBACKREST_CONF, f"{TLS_DIR}/host.crt", f"{TLS_DIR}/host.key", f"{TLS_DIR}/ca.crt"],
                       f"{STATE}/server.applied", "systemctl enable pgbackrest.service && systemctl restart pgbackrest.service")
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

    _units({k: v for k, v in r.items() if k.startswith((UNITS, SBIN))})
    apply_when_changed("WAL metrics service: restart on a new script", [SCRIPTS["wal_metrics"]],
                       f"{STATE}/wal-metrics.applied",
                       "systemctl enable codeb-wal-metrics.service && systemctl restart codeb-wal-metrics.service")
    systemd.service(name="WAL metrics running", service="codeb-wal-metrics.service", running=True, enabled=True)


@deploy("Backup: pgBackRest repository, schedules, restore drill (backup host)")
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
        "# Managed by the platform deploy (roles/backup): the backup host runs no cluster of its own.\n"
        "create_main_cluster = false\n", "644")
    apt.packages(name="pgBackRest, PostgreSQL server binaries (drill), restic, rest-server",
                 packages=["pgbackrest", f"postgresql-{pgv}", "restic", "restic-rest-server", "bc"],
                 update=True, cache_time=3600, no_recommends=True)
    files.directory(name="/etc/pgbackrest", path="/etc/pgbackrest", user="root", group="postgres", mode="750")
    _tls(data, TLS_DIR, "postgres", "postgres")
    put(PGBACKREST_CONF, r[PGBACKREST_CONF], "640", group="postgres")
    put(DRILL_CONF, r[DRILL_CONF], "640", group="postgres")
    files.directory(name=data.pgbackrest["repo_path"], path=data.pgbackrest["repo_path"], user="postgres",
                    group="postgres", mode="750")
    files.directory(name=DRILL_SCRATCH, path=DRILL_SCRATCH, user="postgres", group="postgres", mode="700")
    files.directory(name=STATE, path=STATE, user="root", group="root", mode="700")

    apply_when_changed("pgBackRest TLS server: restart on new configuration or certificates",
                       [PGBACKREST_CONF, f"{TLS_DIR}/host.crt", f"{TLS_DIR}/host.key", f"{TLS_DIR}/ca.crt"],
                       f"{STATE}/server.applied", "systemctl enable pgbackrest.service && systemctl restart pgbackrest.service")
    systemd.service(name="pgBackRest TLS server running", service="pgbackrest.service", running=True, enabled=True)

    _units({k: v for k, v in r.items() if k.startswith((UNITS, SBIN))})

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
        apply_command=f"{SCRIPTS['job']} full",
    )
    for name in repo_timers():
        systemd.service(name=f"{name}.timer", service=f"{name}.timer", running=True, enabled=True)
    apply_when_changed("Backup metrics service: restart on a new script", [SCRIPTS["metrics"]],
                       f"{STATE}/metrics.applied",
                       "systemctl enable codeb-backup-metrics.service && systemctl restart codeb-backup-metrics.service")
    systemd.service(name="Backup metrics running", service="codeb-backup-metrics.service", running=True,
                    enabled=True)

    # rest-server: the file backups' append-only endpoint.
    files.directory(name=data.file_backup_repo_path, path=data.file_backup_repo_path, user=REST_USER,
                    group=REST_USER, mode="750")
    files.directory(name=REPO_PASSWORDS, path=REPO_PASSWORDS, user="root", group="root", mode="700")
    for name, _ in hosts:
        put_secret(f"{REPO_PASSWORDS}/{name}.password", derive.restic_repo_password(data.secrets, name) + "\n")
    _tls(data, f"{REST_DIR}/tls", "root", REST_USER)
    put_secret(f"{REST_DIR}/users.htpasswd",
               derive.restic_htpasswd(data.secrets, [n for n, _ in hosts if n != host.name]), "640",
               group=REST_USER)
    put("/etc/default/restic-rest-server", r["/etc/default/restic-rest-server"], "644")
    converge(
        name="File backup repositories (restic init, once per host)",
        state_command=(f"for h in {' '.join(n for n, _ in hosts)}; do "
                       f"test -f {data.file_backup_repo_path}/$h/config || echo missing $h; done"),
        apply_command=SCRIPTS["restic_init"],
    )
    apply_when_changed("rest-server: restart on new settings, logins or certificates",
                       ["/etc/default/restic-rest-server", f"{REST_DIR}/users.htpasswd", f"{REST_DIR}/tls/host.crt",
                        f"{REST_DIR}/tls/host.key"], f"{STATE}/rest-server.applied",
                       "systemctl enable restic-rest-server.service && systemctl restart restic-rest-server.service")
    systemd.service(name="rest-server running", service="restic-rest-server.service", running=True, enabled=True)


@deploy("Backup: Prometheus (backup host)")
def monitoring():
    data = host.data
    r = prometheus_rendered(data, data.private_ip, platform_hosts(), group_addrs())
    apt.packages(name="Prometheus", packages=["prometheus"], update=True, cache_time=3600, no_recommends=True)
    files.directory(name="/etc/prometheus/rules", path="/etc/prometheus/rules", user="root", group="root",
                    mode="755")
    for dest in ("/etc/default/prometheus", PROM_CONF, PROM_RULES):
        put(dest, r[dest], "644")
    put_secret(S3_METRICS_TOKEN, s3_metrics_token(data), "640", group="prometheus")
    # promtool checks the configuration and the rule files it names before Prometheus sees them.
    apply_when_changed(
        "Check Prometheus config and rules (promtool), restart, wait until ready",
        ["/etc/default/prometheus", PROM_CONF, PROM_RULES, S3_METRICS_TOKEN], f"{STATE}/prometheus.applied",
        f"promtool check config {PROM_CONF} && systemctl enable prometheus && systemctl restart prometheus && "
        f"for i in $(seq 1 60); do curl -fsS -o /dev/null http://{data.private_ip}:{data.prometheus_port}/-/ready "
        f"&& break; sleep 1; done && curl -fsS -o /dev/null http://{data.private_ip}:{data.prometheus_port}/-/ready",
    )
    systemd.service(name="Prometheus running", service="prometheus", running=True, enabled=True)


@deploy("Backup: weekly file backup (every host)")
def file_backups():
    data = host.data
    hosts, addrs = platform_hosts(), group_addrs()
    public, secret = client_rendered(data, host.name, host.groups, hosts, addrs)
    apt.packages(name="restic", packages=["restic"], update=True, cache_time=3600, no_recommends=True)
    files.directory(name=CLIENT_DIR, path=CLIENT_DIR, user="root", group="root", mode="700")
    files.directory(name="/var/cache/codeb-restic", path="/var/cache/codeb-restic", user="root", group="root",
                    mode="700")
    put(f"{CLIENT_DIR}/ca.crt", pki.ca_pem(data.environment, data.get("backup_ca"), data.secrets), "644")
    for dest, text in sorted(secret.items()):
        put_secret(dest, text, "600")
    _units(public)
    svc = unit_names("files")
    systemd.service(name=f"{svc}.timer", service=f"{svc}.timer", running=True, enabled=True)
