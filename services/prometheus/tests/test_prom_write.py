"""The textfile library (codeb/host/prom-write.sh, installed at /usr/local/lib/codeb/prom-write.sh):
the one writer of node-exporter textfiles for the platform's shell programs, whose metrics
this service's rules read. Run with bash in a tmp dir."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pyinfra.context import ctx_host

import codeb.host as hostlib
from codeb.host import PROM_WRITE, PROM_WRITE_SOURCE


def prom_write(textfile: Path | None, name: str, text: str, tmp: Path):
    env = {"PATH": os.environ["PATH"]} | ({"TEXTFILE_DIR": str(textfile)} if textfile else {})
    return subprocess.run(["bash", "-c", f'set -uo pipefail; . "$0"; prom_write {name}', str(PROM_WRITE_SOURCE)],
                          input=text, capture_output=True, text=True, env=env, cwd=tmp)


def test_the_library_parses_and_is_installed_under_usr_local_lib():
    """bash -n accepts the library; hosts source it from /usr/local/lib/codeb."""
    out = subprocess.run(["bash", "-n", str(PROM_WRITE_SOURCE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert PROM_WRITE == "/usr/local/lib/codeb/prom-write.sh"


def test_prom_write_writes_stdin_as_name_prom_readable_by_node_exporter(tmp_path):
    """stdin becomes TEXTFILE_DIR/NAME.prom, mode 644, and no temporary file is left behind."""
    text = "# HELP x_total X.\n# TYPE x_total counter\nx_total 3\n"
    out = prom_write(tmp_path, "codeb_test", text, tmp_path)
    assert out.returncode == 0, out.stderr
    written = tmp_path / "codeb_test.prom"
    assert written.read_text() == text
    assert written.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["codeb_test.prom"]


def test_prom_write_replaces_the_file_atomically_by_rename(tmp_path):
    """An existing textfile is replaced by a rename, never rewritten in place: a reader that
    opened the old file still reads it whole, the path then holds the whole new file."""
    old = tmp_path / "codeb_test.prom"
    old.write_text("x 1\n")
    with old.open() as reader:
        before = os.fstat(reader.fileno()).st_ino
        assert prom_write(tmp_path, "codeb_test", "x 2\n", tmp_path).returncode == 0
        assert reader.read() == "x 1\n"
    assert old.stat().st_ino != before and old.read_text() == "x 2\n"


def test_prom_write_without_a_textfile_dir_fails_and_writes_nothing(tmp_path):
    """TEXTFILE_DIR unset (a program without its config): an error, no file anywhere."""
    out = prom_write(None, "codeb_test", "x 1\n", tmp_path)
    assert out.returncode != 0 and "TEXTFILE_DIR" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_install_prom_write_installs_the_library_once_per_host(monkeypatch):
    """Called by the pgBackRest repository and by every host's file backup, the library (and
    /usr/local/lib/codeb, as the storage service creates it) is installed once per host: 644,
    the file of this repository as it is."""
    calls = []
    monkeypatch.setattr(hostlib, "put", lambda *a, **k: calls.append(("put", *a)))

    class Files:
        @staticmethod
        def directory(**k):
            calls.append(("directory", k["path"], k["user"], k["group"], k["mode"]))

    monkeypatch.setattr(hostlib, "files", Files)

    class FakeHost:
        pass

    backup, storage = FakeHost(), FakeHost()
    with ctx_host.use(backup):
        hostlib.install_prom_write()
        hostlib.install_prom_write()
    with ctx_host.use(storage):
        hostlib.install_prom_write()
    once = [("directory", "/usr/local/lib/codeb", "root", "root", "755"),
            ("put", PROM_WRITE, PROM_WRITE_SOURCE.read_text(), "644")]
    assert calls == once + once
