"""The static shell programs of the file backups (file-backup.sh, file-prune.sh,
file-restore.sh, restic-init.sh) run against a test configuration, with restic, runuser and
install stubbed on PATH."""

from __future__ import annotations

import getpass
import os
import re
import subprocess
from pathlib import Path

import pytest

from codeb.host import PROM_WRITE_SOURCE, shell_config
from codeb.inventory import platform_hosts
from services.restic import CONFIGS, SOURCES, retention_args, server_rendered
from tests.unit.conftest import load_inventory

# restic: its arguments and the variables it was given, one line per call; exit $RESTIC_RC
# (or 1 for a repository named in $RESTIC_FAIL).
RESTIC = """echo "restic $* | repo=${RESTIC_REPOSITORY:-} password=${RESTIC_PASSWORD:-} \
password_file=${RESTIC_PASSWORD_FILE:-}" >> "$LOG"
case " $* " in *" -r ${RESTIC_FAIL:-none} "*) exit 1 ;; esac
exit ${RESTIC_RC:-0}
"""
RUNUSER = 'user=$2; shift 3; echo "as $user:" >> "$LOG"; exec "$@"\n'
INSTALL = """owner=; args=(); while [ $# -gt 0 ]; do case "$1" in -o) owner=$2; shift 2 ;; -g|-m) shift 2 ;; -d) shift ;;
    *) args+=("$1"); shift ;; esac; done
echo "install -d owner=$owner ${args[*]}" >> "$LOG"
mkdir -p "${args[@]}"
"""


def stubs(tmp: Path, **bodies: str) -> Path:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in bodies.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def run(program: Path, tmp: Path, conf_text: str, *args: str, env: dict | None = None):
    conf = tmp / "program.conf"
    conf.write_text(conf_text)
    return subprocess.run([str(program), "--config", str(conf), *args], capture_output=True, text=True,
                          env={"PATH": f"{tmp / 'bin'}:{os.environ['PATH']}", "LOG": str(tmp / "log"), **(env or {})})


def log(tmp: Path) -> list[str]:
    return (tmp / "log").read_text().splitlines() if (tmp / "log").exists() else []


def metric(text: str, name: str) -> str:
    return re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1)


@pytest.mark.parametrize("key", list(SOURCES))
def test_programs_parse_are_executable_and_default_to_the_installed_config(key):
    """bash -n accepts every program; each is executable and, run without --config (by a
    person, the topology tests), reads the file the deploy installs."""
    out = subprocess.run(["bash", "-n", str(SOURCES[key])], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert os.access(SOURCES[key], os.X_OK)
    assert re.search(r"^config=(\S+)$", SOURCES[key].read_text(), re.M).group(1) == CONFIGS[key]


# --- codeb-file-backup --------------------------------------------------------------------------


def _backup(tmp: Path, rc: int):
    (tmp / "textfile").mkdir(exist_ok=True)
    for p in ("etc", "with space"):
        (tmp / "data" / p).mkdir(parents=True, exist_ok=True)
    (tmp / "restic.env").write_text("RESTIC_REPOSITORY=rest:https://n4.codeb.test:8443/n3/\n"
                                    "RESTIC_PASSWORD_FILE=/etc/codeb/backup/restic.password\n")
    stubs(tmp, restic='printf "%s\\n" "$@" > "$LOG.args"\n' + RESTIC)
    conf = shell_config({"HOST": "n3", "ENV_FILE": tmp / "restic.env",
                         "PATHS": [tmp / "data" / "etc", tmp / "data" / "missing", tmp / "data" / "with space"],
                         "TEXTFILE_DIR": tmp / "textfile", "PROM_WRITE": PROM_WRITE_SOURCE}, "test")
    return run(SOURCES["file_backup"], tmp, conf, env={"RESTIC_RC": str(rc)})


def test_file_backup_backs_up_the_existing_paths_with_the_env_file_and_reports_success(tmp_path):
    """restic backup --host HOST --tag weekly of the paths that exist (one with a space kept
    whole), with the env file's repository exported; exit 0, exit code and success textfiles."""
    out = _backup(tmp_path, 0)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "log.args").read_text().splitlines() == [
        "backup", "--host", "n3", "--tag", "weekly", "--exclude-caches", "--one-file-system",
        str(tmp_path / "data" / "etc"), str(tmp_path / "data" / "with space")]
    assert "repo=rest:https://n4.codeb.test:8443/n3/ " in log(tmp_path)[0]
    assert "password_file=/etc/codeb/backup/restic.password" in log(tmp_path)[0]
    text = (tmp_path / "textfile" / "codeb_file_backup.prom").read_text()
    assert metric(text, "codeb_file_backup_last_exit_code") == "0"
    assert int(metric(text, "codeb_file_backup_duration_seconds")) >= 0
    success = (tmp_path / "textfile" / "codeb_file_backup_success.prom").read_text()
    assert int(metric(success, "codeb_file_backup_last_success_timestamp_seconds")) > 1_700_000_000


