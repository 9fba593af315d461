"""Read the inventory's shape (hosts per group, their private and public addresses).

Every host has a private address (`private_ip`, on the private network: the WireGuard
mesh, or a provider VPC) and a public one (`public_ip`, where SSH and the public
services answer). Internal services bind to and talk over the private address only.

Each function takes an Inventory; by default pyinfra's current one, so unit
tests can pass an inventory they loaded without connecting.

The control node's commands read inventory files with read_inventory() (hosts per group
with their data) and, where they render what the apply renders, load_pyinfra_inventory().
"""

from __future__ import annotations

import contextlib
import os
import runpy
from dataclasses import dataclass
from pathlib import Path

from pyinfra import inventory as _current

from codeb.registry import HOST_GROUPS


def group_hosts(group: str, inv=None) -> list:
    return list((_current if inv is None else inv).get_group(group, default=[]))


def group_addrs(inv=None) -> dict[str, list[str]]:
    return {g: sorted(h.data.private_ip for h in group_hosts(g, inv)) for g in HOST_GROUPS}


def platform_hosts(inv=None) -> list[tuple[str, str]]:
    """(name, private address) of every host of the inventory."""
    seen = {}
    for g in HOST_GROUPS:
        for h in group_hosts(g, inv):
            seen[h.name] = h.data.private_ip
    return sorted(seen.items())


def public_ip(h) -> str:
    return h.data.get("public_ip") or h.data.get("ssh_hostname") or h.name


def public_group_addrs(inv=None) -> dict[str, list[str]]:
    return {g: sorted(public_ip(h) for h in group_hosts(g, inv)) for g in HOST_GROUPS}


def public_platform_hosts(inv=None) -> list[tuple[str, str]]:
    """(name, public address) of every host of the inventory."""
    seen = {}
    for g in HOST_GROUPS:
        for h in group_hosts(g, inv):
            seen[h.name] = public_ip(h)
    return sorted(seen.items())


def mesh_peers(inv=None) -> list[dict]:
    """Every host of the inventory as a private-network peer: name, private and public address."""
    seen = {}
    for g in HOST_GROUPS:
        for h in group_hosts(g, inv):
            seen[h.name] = {"name": h.name, "private_ip": h.data.private_ip, "public_ip": public_ip(h)}
    return [seen[n] for n in sorted(seen)]


# --- inventory files, read on the control node ---------------------------------------------------
# The control-node commands (tools.run, tools.health, tools/, bench/, the lab harness and the
# topology tests) read an inventory file here, and only here: hosts per group with their data.

REPO = Path(__file__).resolve().parent.parent


def inventory_path(inventory: str | Path) -> Path:
    """The file of an inventory: `local` is inventory/local.py; a path (anything with a `/` or
    ending in .py) is taken as given, relative to the repository unless absolute."""
    text = str(inventory)
    if "/" not in text and not text.endswith(".py"):
        return REPO / "inventory" / f"{text}.py"
    path = Path(text)
    return path if path.is_absolute() else REPO / path


@dataclass(frozen=True, eq=False)
class Host:
    """One host of an inventory file: its name, its data (as written there) and its groups."""

    name: str
    data: dict
    groups: tuple[str, ...]

    @property
    def public_ip(self) -> str:
        """Where the control node reaches it (SSH and the public services)."""
        return public_ip(self)

    @property
    def private_ip(self) -> str:
        return self.data["private_ip"]


@contextlib.contextmanager
def _shape_only():
    """environment_group() without its checks while a file is read for its hosts only."""
    from codeb import preflight

    real = preflight.environment_group
    preflight.environment_group = lambda env, groups: (preflight.host_names(groups), {})
    try:
        yield
    finally:
        preflight.environment_group = real


def read_inventory(inventory: str | Path = "local", *, validate: bool = True) -> dict[str, list[Host]]:
    """Hosts per host group (every group of HOST_GROUPS, in that order), each group's hosts in
    inventory order. A host in several groups is the same Host in each, with all its groups.

    validate=True runs the file as pyinfra does: environment_group() checks the registry, the
    inventory, the environment's data, the pinned binaries and the secrets, and exits on a
    problem. validate=False reads the hosts alone (the lab harness, the topology tests)."""
    with contextlib.nullcontext() if validate else _shape_only():
        namespace = runpy.run_path(str(inventory_path(inventory)))
    entries: dict[str, dict] = {}
    groups_of: dict[str, list[str]] = {}
    for group in HOST_GROUPS:
        for entry in namespace.get(group, []):
            name, data = entry if isinstance(entry, tuple) else (entry, {})
            entries.setdefault(name, data)
            groups_of.setdefault(name, []).append(group)
    hosts = {name: Host(name, entries[name], tuple(groups_of[name])) for name in entries}
    return {g: [hosts[n] for n in hosts if g in hosts[n].groups] for g in HOST_GROUPS}


def unique_hosts(groups: dict[str, list[Host]]) -> dict[str, Host]:
    """name -> Host, every host once, in group order then inventory order."""
    return {h.name: h for g in HOST_GROUPS for h in groups.get(g, [])}


def load_pyinfra_inventory(inventory: str | Path):
    """pyinfra's Inventory of an inventory file with the group data, built offline (no host is
    contacted). Secrets are placeholders (CODEB_RENDER_ONLY), which deploy.py refuses to apply:
    for commands that render what the apply renders but read no secret (tools/release.py)."""
    from pyinfra.api import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    before = os.environ.get("CODEB_RENDER_ONLY")
    os.environ["CODEB_RENDER_ONLY"] = "1"
    try:
        with ctx_state.use(State()):
            return make_inventory(str(inventory_path(inventory)), cwd=str(REPO),
                                  group_data_directories=[str(REPO / "group_data")])
    finally:
        if before is None:
            del os.environ["CODEB_RENDER_ONLY"]
        else:
            os.environ["CODEB_RENDER_ONLY"] = before
