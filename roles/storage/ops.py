"""Operations shared by the storage modules.

`converge` is how registry-derived state inside a service (database roles, buckets,
DNS records) is applied idempotently: a read-only state command runs on the host at
execution time (after the operations before it), and the apply command runs only when
that state differs from what the registry wants, or when one of `triggers` changed
(e.g. the uploaded file that holds the wanted state). No change, no command, so a
second apply reports nothing.
"""

from __future__ import annotations

from pyinfra import host, state
from pyinfra.api import FactBase, operation

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


def apply_when_changed(name: str, files: list[str], marker: str, command: str):
    """Run `command` (a check, then a reload/restart) until it has succeeded for the current
    content of `files`: a marker holds their checksums after each success, so a
    reload that failed validation is retried on the next apply, and an unchanged file
    triggers nothing."""
    listing = " ".join(files)
    return converge(
        name=name,
        state_command=f"sha256sum {listing} | cmp -s - {marker} || echo stale",
        apply_command=f"{command} && sha256sum {listing} > {marker}",
    )