def test_file_backup_with_unreadable_files_exits_3_and_still_counts_as_a_snapshot(tmp_path):
    """restic's 3 (snapshot written, some files unreadable): exit 3, exit code 3, success file."""
    out = _backup(tmp_path, 3)
    assert out.returncode == 3
    assert metric((tmp_path / "textfile" / "codeb_file_backup.prom").read_text(), "codeb_file_backup_last_exit_code") == "3"
    assert (tmp_path / "textfile" / "codeb_file_backup_success.prom").exists()


def test_a_failed_file_backup_exits_with_restics_code_and_publishes_no_success(tmp_path):
    """restic failing (1): exit 1, exit code 1 published, no success file."""
    out = _backup(tmp_path, 1)
    assert out.returncode == 1
    assert metric((tmp_path / "textfile" / "codeb_file_backup.prom").read_text(), "codeb_file_backup_last_exit_code") == "1"
    assert not (tmp_path / "textfile" / "codeb_file_backup_success.prom").exists()


# --- codeb-file-prune --------------------------------------------------------------------------


def _repos(tmp: Path, with_config: list[str], hosts: list[str]) -> tuple[Path, Path]:
    root, passwords = tmp / "srv", tmp / "passwords"
    passwords.mkdir()
    for h in hosts:
        (root / h).mkdir(parents=True)
        (passwords / f"{h}.password").write_text(f"pw-{h}\n")
    for h in with_config:
        (root / h / "config").write_text("")
    return root, passwords


def test_file_prune_forgets_by_retention_in_every_initialised_repository_as_its_owner(tmp_path):
    """With the local inventory's rendered config (paths moved into a tmp dir): for each host
    whose repository exists, restic forget --host H --prune with the retention options, as
    the repository's owner, with that host's password; hosts without a repository skipped."""
    inv = load_inventory("local")
    h = inv.get_group("backup")[0]
    conf = server_rendered(h.data, h.name, h.data.private_ip, platform_hosts(inv))[CONFIGS["file_prune"]]
    hosts = [n for n, _ in platform_hosts(inv)]
    root, passwords = _repos(tmp_path, [hosts[0], hosts[-1]], hosts)
    conf += shell_config({"REPO_ROOT": root, "PASSWORD_DIR": passwords}, "test: the repositories here")
    stubs(tmp_path, restic=RESTIC, runuser=RUNUSER)
    out = run(SOURCES["file_prune"], tmp_path, conf)
    assert out.returncode == 0, out.stderr
    keep = " ".join(retention_args(h.data.file_backup_retention))
    assert keep == "--keep-monthly 6 --keep-weekly 8"
    me = getpass.getuser()
    assert log(tmp_path) == [
        f"as {me}:", f"restic -r {root}/{hosts[0]} --no-cache forget --host {hosts[0]} --prune {keep} | repo= "
        f"password=pw-{hosts[0]} password_file=",
        f"as {me}:", f"restic -r {root}/{hosts[-1]} --no-cache forget --host {hosts[-1]} --prune {keep} | repo= "
        f"password=pw-{hosts[-1]} password_file="]


def test_file_prune_continues_after_a_failure_and_exits_1(tmp_path):
    """One repository failing to prune: the others are still pruned, the program exits 1."""
    root, passwords = _repos(tmp_path, ["n1", "n2"], ["n1", "n2"])
    stubs(tmp_path, restic=RESTIC, runuser=RUNUSER)
    conf = shell_config({"HOSTS": ["n1", "n2"], "REPO_ROOT": root, "PASSWORD_DIR": passwords,
                         "RETENTION": ["--keep-weekly", "8"]}, "test")
    out = run(SOURCES["file_prune"], tmp_path, conf, env={"RESTIC_FAIL": f"{root}/n1"})
    assert out.returncode == 1
    assert [line.split(" |")[0] for line in log(tmp_path) if line.startswith("restic")] == [
        f"restic -r {root}/n1 --no-cache forget --host n1 --prune --keep-weekly 8",
        f"restic -r {root}/n2 --no-cache forget --host n2 --prune --keep-weekly 8"]


# --- codeb-file-restore ------------------------------------------------------------------------


