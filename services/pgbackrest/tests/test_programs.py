"""The static shell programs of pgBackRest (pgbackrest-job.sh, restore-drill.sh, pitr.sh) run
against a test configuration, with runuser, pgbackrest, psql, pg_ctl and systemctl stubbed
on PATH; and every program of the folder parses (bash -n, compile)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from codeb.host import PROM_WRITE_SOURCE, shell_config
from services.pgbackrest import CONFIGS, SOURCES

# runuser -u USER -- CMD...: logged, then CMD runs (as the test's user).
RUNUSER = 'user=$2; shift 3; echo "as $user: $*" >> "$LOG"; exec "$@"\n'


def stubs(tmp: Path, **bodies: str) -> Path:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in bodies.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    return bin_dir


def run(program: Path, tmp: Path, values: dict, *args: str, env: dict | None = None):
    conf = tmp / "program.conf"
    conf.write_text(shell_config(values, "test configuration"))
    return subprocess.run([str(program), "--config", str(conf), *args], capture_output=True, text=True,
                          env={"PATH": f"{tmp / 'bin'}:{os.environ['PATH']}", "LOG": str(tmp / "log"), **(env or {})})


def log(tmp: Path) -> list[str]:
    return (tmp / "log").read_text().splitlines() if (tmp / "log").exists() else []


def metric(text: str, name: str) -> str:
    return re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1)


# --- every program ------------------------------------------------------------------------


@pytest.mark.parametrize("key", [k for k, p in SOURCES.items() if p.suffix == ".sh"])
def test_shell_programs_parse_with_bash_n(key):
    """bash -n accepts every static shell program (and the textfile library they source)."""
    for path in (SOURCES[key], PROM_WRITE_SOURCE):
        out = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, (path, out.stderr)


@pytest.mark.parametrize("key", [k for k, p in SOURCES.items() if p.suffix == ".py"])
def test_python_programs_compile(key):
    """The static Python programs compile, start with python3's shebang and are executable."""
    text = SOURCES[key].read_text()
    compile(text, str(SOURCES[key]), "exec")
    assert text.startswith("#!/usr/bin/python3\n")


@pytest.mark.parametrize("key", list(SOURCES))
def test_programs_are_executable_and_default_to_the_installed_config(key):
    """Every program is executable here (tests run them) and, run without --config (by a
    person, tools/restore.py, the topology tests), reads the file the deploy installs."""
    assert os.access(SOURCES[key], os.X_OK)
    text = SOURCES[key].read_text()
    default = re.search(r'^(?:config|DEFAULT_CONFIG) ?= ?"?([^"\n]+)"?$', text, re.M).group(1)
    assert default == CONFIGS[key]


