"""A join point across hosts in pyinfra's operation graph.

pyinfra orders each host's operations, and orders operations of different hosts
only where they are the same operation (same defining call stack). An operation
that every host defines at the same place is therefore a barrier: nothing after
it starts on any host before everything before it has finished on all hosts.
That is how "storage before backup before streaming before app" holds across
hosts, e.g. the backup host's stanza-create waits for the database host's
archiving and pgBackRest server.
"""

from pyinfra.operations import server


def barrier(label: str):
    # Skipped at run time (never a change), but present on every host's graph.
    return server.shell(name=f"--- {label} ---", commands=["true"], _if=lambda: False)
