"""File operations shared by every role.

Every rendered file goes through `put` or `put_secret`. Both first read the file's
owner, group, mode and checksum with one command (`ManagedFile`); only when that
differs from what is wanted do they hand over to pyinfra's `files.put`, which then
looks again (file, parent directory, checksum), shows the diff and uploads. A no-op
apply thus costs one command per file instead of three.

A change is installed without exposing anything (`_staged_install`): uploaded into the
login account's private directory, copied to `dest.codeb-new` created 0600, validated
there when the caller names a validator, and renamed over the live file only then.
"""

from __future__ import annotations

import hashlib
import shlex
from io import StringIO
from pathlib import Path

from pyinfra import host, state
from pyinfra.api import FactBase, FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.operations import files


class ManagedFile(FactBase):
    """`{"user", "group", "mode", "sha1"}` of a regular file (not a symlink), or None."""

    def command(self, path: str) -> str:
        q = shlex.quote(path)
        return f"if [ -f {q} ] && [ ! -L {q} ]; then stat -c '%U %G %a' {q} && sha1sum {q}; fi"

    def process(self, output):
        if len(output) < 2:
            return None
        user, group, mode = output[0].split()
        return {"user": user, "group": group, "mode": int(mode, 8) & 0o777, "sha1": output[1].split()[0]}


def is_current(dest: str, sha1: str, mode: str, user: str, group: str) -> bool:
    """Whether `dest` already holds exactly the content with this SHA-1, owner, group and mode."""
    current = host.get_fact(ManagedFile, path=dest)
    wanted = {"user": user, "group": group, "mode": int(str(mode), 8) & 0o777, "sha1": sha1}
    return current == wanted


UPLOAD_ROOT = "/var/lib/codeb-upload"


def _login() -> str:
    return host.data.get("ssh_user") or "root"


def _staged_install(src, dest: str, mode: str, user: str, group: str, validate: str | None):
    """Commands that install `src` at `dest` without ever exposing it or the live file:

    1. upload over SFTP, as the login account, into its own 0700 directory (never /tmp);
    2. as root with umask 077, copy to `dest.codeb-new` (0600 from its creation), set owner
       and mode, run the validator on it (`{new}` in `validate`);
    3. only then rename it over `dest` (atomic: a running program keeps its old file);
    the staged and new copies are removed whatever happens.
    """
    login = _login()
    private = f"{UPLOAD_ROOT}/{login}"
    staged = f"{private}/{hashlib.sha1(dest.encode()).hexdigest()}"
    new = f"{dest}.codeb-new"
    yield StringCommand(f"install -d -m 711 -o root -g root {UPLOAD_ROOT} && "
                        f"install -d -m 700 -o {shlex.quote(login)} -g {shlex.quote(login)} {private}")
    yield FileUploadCommand(src, staged, _sudo=False)
    q_staged, q_new, q_dest = shlex.quote(staged), shlex.quote(new), shlex.quote(dest)
    check = ""
    if validate:
        what = next((tool for tool in ("visudo", "sshd", "nft", "caddy", "quadlet", "sha256sum")
                     if tool in validate), "its check")
        # A subshell: a validator may `exit` (with its own status) without ending this script.
        check = (f"( {validate.format(new=q_new)} ) >&2 || "
                 f"{{ echo \"error: {what} rejected the rendered {dest}; the live file is unchanged\" >&2; exit 1; }}; ")
    script = (f"umask 077; trap 'rm -f {q_staged} {q_new}' EXIT; "
              f"cp {q_staged} {q_new} && chown {shlex.quote(user)}:{shlex.quote(group)} {q_new} && "
              f"chmod {mode} {q_new} && {check}mv -f {q_new} {q_dest}")
    yield StringCommand("sh", "-c", QuoteString(script))


def _install(src, dest: str, mode: str, user: str, group: str, validate: str | None):
    """pyinfra's files.put decides (and, with --diff, shows) what changes; its upload and
    chown/chmod commands are replaced by the staged install above."""
    inner = files.put._inner(src=src, dest=dest, user=user, group=group, mode=mode)
    for command in inner:
        if isinstance(command, FileUploadCommand):
            if hasattr(src, "seek"):
                src.seek(0)
            yield from _staged_install(src, dest, mode, user, group, validate)
            inner.close()  # its chown/chmod of the live file are part of the staged install
            return
        yield command  # metadata only (the contents are already right)


def _install_hidden(src, dest: str, sha1: str, mode: str, user: str, group: str, validate: str | None,
                    what: str):
    """The same without files.put, so nothing of the contents can reach --diff: pyinfra loads
    every host's deploy in its own greenlet, so a global switch of config.DIFF would race."""
    current = host.get_fact(ManagedFile, path=dest)
    if current and current["sha1"] == sha1:
        q = shlex.quote(dest)
        yield StringCommand(f"chown {shlex.quote(user)}:{shlex.quote(group)} {q} && chmod {mode} {q}")
        return
    if state.config.DIFF:
        host.log(f"Will write {dest} ({what})")
    yield from _staged_install(src, dest, mode, user, group, validate)


def _sha1_of(src) -> str:
    if isinstance(src, str):
        return hashlib.sha1(src.encode()).hexdigest()
    h = hashlib.sha1()
    with open(src, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@operation()
def _put(dest: str, content, mode: str, user: str, group: str, validate: str | None = None,
         secret: bool | str = False):
    """`secret`: True hides the contents from --diff as secrets; a string hides them with that
    description (binaries)."""
    sha1 = _sha1_of(content)
    if is_current(dest, sha1, mode, user, group):
        host.noop(f"{dest} is up to date")
        return
    src = StringIO(content) if isinstance(content, str) else str(content)
    if secret:
        what = "contents hidden: it holds secrets" if secret is True else secret
        yield from _install_hidden(src, dest, sha1, mode, user, group, validate, what)
    else:
        yield from _install(src, dest, mode, user, group, validate)


def put(dest: str, content: str, mode: str = "644", user: str = "root", group: str = "root",
        validate: str | None = None, **kwargs):
    """Upload rendered text; with --diff, pyinfra shows what would change. `validate` is a
    command run on the new file (`{new}`) before it replaces the live one."""
    return _put(name=f"Render {dest}", dest=dest, content=content, user=user, group=group, mode=mode,
                validate=validate, **kwargs)


def put_secret(dest: str, content: str, mode: str = "600", user: str = "root", group: str = "root",
               validate: str | None = None, **kwargs):
    """Upload text that holds secrets: never shown by --diff, never in an operation's arguments."""
    return _put(name=f"Render {dest} (secret)", dest=dest, content=content, mode=mode, user=user,
                group=group, validate=validate, secret=True, **kwargs)


def put_binary(dest: str, path, sha256: str, name: str, mode: str = "755"):
    """Install a local binary: staged next to `dest`, its SHA-256 checked there, then renamed
    over the running program's file (which keeps running on the old inode until restarted)."""
    return _put(name=f"Install {name} ({sha256[:12]})", dest=dest, content=Path(path), user="root",
                group="root", mode=mode, validate=f"echo '{sha256}  '{{new}} | sha256sum --check --quiet",
                secret=f"binary, sha256 {sha256[:12]}")  # no text diff of a binary
