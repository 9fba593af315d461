"""File backups with restic: every host backs up its service files weekly (Sunday) to
rest-server on the backup host, over TLS with the platform CA, append-only, one repository
and one login per host; the backup host prunes by retention and restores on request.

The programs that run on the hosts are static files of this folder (file-backup.sh,
file-prune.sh, file-restore.sh, restic-init.sh), installed unchanged under /usr/local/sbin;
each sources a KEY=value configuration file rendered here (CONFIGS), passed as
`--config FILE` by the units and the deploy and defaulting to the same path when a person
runs the program."""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from codeb import pki, shared
from codeb.files import put, put_secret
from codeb.host import PROM_WRITE, install_prom_write, shell_config
from codeb.inventory import group_addrs, platform_hosts
from codeb.ops import SBIN, UNITS, converge, host_names, host_tls, install_units, restart_on_change, timer, unit
from codeb.render import templates

from . import model

render = templates(__file__)

STATE = "/var/lib/codeb/backup"
CLIENT_DIR = "/etc/codeb/backup"
REPO_PASSWORDS = "/etc/codeb/backup/repositories"
RESTORE_DIR = "/var/tmp/codeb-restore"
REST_USER = "restic-rest-server"
REST_DIR = "/etc/restic-rest-server"
SCRIPTS = {
    "file_backup": f"{SBIN}/codeb-file-backup",
    "file_restore": f"{SBIN}/codeb-file-restore",
    "file_prune": f"{SBIN}/codeb-file-prune",
    "restic_init": f"{SBIN}/codeb-restic-init",
}
# The static program installed at each SCRIPTS path, and its configuration file: the
# client's next to its restic settings, the backup host's in SERVER_CONF_DIR.
HERE = Path(__file__).resolve().parent
SOURCES = {
    "file_backup": HERE / "file-backup.sh",
    "file_restore": HERE / "file-restore.sh",
    "file_prune": HERE / "file-prune.sh",
    "restic_init": HERE / "restic-init.sh",
}
SERVER_CONF_DIR = "/etc/codeb/restic"
CONFIGS = {
    "file_backup": f"{CLIENT_DIR}/file-backup.conf",
    "file_restore": f"{SERVER_CONF_DIR}/file-restore.conf",
    "file_prune": f"{SERVER_CONF_DIR}/file-prune.conf",
    "restic_init": f"{SERVER_CONF_DIR}/restic-init.conf",
}
SERVER_PROGRAMS = ("file_restore", "file_prune", "restic_init")
UNIT_NAMES = {"files": "codeb-file-backup", "files_prune": "codeb-file-prune"}


def _fqdn(name: str, data) -> str:
    return shared.tls_names(name, data.platform_domain)[0]


def command(key: str, *args: str) -> str:
    """The command line of program `key` with its configuration file."""
    return " ".join([SCRIPTS[key], "--config", CONFIGS[key], *args])


def _shell_conf(key: str, values: dict) -> str:
    return shell_config(values, f"Managed by the platform deploy (services/restic): configuration of\n"
                                f"{SCRIPTS[key]} (sourced by bash); local edits are overwritten.")


def retention_args(retention) -> list[str]:
    """restic forget's options for the retention policy, e.g. {"keep_weekly": 8} ->
    ["--keep-weekly", "8"] (sorted by option)."""
    return [arg for k, v in sorted(retention.items()) for arg in (f"--{k.replace('_', '-')}", str(v))]


def client_rendered(data, name: str, groups, hosts, addrs) -> tuple[dict[str, str], dict[str, str]]:
    """Every host's weekly file backup: (files shown by --diff, files holding secrets)."""
    local = "backup" in groups
    backup_hosts = host_names("backup", hosts, addrs)
    repository = model.restic_repository(name, _fqdn(shared.pgbackrest_repo_host(backup_hosts), data),
                                          data.file_backup_port, local, data.file_backup_repo_path)
    svc = UNIT_NAMES["files"]
    public = {
        CONFIGS["file_backup"]: _shell_conf("file_backup", {
            "HOST": name, "ENV_FILE": f"{CLIENT_DIR}/restic.env",
            "PATHS": model.file_backup_paths(groups, data.file_backup_paths),
            "TEXTFILE_DIR": data.node_exporter_textfile_dir, "PROM_WRITE": PROM_WRITE}),
        f"{UNITS}/{svc}.service": unit("Weekly file backup (restic)", command("file_backup"),
                                       service_lines=["Nice=10", "IOSchedulingClass=idle", *[
                                           f"ExecStartPre={cmd}"
                                           for cmd in model.file_backup_paths(groups, data.file_backup_pre)]]),
        f"{UNITS}/{svc}.timer": timer("Weekly file backup (restic)", list(data.backup_schedule["files"]), f"{svc}.service",
                                      jitter="15min"),
    }
    secret = {
        f"{CLIENT_DIR}/restic.password": model.restic_repo_password(data.secrets, name) + "\n",
        f"{CLIENT_DIR}/restic.env": render(
            "restic.env.j2", repository=repository, password_file=f"{CLIENT_DIR}/restic.password",
            username=None if local else name,
            server_password=None if local else model.restic_server_password(data.secrets, name),
            ca_file=f"{CLIENT_DIR}/ca.crt"),
    }
    return public, secret


