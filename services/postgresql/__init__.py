"""PostgreSQL 17 (Debian): the `main` cluster, pg_hba from the registry, one login role
and database per project environment (and PowerDNS's), passwords as SCRAM verifiers."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from codeb import pki, shared
from codeb.files import put, put_secret
from codeb.inventory import group_addrs
from codeb.ops import converge
from codeb.render import templates

from . import model

render = templates(__file__)

PROVISION_SQL = "/var/lib/codeb/postgresql/provision.sql"
STATE_SQL = "/usr/local/lib/codeb/pg-state.sql"
RELOAD_PROGRAM = "/usr/local/sbin/codeb-pg-reload"
RELOAD_SOURCE = Path(__file__).with_name("pg-reload.sh")
RELOAD_CONFIG = "/etc/codeb/pg-reload.conf"
# The checked reload as a command (also run by services/pgbackrest after its drop-in).
RELOAD = f"{RELOAD_PROGRAM} {RELOAD_CONFIG}"


def paths(version: int) -> dict[str, str]:
    etc = f"/etc/postgresql/{version}/main"
    return {"conf": f"{etc}/conf.d/10-platform.conf", "hba": f"{etc}/pg_hba.conf", "confdir": etc,
            "cert": f"{etc}/server.crt", "key": f"{etc}/server.key",
            "service": f"postgresql@{version}-main", "bindir": f"/usr/lib/postgresql/{version}/bin",
            "datadir": f"/var/lib/postgresql/{version}/main"}


def rendered(data, private_ip: str, addrs) -> dict:
    """Everything the role writes, from data alone (unit tests render it)."""
    instances = data.projects.instances
    logins = model.pg_logins(instances, data.secrets, data.postgresql_connection_limit)
    p = paths(data.postgresql_version)
    return {
        "conf": render("postgresql.conf.j2", listen=["localhost", private_ip], port=data.postgresql_port,
                       max_connections=data.postgresql_max_connections, ssl_cert=p["cert"], ssl_key=p["key"]),
        "hba": render("pg_hba.conf.j2",
                      rules=model.pg_hba_rules(instances, addrs, data.get("postgresql_hba_extra") or [])),
        "provision": render("provision.sql.j2", logins=logins, managed=model.PG_MANAGED_COMMENT),
        "state": render("pg-state.sql.j2", logins=logins, managed=model.PG_MANAGED_COMMENT),
        "reload_config": render("pg-reload.conf.j2", service=p["service"], bindir=p["bindir"],
                                datadir=p["datadir"], confdir=p["confdir"]),
        "expected": expected_state(logins),
    }


def expected_state(logins: list[dict]) -> list[str]:
    """The lines pg-state.sql prints once provision.sql has been applied."""
    out = []
    for ln in logins:
        pw = hashlib.sha256(ln["verifier"].encode()).hexdigest()
        out.append(f"role {ln['role']} login=true limit={ln['connection_limit']} super=false pw={pw}")
        out.append(f"database {ln['database']} owner={ln['role']} acl={{{ln['role']}=CTc/{ln['role']}}}")
    return out


def psql_file(path: str, db: str = "postgres") -> str:
    # root opens the file (0600) and feeds it to psql running as postgres.
    return f"runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d {db} < {path}"


@deploy("PostgreSQL")
def postgresql():
    data = host.data
    version = data.postgresql_version
    p = paths(version)
    r = rendered(data, data.private_ip, group_addrs())

    apt.packages(name=f"PostgreSQL {version}", packages=[f"postgresql-{version}", f"postgresql-client-{version}",
                                                         "ssl-cert"],
                 update=True, cache_time=3600, no_recommends=True)
    files.directory(name="codeb state directory", path="/var/lib/codeb/postgresql", user="root", group="root",
                    mode="700")
    files.directory(name="codeb helpers directory", path="/usr/local/lib/codeb", user="root", group="root",
                    mode="755")
    files.directory(name="/etc/codeb", path="/etc/codeb", user="root", group="root", mode="755")
    put(RELOAD_PROGRAM, RELOAD_SOURCE.read_text(), "755")
    put(RELOAD_CONFIG, r["reload_config"], "644")
    # The server certificate for this host's name (the name app env files connect to).
    issued = pki.issue(data.environment, data.get("backup_ca"), f"postgresql-{host.name}",
                       [shared.fqdn(host.name, data.platform_domain)], data.secrets)
    put(p["cert"], issued.cert, "644", user="postgres", group="postgres")
    put_secret(p["key"], issued.key, "600", user="postgres", group="postgres")
    put(p["conf"], r["conf"], "644", user="postgres", group="postgres")
    put(p["hba"], r["hba"], "640", user="postgres", group="postgres")
    systemd.service(name="PostgreSQL running", service=p["service"], running=True, enabled=True)
    # Reload while a file is newer than the server's last configuration load (so a reload
    # that failed validation is retried on the next apply), or a setting awaits a restart.
    # The script validates first (postgres -C, pg_file_settings, pg_hba_file_rules).
    converge(
        name="Check and reload PostgreSQL configuration",
        state_command=("runuser -u postgres -- psql -XAtq -d postgres -c \"SELECT "
                       f"(pg_stat_file('{p['conf']}')).modification >= pg_conf_load_time() "
                       f"OR (pg_stat_file('{p['hba']}')).modification >= pg_conf_load_time() "
                       f"OR (pg_stat_file('{p['cert']}')).modification >= pg_conf_load_time() "
                       "OR EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart)\""),
        expected=["f"],
        apply_command=RELOAD,
    )

    put_secret(PROVISION_SQL, r["provision"], "600")
    put(STATE_SQL, r["state"], "644")
    converge(
        name="Login roles and databases from the registry",
        state_command=f"runuser -u postgres -- psql -XAtq -d postgres -f {STATE_SQL}",
        expected=r["expected"],
        apply_command=psql_file(PROVISION_SQL),
    )
