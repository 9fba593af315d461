"""File operations shared by every role."""

from __future__ import annotations

from io import StringIO

from pyinfra import host, state
from pyinfra.api import operation
from pyinfra.operations import files


def put(dest: str, content: str, mode: str = "644", user: str = "root", group: str = "root", **kwargs):
    """Upload rendered text; with --diff, pyinfra shows what would change."""
    return files.put(name=f"Render {dest}", src=StringIO(content), dest=dest, user=user, group=group, mode=mode,
                     **kwargs)


@operation()
def _secret_put(dest: str, content: str, mode: str, user: str, group: str):
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