def _restore(tmp: Path, *args: str):
    root, passwords = _repos(tmp, ["n3"], ["n3"])
    stubs(tmp, restic=RESTIC)
    conf = shell_config({"RESTORE_DIR": tmp / "restore", "REPO_ROOT": root, "PASSWORD_DIR": passwords}, "test")
    return run(SOURCES["file_restore"], tmp, conf, *args), root, passwords


def test_file_restore_restores_one_path_of_the_latest_snapshot_and_prints_where(tmp_path):
    """codeb-file-restore HOST PATH: restic restore latest --host HOST --include PATH into
    RESTORE_DIR/HOST (created 0700), with HOST's password file; prints the restored path."""
    out, root, passwords = _restore(tmp_path, "n3", "/var/lib/garage/meta/snapshots")
    assert out.returncode == 0, out.stderr
    target = tmp_path / "restore" / "n3"
    assert out.stdout == f"{target}/var/lib/garage/meta/snapshots\n"
    assert target.stat().st_mode & 0o777 == 0o700
    assert log(tmp_path) == [
        f"restic -r {root}/n3 --no-cache --no-lock restore latest --host n3 --include /var/lib/garage/meta/snapshots "
        f"--target {target} | repo= password= password_file={passwords}/n3.password"]


def test_file_restore_takes_a_snapshot_and_a_target(tmp_path):
    """SNAPSHOT and TARGET arguments replace latest and the default directory."""
    out, root, _ = _restore(tmp_path, "n3", "/etc/hosts", "4f2a9c1e", str(tmp_path / "elsewhere"))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{tmp_path}/elsewhere/etc/hosts\n"
    assert " restore 4f2a9c1e --host n3 --include /etc/hosts --target " f"{tmp_path}/elsewhere |" in log(tmp_path)[0]


def test_file_restore_of_an_unknown_host_exits_2(tmp_path):
    """A host without a repository: "no file backup repository for HOST", exit 2, no restic."""
    out, *_ = _restore(tmp_path, "n9", "/etc")
    assert out.returncode == 2 and out.stderr == "no file backup repository for n9\n"
    assert log(tmp_path) == []


def test_file_restore_without_a_path_prints_usage(tmp_path):
    """A missing PATH argument: the usage message and exit 1."""
    out, *_ = _restore(tmp_path, "n3")
    assert out.returncode == 1 and "usage: codeb-file-restore HOST PATH [SNAPSHOT] [TARGET]" in out.stderr


# --- codeb-restic-init --------------------------------------------------------------------------


def test_restic_init_creates_missing_repositories_only_owned_by_the_right_user(tmp_path):
    """Each host without a repository gets one: the backup host's own written by root, the
    others by rest-server's user, each with its host's password; existing ones untouched."""
    root, passwords = tmp_path / "srv", tmp_path / "passwords"
    passwords.mkdir()
    for h in ("n1", "n2", "n4"):
        (passwords / f"{h}.password").write_text(f"pw-{h}\n")
    (root / "n2").mkdir(parents=True)
    (root / "n2" / "config").write_text("")
    stubs(tmp_path, restic=RESTIC, runuser=RUNUSER, install=INSTALL)
    conf = shell_config({"HOSTS": ["n1", "n2", "n4"], "SELF_HOST": "n4", "REPO_ROOT": root,
                         "PASSWORD_DIR": passwords, "SERVER_USER": "restic-rest-server"}, "test")
    out = run(SOURCES["restic_init"], tmp_path, conf)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"initialised {root}/n1\ninitialised {root}/n4\n"
    assert log(tmp_path) == [
        f"install -d owner=restic-rest-server {root}/n1", "as restic-rest-server:",
        f"restic -r {root}/n1 --no-cache init | repo= password=pw-n1 password_file=",
        f"install -d owner=root {root}/n4", "as root:",
        f"restic -r {root}/n4 --no-cache init | repo= password=pw-n4 password_file="]


def test_restic_init_stops_at_the_first_failure(tmp_path):
    """set -e: a failing init ends the program with restic's failure, later hosts untouched."""
    root, passwords = tmp_path / "srv", tmp_path / "passwords"
    passwords.mkdir()
    for h in ("n1", "n2"):
        (passwords / f"{h}.password").write_text("pw\n")
    stubs(tmp_path, restic=RESTIC, runuser=RUNUSER, install=INSTALL)
    conf = shell_config({"HOSTS": ["n1", "n2"], "SELF_HOST": "n4", "REPO_ROOT": root, "PASSWORD_DIR": passwords,
                         "SERVER_USER": "restic-rest-server"}, "test")
    out = run(SOURCES["restic_init"], tmp_path, conf, env={"RESTIC_FAIL": f"{root}/n1"})
    assert out.returncode == 1 and out.stdout == ""
    assert not [line for line in log(tmp_path) if "/n2" in line]
