"""The one-command state check in front of every rendered file (roles/files.py)."""

from codeb.files import ManagedFile


def test_a_regular_file_reads_as_owner_group_permission_bits_and_checksum():
    out = ["root centrifugo 640", "da39a3ee5e6b4b0d3255bfef95601890afd80709  /etc/centrifugo/config.json"]
    assert ManagedFile().process(out) == {
        "user": "root", "group": "centrifugo", "mode": 0o640, "sha1": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}


def test_special_bits_are_ignored_like_pyinfra_files_put_does():
    assert ManagedFile().process(["root root 2750", "00  /x"])["mode"] == 0o750


def test_an_absent_file_directory_or_symlink_reads_as_none():
    assert ManagedFile().process([]) is None


def test_the_check_refuses_symlinks_and_quotes_the_path():
    cmd = ManagedFile().command("/etc/a b")
    assert "[ -f '/etc/a b' ] && [ ! -L '/etc/a b' ]" in cmd
