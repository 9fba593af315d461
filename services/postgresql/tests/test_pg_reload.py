"""codeb-pg-reload (services/postgresql/pg-reload.sh), the checked reload of the cluster:
run with its config file against stand-ins of runuser, postgres, psql, systemctl and
pg_isready in a temporary directory, which record what the script asks of them. Against a
real cluster it runs in the topology tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from services import postgresql

SCRIPT = postgresql.RELOAD_SOURCE

FAKES = {
    # runuser -u USER -- COMMAND...: run COMMAND (as this user), noting the user.
    "runuser": '[ "$1" = -u ] && [ "$3" = -- ] || exit 97\necho "as $2: $4" >> "$LOG"\nshift 3\nexec "$@"\n',
    "psql": (
        'for q; do :; done\n'
        'case $q in\n'
        '  *pg_file_settings*) printf "%s" "${FAKE_ERRORS:-}" ;;\n'
        '  *pg_reload_conf*) echo "pg_reload_conf" >> "$LOG"; echo t ;;\n'
        '  *"SELECT count(*) FROM pg_settings WHERE pending_restart"*) echo "${FAKE_PENDING:-0}" ;;\n'
        '  *string_agg*) echo "${FAKE_PENDING_NAMES:-}" ;;\n'
        '  *) echo "unexpected query: $q" >&2; exit 98 ;;\n'
        'esac\n'
    ),
    "systemctl": 'echo "systemctl $*" >> "$LOG"\n',
    "pg_isready": 'echo "pg_isready $*" >> "$LOG"\n',
    "sleep": ":\n",
}
POSTGRES = 'echo "postgres $*" >> "$LOG"\n[ -z "${FAKE_POSTGRES_ERROR:-}" ] || { echo "$FAKE_POSTGRES_ERROR" >&2; exit 1; }\n'


def _tool(path: Path, body: str):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def cluster(tmp_path):
    """A config file naming a cluster whose tools are stand-ins; `run(**env)` runs the script."""
    bin_dir, pg_bin = tmp_path / "bin", tmp_path / "lib" / "17" / "bin"
    bin_dir.mkdir()
    pg_bin.mkdir(parents=True)
    for name, body in FAKES.items():
        _tool(bin_dir / name, body)
    _tool(pg_bin / "postgres", POSTGRES)
    config = tmp_path / "pg-reload.conf"
    config.write_text(f"service=postgresql@17-main\nbindir={pg_bin}\ndatadir={tmp_path}/data\n"
                      f"confdir={tmp_path}/etc\n")
    log = tmp_path / "log"

    def run(*args, **env):
        args = args or (str(config),)
        result = subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, cwd=tmp_path,
                                timeout=30, env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log),
                                                 **env})
        result.log = log.read_text().splitlines() if log.exists() else []
        return result

    run.tmp, run.pg_bin, run.config = tmp_path, pg_bin, config
    return run


def test_script_parses_as_posix_sh_and_bash():
    subprocess.run(["sh", "-n", str(SCRIPT)], check=True)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_valid_configuration_is_checked_then_reloaded_without_restart(cluster):
    r = cluster()
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    tmp = cluster.tmp
    assert r.log == [
        f"as postgres: {cluster.pg_bin}/postgres",
        f"postgres -D {tmp}/data -c config_file={tmp}/etc/postgresql.conf -C listen_addresses",
        "as postgres: psql", "as postgres: psql", "pg_reload_conf", "as postgres: psql",
        "as postgres: pg_isready", "pg_isready -q -t 30",
    ]


def test_config_named_without_a_directory_is_read_from_the_current_one(cluster):
    assert cluster("pg-reload.conf").returncode == 0


def test_setting_pending_restart_restarts_the_clusters_unit(cluster):
    r = cluster(FAKE_PENDING="1", FAKE_PENDING_NAMES="archive_mode")
    assert r.returncode == 0
    assert r.stdout == "restarting postgresql@17-main: archive_mode\n"
    assert "pg_reload_conf" in r.log
    assert r.log.index("pg_reload_conf") < r.log.index("systemctl restart postgresql@17-main")
    assert r.log[-1] == "pg_isready -q -t 30"


def test_rejected_setting_or_hba_line_is_reported_and_nothing_reloaded(cluster):
    errors = "/etc/postgresql/17/main/pg_hba.conf:7: invalid authentication method \"trust2\""
    r = cluster(FAKE_ERRORS=errors)
    assert r.returncode == 1
    assert r.stderr == f"PostgreSQL configuration rejected, not reloaded:\n{errors}\n"
    assert "pg_reload_conf" not in r.log and not any(line.startswith("systemctl") for line in r.log)


def test_postgresql_conf_that_postgres_refuses_stops_before_any_reload(cluster):
    r = cluster(FAKE_POSTGRES_ERROR='FATAL:  invalid value for parameter "max_connections": "x"')
    assert r.returncode != 0
    assert "max_connections" in r.stderr
    assert not any("psql" in line or line == "pg_reload_conf" for line in r.log)


def test_without_config_argument_it_prints_usage_and_does_nothing(cluster):
    r = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "usage:" in r.stderr


def test_config_lacking_a_key_is_refused_naming_it(cluster):
    cluster.config.write_text("\n".join(line for line in cluster.config.read_text().splitlines()
                                        if not line.startswith("datadir=")) + "\n")
    r = cluster()
    assert r.returncode != 0 and "datadir" in r.stderr
    assert r.log == []
