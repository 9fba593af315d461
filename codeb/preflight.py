"""Checks that run while pyinfra loads an inventory, before any host is contacted.

An inventory file ends with `<env> = environment_group("<env>", globals())`, which
validates the registry, the inventory's groups, the environment's data, the pinned
binaries built by `make artifacts` and the environment's secrets and
returns the env group (all hosts, plus the secrets as group data). On any problem
it prints one line per problem and exits non-zero, so pyinfra never connects.
"""

from __future__ import annotations

import ipaddress
import os
import re
import runpy
import sys
from pathlib import Path

from . import artifacts, registry, secrets, shared
from .registry import HOST_GROUPS

ENVIRONMENTS = ("production", "staging", "local")
# Environments on the internet: SSH there is never open to everyone.
PUBLIC_ENVIRONMENTS = ("production", "staging")


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
    problems.extend(check_admin_networks(env, data.get("admin_networks")))
    key = data.get("deploy_ssh_public_key")
    if not key or not SSH_KEY_RE.fullmatch(key):
        problems.append(
            f"{where}: 'deploy_ssh_public_key' is not set to an SSH public key "
            "(the deploy account's key; for local, `make up` generates it)"
        )
    return problems


def setting(env: str, key: str):
    """A group-data value as the env's hosts see it: group_data/<env>.py, else all.py."""
    base = Path(__file__).resolve().parent.parent / "group_data"
    for name in (env, "all"):
        path = base / f"{name}.py"
        if path.exists():
            data = runpy.run_path(str(path))
            if key in data:
                return data[key]
    return None


def check_admin_networks(env: str, networks) -> list[str]:
    """SSH (and every admin path) is open only to these: explicit networks, never everyone."""
    where = f"group_data/{env}.py"
    if not networks:
        return [f"{where}: 'admin_networks' is empty: nobody could reach SSH"]
    problems = []
    for net in networks:
        try:
            parsed = ipaddress.ip_network(net, strict=False)
        except ValueError:
            problems.append(f"{where}: 'admin_networks' entry {net!r} is not a network")
            continue
        if parsed.prefixlen == 0 and env in PUBLIC_ENVIRONMENTS:
            problems.append(f"{where}: 'admin_networks' entry {net!r} opens SSH to the whole internet; "
                            "list the admins' and CI's networks")
    return problems


def check_addresses(groups: dict, network: str) -> list[str]:
    """Every host has a public address and a private one inside the private network, and
    the two differ: nothing internal may end up on a public address."""
    problems = []
    private_net = ipaddress.ip_network(network)
    seen: dict[str, str] = {}
    for name, hosts in groups.items():
        if name not in HOST_GROUPS or not isinstance(hosts, (list, tuple)):
            continue
        for entry in hosts:
            host, data = entry if isinstance(entry, tuple) else (entry, {})
            private, public = data.get("private_ip"), data.get("public_ip")
            where = f"inventory: host {host!r}"
            if not public:
                problems.append(f"{where} has no 'public_ip'")
            try:
                if ipaddress.ip_address(private) not in private_net:
                    problems.append(f"{where}: 'private_ip' {private} is outside the private network {network}")
            except ValueError:
                problems.append(f"{where}: 'private_ip' {private!r} is not an address")
                continue
            if public == private:
                problems.append(f"{where}: 'private_ip' equals 'public_ip': internal services would be public")
            if seen.setdefault(private, host) != host:
                problems.append(f"{where}: 'private_ip' {private} is also {seen[private]!r}'s")
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
    if reg is not None and not problems:
        problems.extend(check_addresses(groups, setting(env, "private_network")))
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
        names = shared.required_secrets(reg.instances)
        return host_names(groups), {"secrets": {n: f"placeholder-{n}" for n in names}, "render_only": True}
    try:
        values = secrets.load(env, shared.required_secrets(reg.instances))
        # Optional names (e.g. registry credentials) pass through where an environment has them.
        present = secrets.read(env)
        values.update({n: present[n] for n in shared.OPTIONAL_SECRETS if n in present})
    except secrets.SecretsError as exc:
        _fail([str(exc)])
    shape = shared.s3_secret_problems(reg.instances, values)
    if shape:
        _fail(shape)
    return host_names(groups), {"secrets": values}
