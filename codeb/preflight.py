"""Checks that run while pyinfra loads an inventory, before any host is contacted.

An inventory file ends with `<env> = environment_group("<env>", globals())`, which
validates the registry, the inventory's groups, the environment's data, the pinned
binaries built by `make artifacts` and the environment's secrets and
returns the env group (all hosts, plus the secrets as group data). On any problem
it prints one line per problem and exits non-zero, so pyinfra never connects.
"""

from __future__ import annotations

import os
import re
import runpy
import sys
from pathlib import Path

from . import artifacts, derive, registry, secrets
from .registry import HOST_GROUPS

ENVIRONMENTS = ("production", "staging", "local")


def _fail(problems: list[str]) -> None:
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    print(f"error: {len(problems)} problem(s); nothing was applied, no host was contacted", file=sys.stderr)
    raise SystemExit(2)


def check_inventory(groups: dict) -> list[str]:
    problems = []
    for name, hosts in groups.items():
        if name.startswith("_") or not isinstance(hosts, (list, tuple)) or name in ENVIRONMENTS:
            continue
        if name not in HOST_GROUPS:
            problems.append(f"inventory: group {name!r} is not a known host group ({', '.join(HOST_GROUPS)})")
            continue
        for entry in hosts:
            host, data = entry if isinstance(entry, tuple) else (entry, {})
            if not data.get("private_ip"):
                problems.append(f"inventory: host {host!r} in group {name!r} has no 'private_ip'")
    for group in HOST_GROUPS:
        if not groups.get(group):
            problems.append(f"inventory: group {group!r} has no host")
    return problems


SSH_KEY_RE = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]+( .*)?$")


def check_environment_data(env: str) -> list[str]:
    """The env group's data file must define what every apply relies on."""
    path = Path(__file__).resolve().parent.parent / "group_data" / f"{env}.py"
    if not path.exists():
        return [f"environment: {path.name} does not exist"]
    data = runpy.run_path(str(path))
    where = f"group_data/{env}.py"
    problems = []
    if data.get("environment") != env:
        problems.append(f"{where}: 'environment' must be {env!r}")
    if not registry.valid_domain(data.get("platform_domain") or ""):
        problems.append(f"{where}: 'platform_domain' is missing or malformed")
    if not data.get("admin_networks"):
        problems.append(f"{where}: 'admin_networks' is empty: nobody could reach SSH")
    key = data.get("deploy_ssh_public_key")
    if not key or not SSH_KEY_RE.match(key):
        problems.append(
            f"{where}: 'deploy_ssh_public_key' is not set to an SSH public key "
            "(the deploy account's key; for local, `make up` generates it)"
        )
    return problems


def host_names(groups: dict) -> list[str]:
    names = []
    for group in HOST_GROUPS:
        for entry in groups.get(group, []):
            host = entry[0] if isinstance(entry, tuple) else entry
            if host not in names:
                names.append(host)
    return names


def environment_group(env: str, groups: dict) -> tuple[list[str], dict]:
    """Validate everything an apply needs and return `(hosts, {"secrets": ...})`."""
    problems = []
    try:
        reg = registry.load()
    except registry.RegistryError as exc:
        problems.extend(exc.problems)
        reg = None
    problems.extend(check_inventory(groups))
    render_only = os.environ.get("CODEB_RENDER_ONLY") == "1"
    if not render_only:
        problems.extend(check_environment_data(env))
    if not render_only and not problems:
        # The binaries the deploy uploads are built before pyinfra runs (`make artifacts`).
        problems.extend(artifacts.check(env))
    if problems:
        _fail(problems)
    if render_only:
        # Unit tests render every template for every inventory without real
        # secrets; deploy.py refuses to apply such an inventory.
        names = derive.required_secrets(reg.instances)
        return host_names(groups), {"secrets": {n: f"placeholder-{n}" for n in names}, "render_only": True}
    try:
        values = secrets.load(env, derive.required_secrets(reg.instances))
        # Optional names (e.g. registry credentials) pass through where an environment has them.
        present = secrets.read(env)
        values.update({n: present[n] for n in derive.OPTIONAL_SECRETS if n in present})
    except secrets.SecretsError as exc:
        _fail([str(exc)])
    return host_names(groups), {"secrets": values}
