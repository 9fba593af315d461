"""codeb-backup-metrics (services/pgbackrest/backup_metrics.py) against recorded
`pgbackrest --output=json info` answers of pgBackRest 2.54 (tests/recorded)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from services.pgbackrest import CONFIGS, SOURCES, backup_metrics

RECORDED = Path(__file__).parent / "recorded"
EXPECTED = Path(__file__).parent / "expected"
NEWEST_WAL = 1738301100


def _repo_with_wal(root: Path) -> Path:
    """A repository's archive as pgBackRest lays it out: archive/<stanza>/<archive id>/<16 hex>/<segment>."""
    wal = root / "archive" / "main" / "17-1" / "0000000100000000"
    wal.mkdir(parents=True)
    (root / "archive" / "main" / "archive.info").write_text("[db]\n")
    for name, mtime in (("000000010000000000000030-5a1f0c2d8e7b6a4f3c2d1e0f9a8b7c6d5e4f3a2b.zst", NEWEST_WAL - 60),
                        ("000000010000000000000031-0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c.zst", NEWEST_WAL),
                        ("00000002.history", NEWEST_WAL + 500),  # not a segment
                        ("short", NEWEST_WAL + 900)):            # not a segment either
        (wal / name).write_text("")
        os.utime(wal / name, (mtime, mtime))
    return root


def test_recorded_info_gives_the_expected_textfile_lines(tmp_path):
    """Healthy stanza: ok 1, the newest valid backup per type (an errored incr is ignored),
    5 valid backups, the newest WAL segment's arrival; exactly the recorded textfile."""
    info, ok = backup_metrics.summarise((RECORDED / "pgbackrest-info.json").read_text())
    lines = backup_metrics.format_lines("main", info, ok, backup_metrics.newest_wal(str(_repo_with_wal(tmp_path)),
                                                                                      "main"))
    assert "\n".join(lines) + "\n" == (EXPECTED / "codeb_pgbackrest.prom").read_text()


def test_a_stanza_without_backups_reports_not_ok_and_zero_backups():
    """`no valid backups` (status 2, right after stanza-create): ok 0, no per-type line, 0 backups."""
    info, ok = backup_metrics.summarise((RECORDED / "pgbackrest-info-no-backups.json").read_text())
    lines = backup_metrics.format_lines("main", info, ok, 0.0)
    assert ok == 0
    assert 'codeb_pgbackrest_stanza_ok{stanza="main"} 0' in lines
    assert 'codeb_pgbackrest_backups{stanza="main"} 0' in lines
    assert not any(line.startswith("codeb_pgbackrest_last_backup_timestamp_seconds{") for line in lines)
    assert 'codeb_pgbackrest_last_wal_archived_timestamp_seconds{stanza="main"} 0' in lines


def test_a_missing_stanza_reports_not_ok():
    """`missing stanza path` (status 1) is not healthy."""
    info, ok = backup_metrics.summarise((RECORDED / "pgbackrest-info-missing-stanza.json").read_text())
    assert ok == 0 and info["backup"] == []


@pytest.mark.parametrize("output", [None, "", "ERROR: [056]: unable to find primary cluster", "[]", "{}"])
def test_a_failed_or_unreadable_info_reports_not_ok_and_no_backups(output):
    """pgbackrest failing (None) or answering anything but its JSON: ok 0, no backups."""
    assert backup_metrics.summarise(output) == ({"backup": []}, 0)


def test_newest_wal_ignores_history_files_and_other_stanzas(tmp_path):
    """Only segment files (24+ characters, not .history) of this stanza count; none: 0."""
    repo = _repo_with_wal(tmp_path)
    assert backup_metrics.newest_wal(str(repo), "main") == NEWEST_WAL
    assert backup_metrics.newest_wal(str(repo), "other") == 0.0


def _stub_runuser(bin_dir: Path, body: str):
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "runuser").write_text("#!/bin/bash\n" + body)
    (bin_dir / "runuser").chmod(0o755)


def test_the_program_reads_its_config_runs_pgbackrest_info_and_writes_the_textfile(tmp_path):
    """End to end: --config FILE --once runs `runuser -u postgres -- pgbackrest --stanza=main
    --output=json info` (stubbed with the recorded answer) and replaces codeb_pgbackrest.prom
    (mode 644, no temporary file left)."""
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    (textfile / "codeb_pgbackrest.prom").write_text("stale\n")
    repo = _repo_with_wal(tmp_path / "repo")
    conf = tmp_path / "backup-metrics.json"
    conf.write_text(json.dumps({"_comment": "test", "textfile_dir": str(textfile), "repo_path": str(repo),
                                "stanza": "main"}))
    _stub_runuser(tmp_path / "bin", f'echo "$*" > {tmp_path}/args\ncat {RECORDED / "pgbackrest-info.json"}\n')
    out = subprocess.run([str(SOURCES["metrics"]), "--config", str(conf), "--once"], capture_output=True, text=True,
                         env={"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "args").read_text() == "-u postgres -- pgbackrest --stanza=main --output=json info\n"
    written = textfile / "codeb_pgbackrest.prom"
    assert written.read_text() == (EXPECTED / "codeb_pgbackrest.prom").read_text()
    assert written.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in textfile.iterdir()) == ["codeb_pgbackrest.prom"]


def test_the_program_reports_an_unreachable_repository_as_not_ok(tmp_path):
    """pgbackrest info failing (exit 1): the textfile still appears, with ok 0 and 0 backups."""
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    conf = tmp_path / "backup-metrics.json"
    conf.write_text(json.dumps({"textfile_dir": str(textfile), "repo_path": str(tmp_path / "none"), "stanza": "main"}))
    _stub_runuser(tmp_path / "bin", "echo 'ERROR: [103]: unable to find a valid repository' >&2\nexit 1\n")
    out = subprocess.run([str(SOURCES["metrics"]), "--config", str(conf), "--once"], capture_output=True, text=True,
                         env={"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    text = (textfile / "codeb_pgbackrest.prom").read_text()
    assert 'codeb_pgbackrest_stanza_ok{stanza="main"} 0\n' in text and 'codeb_pgbackrest_backups{stanza="main"} 0\n' in text


def test_the_default_config_is_where_the_deploy_installs_it():
    """Run by hand without --config, the program reads the configuration the deploy installs."""
    assert backup_metrics.DEFAULT_CONFIG == CONFIGS["metrics"]


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")
def test_the_textfile_passes_promtool_check_metrics():
    """The expected textfile is valid exposition format (HELP/TYPE, names, counters)."""
    out = subprocess.run(["promtool", "check", "metrics"], input=(EXPECTED / "codeb_pgbackrest.prom").read_text(),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
