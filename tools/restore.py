#!/usr/bin/env python3
"""Restores from the control node, over SSH as the deploy account.

    python -m tools.restore ENV pitr '<timestamp with zone>' [--yes]
    python -m tools.restore ENV drill
    (make restore ENV=... TARGET_TIME='...' [YES=1] / make restore-drill ENV=...)

pitr: point-in-time restore of the storage host's PostgreSQL cluster (codeb-pitr on the
host: archive the current WAL, stop PowerDNS and PostgreSQL, pgBackRest restore --delta
--type=time, start PostgreSQL, wait for promotion, start PowerDNS, check the databases).
It replaces the cluster's current contents: it asks first unless --yes (YES=1).

drill: the restore drill on the backup host (codeb-restore-drill): latest backup into a
scratch cluster, started on a spare port, queried, removed; prints result and duration.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

from codeb import ssh
from codeb.inventory import read_inventory

# An ISO-like timestamp with an explicit zone (offset or name): the restore must not
# depend on the time zone of whoever types it.
TARGET_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?\s*([+-]\d{2}(:?\d{2})?|Z|UTC|[A-Za-z_]+/[A-Za-z_]+)$")


def hosts_of(env: str, group: str) -> list[tuple[str, dict]]:
    """(name, inventory data) of the environment's hosts in a group."""
    return [(h.name, h.data) for h in read_inventory(env)[group]]


def normalise_target(target: str) -> str:
    target = target.strip()
    if not TARGET_RE.fullmatch(target):
        raise SystemExit(f"error: TARGET_TIME {target!r} must be a timestamp with a zone, "
                         "e.g. '2025-01-31 14:05:00+09' or '2025-01-31T05:05:00Z'")
    return target[:-1] + "+00" if target.endswith("Z") else target


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="restore", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("env")
    p.add_argument("what", choices=("pitr", "drill"))
    p.add_argument("target", nargs="?")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    args = p.parse_args(argv)

    if args.what == "drill":
        (name, data), *_ = hosts_of(args.env, "backup")
        print(f"[restore-drill] on {name}", flush=True)
        return subprocess.run(ssh.command(data, "sudo /usr/local/sbin/codeb-restore-drill")).returncode

    if not args.target:
        raise SystemExit("usage: make restore ENV=<env> TARGET_TIME='<timestamp with zone>' [YES=1]")
    target = normalise_target(args.target)
    (name, data), *_ = hosts_of(args.env, "storage")
    if not args.yes:
        if not sys.stdin.isatty():
            raise SystemExit("error: no terminal to confirm on; pass YES=1 to restore without asking")
        answer = input(f"Restore the PostgreSQL cluster on {name} ({args.env}) to {target}?\n"
                       f"Everything committed after that time is lost. Type the host name to confirm: ")
        if answer.strip() != name:
            print("not confirmed; nothing was done")
            return 1
    quoted = "'" + target.replace("'", "'\"'\"'") + "'"
    print(f"[restore] {name}: point-in-time restore to {target}", flush=True)
    return subprocess.run(ssh.command(data, f"sudo /usr/local/sbin/codeb-pitr {quoted}")).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
