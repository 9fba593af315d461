"""Streaming hosts: Centrifugo v6 behind Caddy at wss://ws.<platform_domain>.

- Centrifugo runs as its own system user from a systemd unit that checks the config
  (`checkconfig --strict`) before every start; the binary is the pinned artifact.
- Its config comes from data (group_data/all.py) and the registry: exact origins, explicit
  namespace permissions, secrets from the environment (file mode 640, root:centrifugo,
  never shown by --diff). The client port listens on localhost for Caddy (on the private
  address when several streaming hosts share the load); the internal port (API, health,
  metrics) on the private address, firewalled to the app and backup hosts.
- With several streaming hosts, the Redis engine on the storage host and a sticky Caddy.
- `remove_legacy_centrifugo()` runs on app hosts: a Centrifugo there (unit or container)
  is what the source incident had; it is stopped and removed.
"""

from __future__ import annotations

import hashlib
import hmac
import shlex

from pyinfra import host
from pyinfra.api import FactBase, deploy
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
CONFIG = f"{CONFIG_DIR}/config.json"
UNIT = "centrifugo.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"


# --- pure renderings (unit tests call these for any inventory) ---------------------------


def admin_secret(admin_password: str) -> str:
    """The admin UI's token-signing secret, derived from its password (one secret to rotate)."""
    return hmac.new(admin_password.encode(), b"codeb:centrifugo-admin-secret", hashlib.sha256).hexdigest()


def config_json(data, private_ip: str, addrs: dict[str, list[str]]) -> str:
    """/etc/centrifugo/config.json for one streaming host (it holds secrets)."""
    streaming = addrs["streaming"]
    secrets = data.secrets
    redis = None
    if model.centrifugo_clustered(streaming):
        redis = {
            "address": model.centrifugo_redis_addresses(addrs["storage"], data.redis_port),
            "user": shared.CENTRIFUGO_REDIS_USER,
            "password": secrets["redis_centrifugo_password"],
            "prefix": shared.CENTRIFUGO_REDIS_PREFIX,
        }
    admin = bool(data.get("centrifugo_admin"))
    return render(
        "config.json.j2",
        client_address=model.centrifugo_client_listen(streaming, private_ip),
        client_port=data.centrifugo_client_port,
        internal_address=private_ip,
        internal_port=data.centrifugo_internal_port,
        allowed_origins=model.origins(data.projects.instances),
        hmac_secret=secrets["centrifugo_hmac_secret"],
        api_key=secrets["centrifugo_api_key"],
        namespaces=model.centrifugo_namespaces(data.centrifugo_namespaces),
        without_namespace=model.centrifugo_without_namespace(),
        admin=admin,
        admin_password=secrets["centrifugo_admin_password"] if admin else None,
        admin_secret=admin_secret(secrets["centrifugo_admin_password"]) if admin else None,
        redis=redis,
    )


def unit_file(data) -> str:
    return render("centrifugo.service.j2", user=USER, binary=BINARY, config=CONFIG,
                  nofile=data.centrifugo_nofile)


def ws_site(data, addrs: dict[str, list[str]]) -> str:
    """The Caddy site for wss://ws.<platform_domain>: /connection/* to Centrifugo, the rest 404."""
    return render(
        "ws.caddy.j2",
        domain=shared.ws_domain(data.platform_domain),
        tls=tls_directive(data.tls_mode),
        upstreams=model.centrifugo_upstreams(addrs["streaming"], data.centrifugo_client_port),
        lb_policy=data.centrifugo_lb_policy,
    )


# --- operations ---------------------------------------------------------------------------


@deploy("Centrifugo")
def centrifugo():
    data = host.data
    addrs = group_addrs()
    artifact = artifacts.lookup(data.artifacts["centrifugo"], "centrifugo")

    server.group(name=f"Group {USER}", group=USER, system=True)
    server.user(name=f"System user {USER}", user=USER, group=USER, system=True, home="/nonexistent",
                ensure_home=False, shell="/usr/sbin/nologin")
    artifacts.install(artifact, BINARY)
    files.directory(name=CONFIG_DIR, path=CONFIG_DIR, user="root", group=USER, mode="750")
    put_secret(CONFIG, config_json(data, data.private_ip, addrs), mode="640", group=USER)
    put(UNIT_FILE, unit_file(data))
    # A config Centrifugo rejects never reaches the running server (the unit checks again
    # before every start). Run as the service user, so the file's permissions are checked too.
    restart_on_change("Check config (checkconfig --strict), restart Centrifugo", [BINARY, CONFIG, UNIT_FILE],
                      f"systemctl daemon-reload && systemctl restart {UNIT}",
                      validate=f"runuser -u {USER} -- {BINARY} checkconfig --strict --config {CONFIG}",
                      marker=f"{APPLIED}/centrifugo.restart")
    systemd.service(name="centrifugo running", service=UNIT, running=True, enabled=True)


@deploy("Streaming host")
def streaming():
    data = host.data
    centrifugo()
    caddy(sites={"ws": ws_site(data, group_addrs())})


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
