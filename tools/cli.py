"""Control-node commands behind the Makefile.

    python -m tools.cli validate          # the registry, one line per problem
    python -m tools.cli ports             # the port manifest
    python -m tools.cli secrets ENV       # create or extend ENV's secrets (never rotates)
    python -m tools.cli team              # the team registry and what each role grants
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from codeb import registry, secrets, shared

REPO = Path(__file__).resolve().parent.parent


def _registry() -> registry.Registry:
    try:
        return registry.load()
    except registry.RegistryError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_validate() -> None:
    reg = _registry()
    print(f"registry ok: {len(reg.instances)} app instances")


def cmd_ports() -> None:
    reg = _registry()
    rows = [("PROJECT", "ENVIRONMENT", "SLOT", "PORT", "DOMAINS")]
    for inst in sorted(reg.instances, key=lambda i: i.port):
        for slot, port in inst.slot_ports.items():
            rows.append((inst.project, inst.env, slot, str(port), ",".join(inst.domains)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cmd_secrets(env: str) -> None:
    reg = _registry()
    try:
        added = secrets.ensure(env, shared.required_secrets(reg.instances))
    except secrets.SecretsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # Names only: values are never printed.
    print(f"secrets for {env}: {len(added)} added" + (f" ({', '.join(added)})" if added else ""))


def cmd_team() -> None:
    data = runpy.run_path(str(REPO / "group_data" / "all.py"))
    for person in data["team"]:
        keys = len(person.get("ssh_keys", []))
        grant = data["team_roles"][person["role"]]
        print(f"{person['name']:12} {person['role']:10} {grant}" + (f" ({keys} key(s))" if person["role"] == "admin" else ""))


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    cmd, *args = argv
    commands = {"validate": cmd_validate, "ports": cmd_ports, "secrets": cmd_secrets, "team": cmd_team}
    if cmd not in commands:
        raise SystemExit(__doc__)
    commands[cmd](*args)


if __name__ == "__main__":
    main(sys.argv[1:])