def test_config_values_are_quoted_so_sourcing_never_runs_them(tmp_path):
    """shell_config quotes every value: spaces, quotes, $(...) and ; come back verbatim
    when bash sources the file, and a list becomes an array."""
    hostile = "a b'c\"$(touch pwned);`touch pwned2`"
    conf = tmp_path / "c.conf"
    conf.write_text(shell_config({"ONE": hostile, "LIST": ["x y", hostile, ""], "N": 5}, "header\nsecond line"))
    out = subprocess.run(["bash", "-c", f'. {conf}; printf "%s\\n" "$ONE" "${{#LIST[@]}}" "${{LIST[@]}}" "$N"'],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.splitlines() == [hostile, "3", "x y", hostile, "", "5"]
    assert not list(tmp_path.glob("pwned*"))
    assert conf.read_text().startswith("# header\n# second line\n")
    with pytest.raises(ValueError):
        shell_config({"NOT A NAME": "x"}, "")


# --- codeb-pgbackrest-job --------------------------------------------------------------------


def _job(tmp: Path, job: str, rc: int = 0):
    (tmp / "textfile").mkdir(exist_ok=True)
    stubs(tmp, runuser=RUNUSER, pgbackrest=f'echo "pgbackrest $*" >> "$LOG"; exit {rc}\n',
          metrics='echo "metrics $*" >> "$LOG"\n')
    return run(SOURCES["job"], tmp, {
        "STANZA": "main", "LOCK": tmp / "lock", "TEXTFILE_DIR": tmp / "textfile", "PROM_WRITE": PROM_WRITE_SOURCE,
        "METRICS": tmp / "bin" / "metrics", "METRICS_CONFIG": "/etc/codeb/pgbackrest/backup-metrics.json"}, job)


@pytest.mark.parametrize("job, args", [("full", "--type=full backup"), ("incr", "--type=incr backup"),
                                       ("diff", "--type=diff backup"), ("verify", "verify")])
def test_job_runs_pgbackrest_as_postgres_publishes_success_and_refreshes_metrics(tmp_path, job, args):
    """A successful job: pgbackrest --stanza=main <job> as postgres, exit 0, the job's textfile
    (exit code 0, run time, duration) and its success textfile, then the backup metrics
    program with its config, --once."""
    out = _job(tmp_path, job)
    assert out.returncode == 0, out.stderr
    assert log(tmp_path) == [f"as postgres: pgbackrest --stanza=main {args}", f"pgbackrest --stanza=main {args}",
                             "metrics --config /etc/codeb/pgbackrest/backup-metrics.json --once"]
    text = (tmp_path / "textfile" / f"codeb_pgbackrest_job_{job}.prom").read_text()
    assert metric(text, f'codeb_pgbackrest_job_last_exit_code{{job="{job}"}}') == "0"
    end = int(metric(text, f'codeb_pgbackrest_job_last_run_timestamp_seconds{{job="{job}"}}'))
    assert int(metric(text, f'codeb_pgbackrest_job_duration_seconds{{job="{job}"}}')) >= 0
    success = (tmp_path / "textfile" / f"codeb_pgbackrest_job_{job}_success.prom").read_text()
    assert metric(success, f'codeb_pgbackrest_job_last_success_timestamp_seconds{{job="{job}"}}') == str(end)
    assert "# TYPE codeb_pgbackrest_job_last_success_timestamp_seconds gauge" in success


def test_a_failed_job_exits_with_pgbackrests_code_and_publishes_no_success(tmp_path):
    """pgbackrest failing with 82: the job exits 82, its textfile says 82, no success file,
    and the backup metrics are still refreshed."""
    out = _job(tmp_path, "incr", rc=82)
    assert out.returncode == 82
    text = (tmp_path / "textfile" / "codeb_pgbackrest_job_incr.prom").read_text()
    assert metric(text, 'codeb_pgbackrest_job_last_exit_code{job="incr"}') == "82"
    assert not (tmp_path / "textfile" / "codeb_pgbackrest_job_incr_success.prom").exists()
    assert log(tmp_path)[-1].startswith("metrics --config ")


@pytest.mark.parametrize("job", ["", "expire", "full;id"])
def test_an_unknown_job_prints_usage_and_exits_2_without_running_anything(tmp_path, job):
    """Anything but full|incr|diff|verify: usage on stderr, exit 2, no pgbackrest, no textfile."""
    out = _job(tmp_path, job)
    assert out.returncode == 2
    assert "usage:" in out.stderr and "full|incr|diff|verify" in out.stderr
    assert log(tmp_path) == [] and list((tmp_path / "textfile").iterdir()) == []


def test_a_missing_config_exits_2(tmp_path):
    """An unreadable configuration file stops the program before any work (exit 2)."""
    out = subprocess.run([str(SOURCES["job"]), "--config", str(tmp_path / "none.conf"), "full"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "cannot read" in out.stderr


# --- codeb-restore-drill ---------------------------------------------------------------------

PSQL = """case "$*" in
    *pg_is_in_recovery*) echo f ;;
    *datname*) printf '%s\\n' $DBS ;;
    *timeline_id*) echo 2 ;;
    *timestamptz*) echo ok ;;
esac
"""
INSTALL = """args=(); while [ $# -gt 0 ]; do case "$1" in -o|-g|-m) shift 2 ;; -d) shift ;; *) args+=("$1"); shift ;; esac; done
mkdir -p "${args[@]}"
"""
PG_CTL = """case "$*" in
    *" start"*) cp "$2/postgresql.conf" "$SEEN"; : > "$2/postmaster.pid"; echo "pg_ctl start" >> "$LOG"; exit ${PG_CTL_RC:-0} ;;
    *" stop"*) rm -f "$2/postmaster.pid"; echo "pg_ctl stop" >> "$LOG" ;;
esac
"""


def _drill(tmp: Path, dbs: str, restore_rc: int = 0, pg_ctl_rc: int = 0):
    (tmp / "textfile").mkdir(exist_ok=True)
    bin_dir = stubs(tmp, runuser=RUNUSER, install=INSTALL, chown=":\n", psql=PSQL, pg_ctl=PG_CTL,
                    pgbackrest=f'echo "pgbackrest $*" >> "$LOG"; exit {restore_rc}\n')
    return run(SOURCES["drill"], tmp, {
        "SCRATCH": tmp / "scratch", "BIN": bin_dir, "PORT": 5439, "MAX_CONNECTIONS": 200,
        "EXPECTED": ["app_production", "pdns"], "DRILL_CONF": "/etc/pgbackrest/drill.conf", "STANZA": "main",
        "LOCK": tmp / "lock", "TEXTFILE_DIR": tmp / "textfile", "PROM_WRITE": PROM_WRITE_SOURCE},
        env={"DBS": dbs, "SEEN": str(tmp / "seen.conf"), "PG_CTL_RC": str(pg_ctl_rc)})


def test_drill_restores_starts_a_scratch_cluster_finds_every_database_and_reports_success(tmp_path):
    """Restore with the drill's config, a scratch cluster on the drill port (socket only, no
    archiving), every expected database found: exit 0, success metrics, scratch removed."""
    out = _drill(tmp_path, "app_production pdns postgres")
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"restore drill: ok in [0-9]+\.[0-9]s \(3 databases, all 2 expected present\)\n", out.stdout)
    assert "pgbackrest --config=/etc/pgbackrest/drill.conf --stanza=main --log-level-console=warn restore" in log(tmp_path)
    assert (tmp_path / "seen.conf").read_text() == (
        f"listen_addresses = ''\nport = 5439\nunix_socket_directories = '{tmp_path}/scratch/run'\n"
        "max_connections = 200\narchive_mode = off\nhot_standby = on\n")
    text = (tmp_path / "textfile" / "codeb_restore_drill.prom").read_text()
    assert metric(text, "codeb_restore_drill_success") == "1"
    assert metric(text, "codeb_restore_drill_databases") == "3"
    assert re.fullmatch(r"[0-9]+\.[0-9]", metric(text, "codeb_restore_drill_duration_seconds"))
    end = metric(text, "codeb_restore_drill_last_run_timestamp_seconds")
    success = (tmp_path / "textfile" / "codeb_restore_drill_success.prom").read_text()
    assert metric(success, "codeb_restore_drill_last_success_timestamp_seconds") == end
    assert "pg_ctl stop" in log(tmp_path)
    assert not (tmp_path / "scratch" / "pgdata").exists() and not (tmp_path / "scratch" / "run").exists()


def test_drill_with_a_missing_database_fails_and_names_it(tmp_path):
    """A database missing from the restored cluster: exit 1, success 0, no success file."""
    out = _drill(tmp_path, "app_production postgres")
    assert out.returncode == 1
    assert "restore drill: failed in" in out.stdout and "missing databases: pdns; recovery: f" in out.stdout
    assert metric((tmp_path / "textfile" / "codeb_restore_drill.prom").read_text(), "codeb_restore_drill_success") == "0"
    assert not (tmp_path / "textfile" / "codeb_restore_drill_success.prom").exists()


def test_drill_reports_a_failed_restore(tmp_path):
    """pgbackrest restore failing: exit 1, "pgbackrest restore failed", 0 databases."""
    out = _drill(tmp_path, "", restore_rc=1)
    assert out.returncode == 1
    assert out.stdout.endswith("(pgbackrest restore failed)\n")
    text = (tmp_path / "textfile" / "codeb_restore_drill.prom").read_text()
    assert metric(text, "codeb_restore_drill_success") == "0" and metric(text, "codeb_restore_drill_databases") == "0"


def test_drill_reports_a_cluster_that_does_not_start(tmp_path):
    """pg_ctl start failing: exit 1 and the message points at the scratch cluster's log."""
    out = _drill(tmp_path, "app_production pdns", pg_ctl_rc=1)
    assert out.returncode == 1
    assert f"(the restored cluster did not start (see {tmp_path}/scratch/postgresql.log))" in out.stdout


# --- codeb-pitr --------------------------------------------------------------------------------

SYSTEMCTL = """echo "systemctl $*" >> "$LOG"
if [ "$1" = is-active ]; then case " $ACTIVE " in *" $3 "*) exit 0 ;; *) exit 3 ;; esac; fi
"""


def _pitr(tmp: Path, dbs: str, *args: str):
    stubs(tmp, runuser=RUNUSER, psql=PSQL, systemctl=SYSTEMCTL, pgbackrest='echo "pgbackrest $*" >> "$LOG"\n')
    return run(SOURCES["pitr"], tmp, {
        "SERVICE": "postgresql@17-main", "DEPENDENTS": ["pdns.service"], "EXPECTED": ["app_production", "pdns"],
        "STANZA": "main"}, *args, env={"DBS": dbs, "ACTIVE": "postgresql@17-main pdns.service"})


def test_pitr_archives_stops_dependents_restores_to_the_target_and_starts_everything_again(tmp_path):
    """The restore's order: pgbackrest check, stop PowerDNS then PostgreSQL, restore in place to
    the target (promote), start PostgreSQL then PowerDNS; every database present: exit 0."""
    target = "2025-01-31 14:05:00+09"
    out = _pitr(tmp_path, "app_production pdns postgres", target)
    assert out.returncode == 0, out.stderr
    steps = [line for line in log(tmp_path) if line.startswith(("pgbackrest", "systemctl st"))]
    assert steps == [
        "pgbackrest --stanza=main check",
        "systemctl stop pdns.service",
        "systemctl stop postgresql@17-main",
        f"pgbackrest --stanza=main --delta --type=time --target={target} --target-action=promote "
        "--log-level-console=warn restore",
        "systemctl start postgresql@17-main",
        "systemctl start pdns.service",
    ]
    assert out.stdout.startswith("[restore] archiving the current WAL (pgbackrest check)\n")
    assert re.search(r"^\[restore\] done in [0-9]+s: timeline 2, 2 expected databases present$", out.stdout, re.M)


def test_pitr_fails_when_a_database_is_missing_after_the_restore(tmp_path):
    """A database missing after the restore: exit 1 and its name on stderr."""
    out = _pitr(tmp_path, "app_production postgres", "2025-01-31 14:05:00+09")
    assert out.returncode == 1
    assert "missing databases after the restore: pdns" in out.stderr


def test_pitr_without_a_target_prints_usage_and_does_nothing(tmp_path):
    """No target: the usage message, a failure, nothing stopped."""
    out = _pitr(tmp_path, "")
    assert out.returncode != 0 and "usage: codeb-pitr <timestamp with zone>" in out.stderr
    assert log(tmp_path) == []
