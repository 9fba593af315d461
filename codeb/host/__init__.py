"""Host-side code shared by several services: static files installed on hosts as they are.

`prom-write.sh` is the shell library behind every node-exporter textfile a shell program
of the platform writes (`prom_write NAME <<PROM ... PROM`, atomic). It is installed once
per host at PROM_WRITE by the first service that needs it (`install_prom_write`: the
pgBackRest repository and the file backups) and sourced by the programs, which find it
through their configuration file (PROM_WRITE=..., TEXTFILE_DIR=...).

`shell_config` renders those configuration files: bash-sourceable KEY=value lines with
every value quoted (shlex.quote), so no value can run as code when a program sources it.
"""

from __future__ import annotations

import shlex
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyinfra.context import ctx_host
from pyinfra.operations import files

from codeb.files import put

LIB_DIR = "/usr/local/lib/codeb"
PROM_WRITE = f"{LIB_DIR}/prom-write.sh"
PROM_WRITE_SOURCE = Path(__file__).with_name("prom-write.sh")

_installed: weakref.WeakSet = weakref.WeakSet()  # hosts of this run that already have it


def shell_config(values: Mapping[str, object], header: str) -> str:
    """A bash-sourceable configuration file: `# header` lines, then KEY=value per item, each
    value shell-quoted; a list or tuple becomes a bash array KEY=(...)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in values.items():
        if not key.isidentifier() or not key.isascii():
            raise ValueError(f"shell_config: {key!r} is not a shell variable name")
        if isinstance(value, Sequence) and not isinstance(value, str):
            lines.append(f"{key}=({' '.join(shlex.quote(str(v)) for v in value)})")
        else:
            lines.append(f"{key}={shlex.quote(str(value))}")
    return "\n".join(lines) + "\n"


def install_prom_write():
    """Install the textfile library (and its directory) on this host, once per apply."""
    current = ctx_host.get()
    if current in _installed:
        return
    _installed.add(current)
    files.directory(name="codeb helpers directory", path=LIB_DIR, user="root", group="root", mode="755")
    put(PROM_WRITE, PROM_WRITE_SOURCE.read_text(), "644")
