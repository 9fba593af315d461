"""App hosts: Podman + Quadlet units per registry instance, env files, Caddy sites.

Each instance (project x environment) gets two Quadlet units, blue and green, on
its slot ports. Which slot is active and which image each slot runs is release
state kept on the host (/var/lib/platform/releases/<instance>.json), written by
`make release` / `make rollback`; an apply renders from that state and never
flips traffic, except for a changed env file (new credentials, a moved service): that
reaches the app through the same switch as a release, never a restart in place. The
idle slot starts with the active slot's image and the new env file, becomes healthy,
Caddy switches to it, and the old slot stops after the drain. A running container older
than its env file (an interrupted apply, an apply of another release) switches too.
Only the active slot runs. Instances that left the registry lose their units, env file
and site (their volumes are kept).
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.facts.files import FindFiles
from pyinfra.operations import apt, files, server, systemd

from codeb import pki, shared
from codeb.files import ManagedFile, is_current, put, put_secret
from codeb.inventory import group_addrs, group_hosts
from codeb.registry import SLOTS
from services.app import render as r
from services.caddy import caddy

from . import model

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


class StaleEnv(FactBase):
    """Instances whose running container (`<instance>-<slot>`) started before its env file
    was last written: it runs with another environment than the file's."""

    def command(self, pairs):
        checks = [f"c=$(podman inspect -f '{{{{.State.Running}}}} {{{{.State.StartedAt.UnixNano}}}}' {c} "
                  f"2>/dev/null); e=$(stat -c %.9Y {env} 2>/dev/null | tr -d .); "
                  f"case \"$c\" in true\\ *) [ -n \"$e\" ] && [ \"$e\" -gt \"${{c#true }}\" ] && echo {name};; esac"
                  for name, c, env in pairs]
        return "; ".join([*checks, "true"])

    def process(self, output):
        return [line.strip() for line in output if line.strip()]


def env_switch(state: dict) -> dict:
    """The release state after an env-only switch: the idle slot takes the active slot's image."""
    active = state["active"]
    idle = model.other_slot(active)
    return {"active": idle, "previous": active, "slots": dict(state["slots"], **{idle: state["slots"][active]})}


def app_instances(data, groups) -> list:
    return [i for i in data.projects.instances if i.group in groups]


def peer_states() -> dict[str, str]:
    """{instance: state file text} from the other app hosts (the first that has each)."""
    out: dict[str, str] = {}
    for other in group_hosts("app"):
        if other.name != host.name:
            for name, text in (other.get_fact(ReleaseStates) or {}).items():
                out.setdefault(name, text)
    return out


def _addrs():
    addrs = group_addrs()
    return addrs["app"], addrs["storage"][0], addrs["streaming"]


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
        token = data.secrets.get(shared.SECRET_CONTAINER_REGISTRY_TOKEN)
        if not token:
            raise SystemExit(f"error: container_registry_auth is set but the secret "
                             f"{shared.SECRET_CONTAINER_REGISTRY_TOKEN} is missing for {data.environment}")
        put_secret(r.AUTH_FILE, model.registry_auth_json(auth["registry"], auth["username"], token))
    else:
        files.file(name="No registry credentials", path=r.AUTH_FILE, present=False)


