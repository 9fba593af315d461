"""codeb-wal-metrics (services/pgbackrest/wal_metrics.py) against recorded psql answers
to its pg_stat_archiver query (tests/recorded)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from services.pgbackrest import CONFIGS, SOURCES, wal_metrics

RECORDED = Path(__file__).parent / "recorded"
EXPECTED = Path(__file__).parent / "expected"


def _archive_status(root: Path, ready: dict[str, float]) -> Path:
    status = root / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    (status / "00000001000000000000002F.done").write_text("")  # archived already: not waiting
    for name, mtime in ready.items():
        (status / f"{name}.ready").write_text("")
        os.utime(status / f"{name}.ready", (mtime, mtime))
    return status


def test_recorded_healthy_archiver_gives_the_expected_textfile_lines(tmp_path):
    """Archiving works, nothing waiting: up 1, the archiver's counters, 0 ready, oldest 0."""
    stats = wal_metrics.parse_archiver((RECORDED / "pg-stat-archiver.txt").read_text())
    assert stats == (1, 1738301112, 4821, 0, 0)
    lines = wal_metrics.format_lines(stats, wal_metrics.ready_mtimes(str(_archive_status(tmp_path, {}))))
    assert "\n".join(lines) + "\n" == (EXPECTED / "codeb_postgresql_wal.prom").read_text()


def test_recorded_failing_archiver_reports_failures_and_the_oldest_waiting_segment(tmp_path):
    """archive-push failing: the failure count and time, 2 segments waiting, the oldest's
    completion time rounded to the second (.done files are not waiting)."""
    stats = wal_metrics.parse_archiver((RECORDED / "pg-stat-archiver-failing.txt").read_text())
    status = _archive_status(tmp_path, {"000000010000000000000031": 1738301100.0,
                                        "000000010000000000000030": 1738301040.6})
    lines = wal_metrics.format_lines(stats, wal_metrics.ready_mtimes(str(status)))
    assert "\n".join(lines) + "\n" == (EXPECTED / "codeb_postgresql_wal-failing.prom").read_text()


def test_a_fresh_cluster_that_never_archived_is_up_with_zeros():
    """pg_stat_archiver of a new cluster (no archive yet): up 1, every value 0."""
    assert wal_metrics.parse_archiver((RECORDED / "pg-stat-archiver-fresh.txt").read_text()) == (1, 0, 0, 0, 0)


@pytest.mark.parametrize("output", [None, "", "psql: error: connection to server failed", "1 2 3", "1 2 3 4 5"])
def test_psql_failing_or_answering_otherwise_reports_down_with_zeros(output):
    """No statistics (psql failed, or not one row of four integers): up 0 and zeros."""
    assert wal_metrics.parse_archiver(output) == (0, 0, 0, 0, 0)


def test_the_program_reads_its_config_queries_pg_stat_archiver_and_writes_the_textfile(tmp_path):
    """End to end: --config FILE --once runs the query as postgres with psql -XAtq -F ' '
    (stubbed with the recorded answer) and replaces codeb_postgresql_wal.prom (mode 644)."""
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    status = _archive_status(tmp_path / "main", {})
    conf = tmp_path / "wal-metrics.json"
    conf.write_text(json.dumps({"textfile_dir": str(textfile), "archive_status": str(status)}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "runuser").write_text("#!/bin/bash\nprintf '%s\\n' \"$@\" > " f"{tmp_path}/args\n"
                                     f"cat {RECORDED / 'pg-stat-archiver.txt'}\n")
    (bin_dir / "runuser").chmod(0o755)
    out = subprocess.run([str(SOURCES["wal_metrics"]), "--config", str(conf), "--once"], capture_output=True,
                         text=True, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "args").read_text().splitlines() == [
        "-u", "postgres", "--", "psql", "-XAtq", "-F", " ", "-d", "postgres", "-c", wal_metrics.QUERY]
    written = textfile / "codeb_postgresql_wal.prom"
    assert written.read_text() == (EXPECTED / "codeb_postgresql_wal.prom").read_text()
    assert written.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in textfile.iterdir()) == ["codeb_postgresql_wal.prom"]


def test_the_default_config_is_where_the_deploy_installs_it():
    """Run by hand without --config, the program reads the configuration the deploy installs."""
    assert wal_metrics.DEFAULT_CONFIG == CONFIGS["wal_metrics"]


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")
@pytest.mark.parametrize("name", ["codeb_postgresql_wal.prom", "codeb_postgresql_wal-failing.prom"])
def test_the_textfiles_pass_promtool_check_metrics(name):
    """The expected textfiles are valid exposition format (HELP/TYPE, counters end in _total)."""
    out = subprocess.run(["promtool", "check", "metrics"], input=(EXPECTED / name).read_text(), capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
