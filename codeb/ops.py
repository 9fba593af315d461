"""Operations every service shares.

- `converge`: registry-derived state inside a service, applied idempotently.
- `restart_on_change`: the one restart pattern (changed -> validate -> reload or restart).
- `unit`, `timer`, `install_units`: the platform's systemd jobs; `host_tls`: a host's
  certificate from the environment's CA.

`converge` is how registry-derived state inside a service (database roles, buckets,
DNS records) is applied idempotently: a read-only state command runs on the host at
execution time (after the operations before it), and the apply command runs only when
that state differs from what the registry wants, or when one of `triggers` changed
(e.g. the uploaded file that holds the wanted state). No change, no command, so a
second apply reports nothing.
"""

from __future__ import annotations

import hashlib

from pyinfra import host, state
from pyinfra.api import FactBase, operation
from pyinfra.operations import files

from codeb import pki, shared
from codeb.files import put, put_secret
from codeb.render import render_shared

UNAVAILABLE = "state-unavailable"


class StateLines(FactBase):
    """Non-empty output lines of a read-only command; a failing command (service not
    installed or not running yet) yields a single UNAVAILABLE line, never an error."""

    def command(self, command: str) -> str:
        return f"( {command} ) 2>/dev/null || echo {UNAVAILABLE}"

    def default(self):
        return []

    def process(self, output):
        return [line.strip() for line in output if line.strip()]


def _changed(meta) -> bool:
    if meta is None:
        return False
    if state.is_executing and meta.is_complete():
        return meta.did_change()
    return bool(meta.will_change)


@operation(is_idempotent=True)
def converge(state_command: str, apply_command: str, expected: list[str] | None = None, triggers=()):
    """Run `apply_command` when the lines printed by `state_command` differ from `expected`
    (compared as sorted lists; with expected=None, any line means work to do), or when
    an operation in `triggers` changed something."""
    lines = host.get_fact(StateLines, command=state_command) or []
    if expected is None:
        drift = bool(lines)
    else:
        drift = sorted(lines) != sorted(expected)
    if drift or any(_changed(t) for t in triggers):
        yield apply_command


APPLIED = "/var/lib/codeb/applied"


def restart_on_change(name: str, files: list[str], command: str, *, marker: str, validate: str | None = None,
                      **op_args):
    """The platform's one restart pattern: changed -> validate -> reload or restart.

    When the content of `files` differs from the content `command` last succeeded with (a
    marker holds their checksums), run `validate` (the service's own checker), then
    `command` (a reload or a restart, and any wait for readiness), then record the new
    checksums. So an unchanged file triggers nothing; a change that fails validation never
    reaches the running service and is retried by the next apply; and an apply interrupted
    after writing a file but before the reload still reloads on the re-run (a trigger held
    only in memory, like `_if=op.did_change`, would be lost).

    `marker`: a file under APPLIED (or the service's own state directory, where it had one
    before: a new path would make every host restart once for nothing). `op_args`: pyinfra's
    global arguments, e.g. `_serial=True` to restart one host at a time.
    """
    state_command, apply_command = restart_commands(files, command, marker=marker, validate=validate)
    return converge(name=name, state_command=state_command, apply_command=apply_command, **op_args)


def restart_commands(files: list[str], command: str, *, marker: str, validate: str | None = None) -> tuple[str, str]:
    """(state command, apply command) of restart_on_change: the state command prints a line
    when the files differ from the marker; the apply command validates, runs `command`, and
    records the files only when both succeeded."""
    check = f"( {validate} ) && " if validate else ""
    return (f"{checksums(files)} | cmp -s - {marker} || echo stale",
            f"{check}{command} && {record(files, marker)}")


def checksums(files: list[str]) -> str:
    """The command printing the checksums restart_on_change compares (shell globs allowed; a
    missing file is left out, so removing one is a change too)."""
    return f"sha256sum {' '.join(files)} 2>/dev/null"


def record(files: list[str], marker: str) -> str:
    """The command recording `files` as applied (for a program that reloads a service itself,
    like `make release` does for Caddy, so the next apply does not reload it again)."""
    return f"{{ {checksums(files)} > {marker} || true; }}"


def applied_directory():
    """Where restart_on_change keeps its markers (root only: they hold checksums of secrets)."""
    return files.directory(name=APPLIED, path=APPLIED, user="root", group="root", mode="700")


# --- systemd units and timers of the platform's jobs, host certificates -------------------

UNITS = "/etc/systemd/system"
SBIN = "/usr/local/sbin"


def unit(description: str, exec_start: str, **kw) -> str:
    """A service unit of the platform (codeb/templates/unit.service.j2)."""
    return render_shared("unit.service.j2", description=description, exec_start=exec_start, **kw)


def timer(description: str, calendar: list[str], unit_name: str, jitter: str = "0") -> str:
    return render_shared("unit.timer.j2", description=description, calendar=calendar, unit=unit_name, jitter=jitter)


def install_units(rendered: dict[str, str], label: str):
    """Upload programs under SBIN (755) and units (644); daemon-reload when a unit changed."""
    units = []
    for dest, text in sorted(rendered.items()):
        if dest.startswith(UNITS):
            put(dest, text, "644")
            units.append(dest)
        elif dest.startswith(SBIN):
            put(dest, text, "755")
    if units:
        # One marker per set of units: two callers on one host never share (and fight over) one.
        key = hashlib.sha256("\n".join(units).encode()).hexdigest()[:12]
        restart_on_change(f"systemd daemon-reload ({label} units)", units, "systemctl daemon-reload",
                          marker=f"{APPLIED}/daemon-reload.{key}")


def host_tls(data, dest_dir: str, owner: str, group: str):
    """This host's certificate and key from the environment's CA, and the CA, under dest_dir."""
    issued = pki.issue(data.environment, data.get("backup_ca"), host.name,
                       shared.tls_names(host.name, data.platform_domain), data.secrets)
    files.directory(name=dest_dir, path=dest_dir, user="root", group=group, mode="750")
    return [
        put(f"{dest_dir}/ca.crt", issued.ca, "644"),
        put(f"{dest_dir}/host.crt", issued.cert, "644"),
        put_secret(f"{dest_dir}/host.key", issued.key, "640" if owner == "root" else "600", user=owner, group=group),
    ]


def host_names(group: str, hosts, addrs) -> list[str]:
    """Names of the hosts of `group`, from (name, address) pairs and the group's addresses."""
    wanted = set(addrs.get(group, []))
    return sorted(n for n, a in hosts if a in wanted)