def server_rendered(data, name: str, private_ip: str, hosts) -> dict[str, str]:
    """The backup host's files for the file backups: rest-server, and the configuration of
    init, prune and restore, units."""
    host_names_ = [n for n, _ in hosts]
    svc = UNIT_NAMES["files_prune"]
    desc = "File backup retention (restic forget --prune)"
    return {
        CONFIGS["file_restore"]: _shell_conf("file_restore", {
            "RESTORE_DIR": RESTORE_DIR, "REPO_ROOT": data.file_backup_repo_path, "PASSWORD_DIR": REPO_PASSWORDS}),
        CONFIGS["file_prune"]: _shell_conf("file_prune", {
            "HOSTS": host_names_, "REPO_ROOT": data.file_backup_repo_path, "PASSWORD_DIR": REPO_PASSWORDS,
            "RETENTION": retention_args(data.file_backup_retention)}),
        CONFIGS["restic_init"]: _shell_conf("restic_init", {
            "HOSTS": host_names_, "SELF_HOST": name, "REPO_ROOT": data.file_backup_repo_path,
            "PASSWORD_DIR": REPO_PASSWORDS, "SERVER_USER": REST_USER}),
        "/etc/default/restic-rest-server": render(
            "rest-server.default.j2", listen=f"{private_ip}:{data.file_backup_port}",
            repo_root=data.file_backup_repo_path, htpasswd=f"{REST_DIR}/users.htpasswd",
            cert=f"{REST_DIR}/tls/host.crt", key=f"{REST_DIR}/tls/host.key"),
        f"{UNITS}/{svc}.service": unit(desc, command("file_prune"), service_lines=["Nice=10", "IOSchedulingClass=idle"]),
        f"{UNITS}/{svc}.timer": timer(desc, list(data.backup_schedule["files_prune"]), f"{svc}.service"),
    }


@deploy("File backups: rest-server, repositories, retention (backup host)")
def server():
    data = host.data
    hosts = platform_hosts()
    r = server_rendered(data, host.name, data.private_ip, hosts)
    apt.packages(name="restic, rest-server", packages=["restic", "restic-rest-server"], update=True, cache_time=3600,
                 no_recommends=True)
    files.directory(name=STATE, path=STATE, user="root", group="root", mode="700")
    files.directory(name=SERVER_CONF_DIR, path=SERVER_CONF_DIR, user="root", group="root", mode="755")
    for key in SERVER_PROGRAMS:
        put(CONFIGS[key], r[CONFIGS[key]], "644")
        put(SCRIPTS[key], SOURCES[key].read_text(), "755")
    install_units({k: v for k, v in r.items() if k.startswith(UNITS)}, "file backup")
    svc = UNIT_NAMES["files_prune"]
    systemd.service(name=f"{svc}.timer", service=f"{svc}.timer", running=True, enabled=True)

    # rest-server: the file backups' append-only endpoint.
    files.directory(name=data.file_backup_repo_path, path=data.file_backup_repo_path, user=REST_USER,
                    group=REST_USER, mode="750")
    files.directory(name=REPO_PASSWORDS, path=REPO_PASSWORDS, user="root", group="root", mode="700")
    for name, _ in hosts:
        put_secret(f"{REPO_PASSWORDS}/{name}.password", model.restic_repo_password(data.secrets, name) + "\n")
    host_tls(data, f"{REST_DIR}/tls", "root", REST_USER)
    put_secret(f"{REST_DIR}/users.htpasswd",
               model.restic_htpasswd(data.secrets, [n for n, _ in hosts if n != host.name]), "640",
               group=REST_USER)
    put("/etc/default/restic-rest-server", r["/etc/default/restic-rest-server"], "644")
    converge(
        name="File backup repositories (restic init, once per host)",
        state_command=(f"for h in {' '.join(n for n, _ in hosts)}; do "
                       f"test -f {data.file_backup_repo_path}/$h/config || echo missing $h; done"),
        apply_command=command("restic_init"),
    )
    restart_on_change("rest-server: restart on new settings, logins or certificates",
                      ["/etc/default/restic-rest-server", f"{REST_DIR}/users.htpasswd", f"{REST_DIR}/tls/host.crt",
                       f"{REST_DIR}/tls/host.key"],
                      "systemctl enable restic-rest-server.service && systemctl restart restic-rest-server.service",
                      marker=f"{STATE}/rest-server.applied")
    systemd.service(name="rest-server running", service="restic-rest-server.service", running=True, enabled=True)


@deploy("File backups: weekly backup (every host)")
def client():
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
    install_prom_write()
    put(CONFIGS["file_backup"], public[CONFIGS["file_backup"]], "644")
    put(SCRIPTS["file_backup"], SOURCES["file_backup"].read_text(), "755")
    install_units({k: v for k, v in public.items() if k.startswith(UNITS)}, "file backup")
    svc = UNIT_NAMES["files"]
    systemd.service(name=f"{svc}.timer", service=f"{svc}.timer", running=True, enabled=True)