@deploy("App instances")
def app():
    data = host.data
    podman()
    app_addrs, storage_addr, streaming_addrs = _addrs()
    self_addr = data.private_ip
    instances = app_instances(data, host.groups)

    files.directory(name=ENV_DIR, path=ENV_DIR, user="root", group="root", mode="700")
    files.directory(name="/etc/codeb", path="/etc/codeb", user="root", group="root", mode="755")
    put(shared.PLATFORM_CA_FILE, pki.ca_pem(data.environment, data.get("backup_ca"), data.secrets), "644")
    files.directory(name=STATE_DIR, path=STATE_DIR, user="root", group="root", mode="755")
    files.directory(name=r.QUADLET_DIR, path=r.QUADLET_DIR, user="root", group="root", mode="755")

    states = host.get_fact(ReleaseStates) or {}
    # A host joining the group takes over the release state the other app hosts run (active
    # slot and images); on its own it would start every instance on the initial blue slot,
    # while the others' Caddy sends that instance's traffic to the slot they run.
    peers = peer_states() if any(i.name not in states for i in instances) else {}
    parsed = {i.name: r.parse_state(states.get(i.name) or peers.get(i.name), i, data) for i in instances}
    stale = set(host.get_fact(StaleEnv, pairs=[
        (i.name, model.unit_name(i, parsed[i.name]["active"]), model.env_file_path(i))
        for i in instances if i.name in states]) or [])
    unit_changes, per_instance, sites = [], [], {}
    for inst in instances:
        state = parsed[inst.name]
        env_text = r.env_file(inst, data, data.secrets, storage_addr, streaming_addrs, _storage_name())
        env_path = model.env_file_path(inst)
        # A running instance whose env file changes now, or changed after it started, switches slots.
        switch = inst.name in states and (inst.name in stale or (
            host.get_fact(ManagedFile, path=env_path) is not None
            and not is_current(env_path, hashlib.sha1(env_text.encode()).hexdigest(), "600", "root", "root")))
        old_active = state["active"]
        if switch:
            state = env_switch(state)
        put_secret(env_path, env_text)
        if not switch:  # a switched state is recorded once the switch is done
            put(model.release_state_path(inst), r.state_text(state))
        units = r.units_for_state(inst, state, data, app_addrs, self_addr)
        # A unit Quadlet rejects never reaches the unit directory.
        ops = {path: put(path, text, validate=r.quadlet_check(PurePosixPath(path).name))
               for path, text in units.items()}
        unit_changes.extend(ops.values())
        per_instance.append((inst, state, ops[r.unit_file(inst, state["active"])], switch, old_active))
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
    wanted_env = {PurePosixPath(model.env_file_path(i)).name for i in instances}
    for path in sorted(host.get_fact(FindFiles, path=ENV_DIR, quote_path=True) or []):
        if path.endswith(".env") and PurePosixPath(path).name not in wanted_env:
            files.file(name=f"Remove env file {path}", path=path, present=False)

    def units_changed():
        return any(op.did_change() for op in unit_changes)

    # A unit Quadlet rejects never reaches systemd.
    server.shell(name="Check Quadlet units (quadlet -dryrun)",
                 commands=[f"{r.QUADLET} -dryrun > /dev/null"], _if=units_changed)
    systemd.daemon_reload(name="systemd daemon-reload (Quadlet generator)", _if=units_changed)

    switched = []
    for inst, state, active_unit, switch, old_active in per_instance:
        active, idle = state["active"], model.other_slot(state["active"])
        if switch:
            # Env switch: start the new slot (Notify=healthy: the start waits for its health
            # check); the old one keeps serving until Caddy has moved (below).
            systemd.service(name=f"Start {r.service(inst, active)} (new env file: slot switch)",
                            service=r.service(inst, active), restarted=True)
            switched.append((inst, state, old_active))
            continue
        # A changed active unit (image, limits) restarts this instance only.
        systemd.service(name=f"Restart {r.service(inst, active)} (unit changed)",
                        service=r.service(inst, active), restarted=True,
                        _if=lambda u=active_unit: u.did_change())
        systemd.service(name=f"{r.service(inst, active)} running (active slot)",
                        service=r.service(inst, active), running=True)
        systemd.service(name=f"{r.service(inst, idle)} stopped (idle slot)",
                        service=r.service(inst, idle), running=False)

    caddy(sites=sites)

    if switched:
        server.shell(name=f"Drain {data.app_drain_seconds}s before stopping the old slots",
                     commands=[f"sleep {int(data.app_drain_seconds)}"])
    for inst, state, old_active in switched:
        systemd.service(name=f"Stop {r.service(inst, old_active)} (old slot, after the switch)",
                        service=r.service(inst, old_active), running=False)
        put(model.release_state_path(inst), r.state_text(state))
