"""Streaming hosts: one Centrifugo v6 per app instance with realtime, behind Caddy at
wss://ws.<platform_domain>/<instance>/connection/websocket.

- Isolation by construction: each instance (project x environment) has its own process
  (`centrifugo@<instance>`), its own token key and API key (secrets per instance), its own
  exact origins, and its own Redis prefix; the four namespaces keep their shape in each.
  One project's tokens, keys and channels mean nothing to another project's Centrifugo.
- Every node uses the Redis engine on the storage host: history survives a restart, and a
  publication on any node reaches the subscribers of every node.
- Each streaming host's Caddy balances over every host's node of the instance (round robin:
  with the Redis engine no stickiness is needed). A changed config restarts one streaming
  host at a time, and the next waits until the restarted node answers /health.
- Centrifugo runs as its own system user from a template unit that checks the config
  (`checkconfig --strict`) before every start; the binary is the pinned artifact. Configs
  hold secrets: mode 640, root:centrifugo, never shown by --diff.
- `remove_legacy_centrifugo()` runs on app hosts: a Centrifugo there (unit or container)
  is what the source incident had; it is stopped and removed.
"""

from __future__ import annotations

import hashlib
import hmac
import shlex
from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.facts.files import File, FindFiles
from pyinfra.operations import files, server, systemd

from codeb import artifacts, shared
from codeb.files import put, put_secret
from codeb.inventory import group_addrs
from codeb.ops import APPLIED, restart_on_change
from codeb.render import templates
from services.caddy import caddy, tls_directive

from . import model

render = templates(__file__)

USER = "centrifugo"
BINARY = "/usr/local/bin/centrifugo"
CONFIG_DIR = "/etc/centrifugo"
UNIT_FILE = "/etc/systemd/system/centrifugo@.service"
# The single Centrifugo of earlier releases (one process for every project).
LEGACY_UNIT = "centrifugo.service"
LEGACY_FILES = [f"/etc/systemd/system/{LEGACY_UNIT}", f"{CONFIG_DIR}/config.json"]


# --- pure renderings (unit tests call these for any inventory) ---------------------------


def admin_secret(admin_password: str) -> str:
    """The admin UI's token-signing secret, derived from its password (one secret to rotate)."""
    return hmac.new(admin_password.encode(), b"codeb:centrifugo-admin-secret", hashlib.sha256).hexdigest()


def config_json(data, inst, private_ip: str, addrs: dict[str, list[str]]) -> str:
    """/etc/centrifugo/<instance>.json on one streaming host (it holds the instance's secrets)."""
    secrets = data.secrets
    admin = bool(data.get("centrifugo_admin"))
    return render(
        "config.json.j2",
        client_address=private_ip,
        client_port=model.client_port(inst, data.centrifugo_client_port_offset),
        internal_address=private_ip,
        internal_port=model.internal_port(inst, data.centrifugo_internal_port_offset),
        allowed_origins=model.origins([inst]),
        hmac_secret=secrets[shared.secret_centrifugo_token_key(inst)],
        api_key=secrets[shared.secret_centrifugo_api_key(inst)],
        namespaces=model.centrifugo_namespaces(data.centrifugo_namespaces),
        without_namespace=model.centrifugo_without_namespace(),
        admin=admin,
        admin_password=secrets["centrifugo_admin_password"] if admin else None,
        admin_secret=admin_secret(secrets["centrifugo_admin_password"]) if admin else None,
        redis={
            "address": model.centrifugo_redis_addresses(addrs["storage"], data.redis_port),
            "user": shared.CENTRIFUGO_REDIS_USER,
            "password": secrets["redis_centrifugo_password"],
            "prefix": model.redis_engine_prefix(inst),
        },
    )


def unit_file(data) -> str:
    """The template unit centrifugo@<instance>.service."""
    return render("centrifugo.service.j2", user=USER, binary=BINARY, config=f"{CONFIG_DIR}/%i.json",
                  nofile=data.centrifugo_nofile)


def ws_site(data, addrs: dict[str, list[str]]) -> str:
    """The Caddy site wss://ws.<platform_domain>: /<instance>/connection/* to that instance's
    nodes (prefix stripped), everything else 404."""
    routes = [{"prefix": model.path_prefix(i),
               "upstreams": model.centrifugo_upstreams(addrs["streaming"],
                                                       model.client_port(i, data.centrifugo_client_port_offset))}
              for i in model.realtime_instances(data.projects.instances)]
    return render(
        "ws.caddy.j2",
        domain=shared.ws_domain(data.platform_domain),
        tls=tls_directive(data.tls_mode),
        routes=routes,
        lb_policy=data.centrifugo_lb_policy,
        stream_close_delay=data.get("caddy_stream_close_delay"),
    )


def restart_command(data, inst, private_ip: str) -> str:
    """Restart one node, then wait until it answers /health (the next host restarts only then)."""
    health = f"http://{private_ip}:{model.internal_port(inst, data.centrifugo_internal_port_offset)}/health"
    wait = int(data.centrifugo_restart_wait_seconds)
    return (f"systemctl restart {model.unit(inst)} && "
            f"for i in $(seq 1 {wait}); do curl -fsS -o /dev/null {health} && break; sleep 1; done && "
            f"curl -fsS -o /dev/null {health}")


# --- operations ---------------------------------------------------------------------------


