"""The one restart pattern (codeb/ops.py: changed -> validate -> reload or restart), its shell
commands run for real with bash in a scratch directory."""

from __future__ import annotations

import subprocess

from codeb.ops import restart_commands


def sh(cmd: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True)


def setup(tmp_path, validate=None):
    (tmp_path / "a.conf").write_text("one\n")
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "x.site").write_text("x\n")
    files = [str(tmp_path / "a.conf"), f"{tmp_path}/sites/*.site"]
    return restart_commands(files, f"echo restarted >> {tmp_path}/log", marker=str(tmp_path / "marker"),
                            validate=validate)


def restarts(tmp_path) -> int:
    log = tmp_path / "log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_a_first_apply_restarts_once_and_a_second_finds_nothing_to_do(tmp_path):
    state, apply = setup(tmp_path)
    assert sh(state, tmp_path).stdout.strip() == "stale"
    assert sh(apply, tmp_path).returncode == 0 and restarts(tmp_path) == 1
    assert sh(state, tmp_path).stdout == ""


def test_a_changed_added_or_removed_file_is_a_change(tmp_path):
    state, apply = setup(tmp_path)
    sh(apply, tmp_path)
    (tmp_path / "a.conf").write_text("two\n")
    assert sh(state, tmp_path).stdout.strip() == "stale"
    sh(apply, tmp_path)
    (tmp_path / "sites" / "y.site").write_text("y\n")  # a new site, matched by the glob
    assert sh(state, tmp_path).stdout.strip() == "stale"
    sh(apply, tmp_path)
    (tmp_path / "sites" / "x.site").unlink()  # a removed site
    assert sh(state, tmp_path).stdout.strip() == "stale"
    sh(apply, tmp_path)
    assert sh(state, tmp_path).stdout == "" and restarts(tmp_path) == 4


def test_a_change_the_validator_rejects_never_restarts_and_stays_pending(tmp_path):
    state, apply = setup(tmp_path, validate=f"! grep -q bad {tmp_path}/a.conf")
    sh(apply, tmp_path)
    (tmp_path / "a.conf").write_text("bad\n")
    assert sh(apply, tmp_path).returncode != 0 and restarts(tmp_path) == 1
    assert sh(state, tmp_path).stdout.strip() == "stale"  # the next apply tries again
    (tmp_path / "a.conf").write_text("good\n")
    assert sh(apply, tmp_path).returncode == 0 and restarts(tmp_path) == 2


def test_a_failed_restart_is_retried_by_the_next_apply(tmp_path):
    """An interrupted or failed restart leaves the marker as it was, so the change is not lost."""
    (tmp_path / "a.conf").write_text("one\n")
    state, apply = restart_commands([str(tmp_path / "a.conf")], "false", marker=str(tmp_path / "marker"))
    assert sh(apply, tmp_path).returncode != 0
    assert sh(state, tmp_path).stdout.strip() == "stale"
