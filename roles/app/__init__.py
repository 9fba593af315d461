"""App hosts: Podman + Quadlet units per registry instance, env files, Caddy sites.

Each instance (project x environment) gets two Quadlet units, blue and green, on
its slot ports. Which slot is active and which image each slot runs is release
state kept on the host (/var/lib/platform/releases/<instance>.json), written by
`make release` / `make rollback`; an apply renders from that state and never
flips traffic. Only the active slot runs. Instances that left the registry lose
their units, env file and site (their volumes are kept).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.facts.files import FindFiles
from pyinfra.operations import apt, files, server, systemd

from codeb import derive, pki
from codeb.registry import SLOTS
from roles.app import render as r
from roles.caddy import caddy
from roles.files import put, put_secret
from roles.topology import group_addrs, group_hosts

PACKAGES = ["podman", "crun", "conmon", "netavark", "aardvark-dns", "catatonit", "curl"]
ENV_DIR = "/etc/platform/apps"
STATE_DIR = "/var/lib/platform/releases"


class ReleaseStates(FactBase):
    """{instance name: state file text} of the release state files on the host."""

    def command(self, path=STATE_DIR):
        return (f"for f in {path}/*.json; do [ -f \"$f\" ] || continue; "
                "printf '=== %s\\n' \"$(basename \"$f\" .json)\"; cat \"$f\"; echo; done; true")

    def process(self, output):
        states: dict[str, list[str]] = {}
        current = None
        for line in output:
            if line.startswith("=== "):
                current = line[4:].strip()
                states[current] = []
            elif current is not None:
                states[current].append(line)
        return {name: "\n".join(lines).strip() for name, lines in states.items()}


def app_instances(data, groups) -> list:
    return [i for i in data.projects.instances if i.group in groups]


def _addrs():
    addrs = group_addrs()
    return addrs["app"], addrs["storage"][0], addrs["streaming"][0]


def _storage_name() -> str:
    """The database host's name: in its TLS certificate, resolved to its private address."""
    first = group_addrs()["storage"][0]  # the address _addrs() gives the apps
    return next(h.name for h in group_hosts("storage") if h.data.private_ip == first)


@deploy("Podman and Quadlet")
def podman():
    data = host.data
    apt.packages(name="Podman packages", packages=PACKAGES, update=True, cache_time=3600, no_recommends=True)
    put(r.CONTAINERS_CONF, r.containers_conf(data))
    put(r.REGISTRIES_CONF, r.registries_conf(data))
    auth = data.get("container_registry_auth")
    if auth:
        token = data.secrets.get(derive.SECRET_CONTAINER_REGISTRY_TOKEN)
        if not token:
            raise SystemExit(f"error: container_registry_auth is set but the secret "
                             f"{derive.SECRET_CONTAINER_REGISTRY_TOKEN} is missing for {data.environment}")
        put_secret(r.AUTH_FILE, derive.registry_auth_json(auth["registry"], auth["username"], token))
    else:
        files.file(name="No registry credentials", path=r.AUTH_FILE, present=False)


@deploy("App instances")
def app():
    data = host.data
    podman()
    app_addrs, storage_addr, streaming_addr = _addrs()
    self_addr = data.private_ip
    instances = app_instances(data, host.groups)

    files.directory(name=ENV_DIR, path=ENV_DIR, user="root", group="root", mode="700")
    files.directory(name="/etc/codeb", path="/etc/codeb", user="root", group="root", mode="755")
    put(derive.PLATFORM_CA_FILE, pki.ca_pem(data.environment, data.get("backup_ca"), data.secrets), "644")
    files.directory(name=STATE_DIR, path=STATE_DIR, user="root", group="root", mode="755")
    files.directory(name=r.QUADLET_DIR, path=r.QUADLET_DIR, user="root", group="root", mode="755")

    states = host.get_fact(ReleaseStates) or {}
    unit_changes, per_instance, sites = [], [], {}
    for inst in instances:
        state = r.parse_state(states.get(inst.name), inst, data)
        env_op = put_secret(derive.env_file_path(inst),
                            r.env_file(inst, data, data.secrets, storage_addr, streaming_addr, _storage_name()))
        put(derive.release_state_path(inst), r.state_text(state))
        units = r.units_for_state(inst, state, data, app_addrs, self_addr)
        # A unit Quadlet rejects never reaches the unit directory.
        ops = {path: put(path, text, validate=r.quadlet_check(PurePosixPath(path).name))
               for path, text in units.items()}
        unit_changes.extend(ops.values())
        per_instance.append((inst, state, env_op, ops[r.unit_file(inst, state["active"])]))
        sites[r.site_name(inst)] = r.site(inst, state["active"], data, app_addrs, self_addr)

    # Instances that left the registry: stop and remove their units and env file.
    wanted_units = {PurePosixPath(r.unit_file(i, s)).name for i in instances for s in SLOTS}
    existing = host.get_fact(FindFiles, path=r.QUADLET_DIR, quote_path=True) or []
    for path in sorted(existing):
        name = PurePosixPath(path).name
        if name.endswith(".container") and name not in wanted_units:
            service = name.removesuffix(".container") + ".service"
            server.shell(name=f"Stop removed unit {service}",
                         commands=[f"systemctl stop {service} || true"])
            unit_changes.append(files.file(name=f"Remove unit {path}", path=path, present=False))
    wanted_env = {PurePosixPath(derive.env_file_path(i)).name for i in instances}
    for path in sorted(host.get_fact(FindFiles, path=ENV_DIR, quote_path=True) or []):
        if path.endswith(".env") and PurePosixPath(path).name not in wanted_env:
            files.file(name=f"Remove env file {path}", path=path, present=False)

    def units_changed():
        return any(op.did_change() for op in unit_changes)

    # A unit Quadlet rejects never reaches systemd.
    server.shell(name="Check Quadlet units (quadlet -dryrun)",
                 commands=[f"{r.QUADLET} -dryrun > /dev/null"], _if=units_changed)
    systemd.daemon_reload(name="systemd daemon-reload (Quadlet generator)", _if=units_changed)

    for inst, state, env_op, active_unit in per_instance:
        active, idle = state["active"], derive.other_slot(state["active"])
        # A changed env file or active unit restarts this instance only.
        systemd.service(name=f"Restart {r.service(inst, active)} (env or unit changed)",
                        service=r.service(inst, active), restarted=True,
                        _if=lambda e=env_op, u=active_unit: e.did_change() or u.did_change())
        systemd.service(name=f"{r.service(inst, active)} running (active slot)",
                        service=r.service(inst, active), running=True)
        systemd.service(name=f"{r.service(inst, idle)} stopped (idle slot)",
                        service=r.service(inst, idle), running=False)

    caddy(sites=sites)