@deploy("Centrifugo")
def centrifugo():
    data = host.data
    addrs = group_addrs()
    artifact = artifacts.lookup(data.artifacts["centrifugo"], "centrifugo")
    instances = model.realtime_instances(data.projects.instances)

    server.group(name=f"Group {USER}", group=USER, system=True)
    server.user(name=f"System user {USER}", user=USER, group=USER, system=True, home="/nonexistent",
                ensure_home=False, shell="/usr/sbin/nologin")
    artifacts.install(artifact, BINARY)
    files.directory(name=CONFIG_DIR, path=CONFIG_DIR, user="root", group=USER, mode="750")
    put(UNIT_FILE, unit_file(data))
    restart_on_change("systemd daemon-reload (Centrifugo template unit)", [UNIT_FILE], "systemctl daemon-reload",
                      marker=f"{APPLIED}/daemon-reload.centrifugo")
    for inst in instances:
        config = model.config_path(inst)
        put_secret(config, config_json(data, inst, data.private_ip, addrs), mode="640", group=USER)
        # A config Centrifugo rejects never reaches the running node (the unit checks again
        # before every start); run as the service user, so the file's permissions are checked
        # too. One streaming host at a time: the next restarts once this node is healthy.
        restart_on_change(f"Check config, restart {model.unit(inst)} (one streaming host at a time)",
                          [BINARY, UNIT_FILE, config], restart_command(data, inst, data.private_ip),
                          validate=f"runuser -u {USER} -- {BINARY} checkconfig --strict --config {config}",
                          marker=f"{APPLIED}/{model.unit(inst)}.restart", _serial=True)
        systemd.service(name=f"{model.unit(inst)} running", service=model.unit(inst), running=True, enabled=True)

    # Instances that left the registry (or lost realtime): their node stops, its config goes.
    wanted = {PurePosixPath(model.config_path(i)).name for i in instances}
    for path in sorted(host.get_fact(FindFiles, path=CONFIG_DIR, quote_path=True) or []):
        name = PurePosixPath(path).name
        if name.endswith(".json") and name != "config.json" and name not in wanted:
            unit = f"centrifugo@{name.removesuffix('.json')}.service"
            server.shell(name=f"Stop and disable {unit} (instance left the registry)",
                         commands=[f"systemctl disable --now {shlex.quote(unit)}"])
            files.file(name=f"Remove {path}", path=path, present=False)


def remove_single_centrifugo():
    """The one Centrifugo for every project of earlier releases: stopped once the ws site
    routes to the per-instance nodes."""
    if not host.get_fact(File, path=LEGACY_FILES[0]):
        return
    server.shell(name=f"Stop and disable {LEGACY_UNIT} (replaced by one Centrifugo per instance)",
                 commands=[f"systemctl disable --now {LEGACY_UNIT}"])
    for path in LEGACY_FILES:
        files.file(name=f"Remove {path}", path=path, present=False)
    systemd.daemon_reload(name=f"systemd daemon-reload ({LEGACY_UNIT} gone)")


@deploy("Streaming host")
def streaming():
    data = host.data
    centrifugo()
    caddy(sites={"ws": ws_site(data, group_addrs())})
    remove_single_centrifugo()


# --- legacy Centrifugo on app hosts ------------------------------------------------------


class LegacyCentrifugo(FactBase):
    """Centrifugo units, unit files and podman containers on a host: `kind name` lines."""

    def command(self):
        return (
            # Loaded or running units (not the `not-found inactive` ghosts systemd lists for a
            # while after a unit file is gone), and enabled unit files not loaded yet.
            "systemctl list-units --all --plain --no-legend 'centrifugo*' 2>/dev/null"
            " | awk '!($2 == \"not-found\" && $3 == \"inactive\") {print \"unit \" $1}'; "
            "systemctl list-unit-files --no-legend 'centrifugo*' 2>/dev/null"
            " | awk '$2 ~ /^(enabled|enabled-runtime|linked|linked-runtime)$/ {print \"unit \" $1}'; "
            "for f in /etc/systemd/system/centrifugo*.service /etc/containers/systemd/centrifugo*.container; do"
            " [ -e \"$f\" ] && echo \"file $f\"; done; "
            "if command -v podman >/dev/null; then"
            " podman ps -a --format 'container {{.Names}}' | grep '^container centrifugo'; fi; true"
        )

    @staticmethod
    def default():
        # pyinfra skips process() when the command prints nothing (nothing found).
        return {"unit": [], "file": [], "container": []}

    def process(self, output):
        found = {"unit": [], "file": [], "container": []}
        for line in output:
            kind, _, name = line.strip().partition(" ")
            if kind in found and name and name not in found[kind]:
                found[kind].append(name)
        return found


@deploy("Remove legacy Centrifugo from app hosts")
def remove_legacy_centrifugo():
    """On app hosts only (a streaming host keeps its own Centrifugo): no-op when nothing is found."""
    if "app" not in host.groups or "streaming" in host.groups:
        return
    legacy = host.get_fact(LegacyCentrifugo)
    for name in legacy["container"]:
        server.shell(name=f"Remove legacy Centrifugo container {name}", commands=[f"podman rm -f -t 10 {shlex.quote(name)}"])
    for name in legacy["unit"]:
        server.shell(name=f"Stop and disable legacy unit {name}",
                     commands=[f"systemctl disable --now {shlex.quote(name)} 2>/dev/null || systemctl stop {shlex.quote(name)}"])
    for path in legacy["file"]:
        files.file(name=f"Remove legacy unit file {path}", path=path, present=False)
    if legacy["unit"] or legacy["file"]:
        systemd.daemon_reload(name="Reload systemd after removing legacy Centrifugo")
        server.shell(name="Forget failed legacy units", commands=["systemctl reset-failed 'centrifugo*' || true"])
