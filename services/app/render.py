"""What an app host runs, rendered from the registry, group data and release state.

Pure functions: the apply (services/app) and `make release` (tools/release.py)
render units and sites with the same code from the same state, so a converge
after a release finds nothing to change, and unit tests render them offline.
"""

from __future__ import annotations

import json

from codeb import shared
from codeb.registry import SLOTS, Instance
from codeb.render import templates

from . import model

render = templates(__file__)

QUADLET_DIR = "/etc/containers/systemd"
CONTAINERS_CONF = "/etc/containers/containers.conf.d/50-platform.conf"
REGISTRIES_CONF = "/etc/containers/registries.conf.d/50-platform.conf"
AUTH_FILE = "/etc/containers/platform-auth.json"
SITE_PREFIX = "app-"
QUADLET = "/usr/libexec/podman/quadlet"


def quadlet_check(unit_name: str) -> str:
    """`quadlet -dryrun` of the new file ({new}) alone, under its unit name, in a scratch directory."""
    return ('d=$(mktemp -d) && cp {new} "$d"/' + unit_name + ' && QUADLET_UNIT_DIRS="$d" ' + QUADLET +
            ' -dryrun > /dev/null; rc=$?; rm -rf "$d"; exit $rc')


def unit_file(inst: Instance, slot: str) -> str:
    return f"{QUADLET_DIR}/{model.unit_name(inst, slot)}.container"


def service(inst: Instance, slot: str) -> str:
    return f"{model.unit_name(inst, slot)}.service"


def site_name(inst: Instance) -> str:
    return f"{SITE_PREFIX}{inst.name}"


def default_image(inst: Instance, data) -> str:
    """The image an instance starts with before any release: the registry's, unless the
    environment replaces every app image (the local topology runs the demo image)."""
    override = data.get("app_image_override")
    if override:
        return override
    sep = "@" if inst.tag.startswith("sha256:") else ":"
    return f"{inst.image}{sep}{inst.tag}"


def health_cmd(port: int) -> str:
    return f"curl -fsS -o /dev/null --max-time 4 {model.health_url('127.0.0.1', port)}"


def container_unit(inst: Instance, slot: str, image: str, active: bool, data, app_addrs, self_addr) -> str:
    return render(
        "app.container.j2",
        name=inst.name, slot=slot, unit=model.unit_name(inst, slot), active=active, image=image,
        state_path=model.release_state_path(inst), env_file=model.env_file_path(inst),
        publish_addr=model.app_publish_addr(app_addrs, self_addr), slot_port=inst.slot_ports[slot],
        app_port=inst.port, volume=model.app_volume(inst), health_cmd=health_cmd(inst.port),
        health=data.app_health, podman_args=list(data.get("podman_run_args") or []),
        start_timeout=data.app_start_timeout, limits=data.app_limits,
        auth_file=AUTH_FILE if data.get("container_registry_auth") else None, ca_file=shared.PLATFORM_CA_FILE,
    )


def units_for_state(inst: Instance, state: dict, data, app_addrs, self_addr) -> dict[str, str]:
    """path -> unit text for both slots of one instance."""
    return {
        unit_file(inst, slot): container_unit(inst, slot, state["slots"][slot], slot == state["active"], data,
                                              app_addrs, self_addr)
        for slot in SLOTS
    }


def site(inst: Instance, slot: str, data, app_addrs, self_addr) -> str:
    from services.caddy import tls_directive

    return render(
        "site.caddy.j2",
        name=inst.name, slot=slot, domains=list(inst.domains), tls=tls_directive(data.tls_mode),
        upstreams=model.app_upstreams(inst, slot, app_addrs),
        lb_policy=model.caddy_lb_policy(inst.lb_policy, inst), health_interval=data.app_lb_health_interval,
        health_path=model.HEALTH_PATH, rate_limit=inst.rate_limit,
        stream_close_delay=data.get("caddy_stream_close_delay"),
    )


def state_text(state: dict) -> str:
    return json.dumps(state, indent=2, sort_keys=True) + "\n"


def parse_state(text: str | None, inst: Instance, data) -> dict:
    """The host's release state, or the initial one; anything malformed is an error, never a guess."""
    if not text:
        return model.initial_release_state(default_image(inst, data))
    state = json.loads(text)
    if state.get("active") not in SLOTS or set(state.get("slots", {})) != set(SLOTS):
        raise ValueError(f"{model.release_state_path(inst)}: malformed release state")
    return state


def containers_conf(data) -> str:
    return render("containers.conf.j2", conf=data.podman_containers_conf)


def registries_conf(data) -> str:
    return render("registries.conf.j2", insecure=list(data.get("insecure_registries") or []))


def env_file(inst: Instance, data, secrets, storage_addr: str, streaming_addrs: list[str],
             storage_name: str | None = None) -> str:
    """With the storage host's name, PostgreSQL is reached by that name (the platform names
    resolve to private addresses through /etc/hosts, which Podman copies into containers)
    and its certificate is verified against the platform CA."""
    return model.env_file_text(model.app_env(
        inst, secrets, storage_addr=storage_addr, streaming_addrs=streaming_addrs,
        platform_domain=data.platform_domain, postgresql_port=data.postgresql_port, redis_port=data.redis_port,
        s3_port=data.s3_port, s3_region=data.s3_region,
        centrifugo_internal_port_offset=data.centrifugo_internal_port_offset,
        database_host=shared.fqdn(storage_name, data.platform_domain) if storage_name else None,
        ca_file=shared.PLATFORM_CA_FILE if storage_name else None,
    ))
