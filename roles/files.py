"""File operations shared by every role.

Every rendered file goes through `put` or `put_secret`. Both first read the file's
owner, group, mode and checksum with one command (`ManagedFile`); only when that
differs from what is wanted do they hand over to pyinfra's `files.put`, which then
looks again (file, parent directory, checksum), shows the diff and uploads. A no-op
apply thus costs one command per file instead of three.
"""

from __future__ import annotations

import hashlib
import shlex
from io import StringIO

from pyinfra import host, state
from pyinfra.api import FactBase, operation
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


def is_current(dest: str, content: str, mode: str, user: str, group: str) -> bool:
    """Whether `dest` already holds exactly `content` with this owner, group and mode."""
    current = host.get_fact(ManagedFile, path=dest)
    wanted = {"user": user, "group": group, "mode": int(str(mode), 8) & 0o777,
              "sha1": hashlib.sha1(content.encode()).hexdigest()}
    return current == wanted


@operation()
def _put(dest: str, content: str, mode: str, user: str, group: str):
    if is_current(dest, content, mode, user, group):
        host.noop(f"{dest} is up to date")
        return
    yield from files.put._inner(src=StringIO(content), dest=dest, user=user, group=group, mode=mode)


def put(dest: str, content: str, mode: str = "644", user: str = "root", group: str = "root", **kwargs):
    """Upload rendered text; with --diff, pyinfra shows what would change."""
    return _put(name=f"Render {dest}", dest=dest, content=content, user=user, group=group, mode=mode, **kwargs)


@operation()
def _secret_put(dest: str, content: str, mode: str, user: str, group: str):
    if is_current(dest, content, mode, user, group):
        host.noop(f"{dest} is up to date")
        return
    saved = state.config.DIFF
    inner = files.put._inner(src=StringIO(content), dest=dest, user=user, group=group, mode=mode)
    announced = False
    while True:
        state.config.DIFF = False
        try:
            command = next(inner)
        except StopIteration:
            break
        finally:
            state.config.DIFF = saved
        if saved and not announced:
            host.log(f"Will write {dest} (contents hidden: it holds secrets)")
            announced = True
        yield command


def put_secret(dest: str, content: str, mode: str = "600", user: str = "root", group: str = "root", **kwargs):
    """Upload text that holds secrets: never shown by --diff, never in an operation's arguments."""
    return _secret_put(name=f"Render {dest} (secret)", dest=dest, content=content, mode=mode, user=user,
                       group=group, **kwargs)
