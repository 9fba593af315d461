"""Derivations of the streaming hosts: origins, namespaces, listeners, upstreams."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from codeb.registry import Instance
from codeb.shared import CENTRIFUGO_REDIS_PREFIX, with_need, ws_domain


def origins(instances: Iterable[Instance]) -> list[str]:
    """Exact browser origins allowed to open a realtime connection: never '*'."""
    return sorted({f"https://{d}" for inst in instances if "realtime" in inst.needs for d in inst.domains})


def realtime_instances(instances: Iterable[Instance]) -> list[Instance]:
    """The instances that get a Centrifugo of their own (needs: realtime)."""
    return with_need(instances, "realtime")


def client_port(inst: Instance, offset: int) -> int:
    """The instance's Centrifugo client (WebSocket) port: its registry port + offset."""
    return inst.port + offset


def internal_port(inst: Instance, offset: int) -> int:
    """The instance's Centrifugo internal port (HTTP API, /health, /metrics)."""
    return inst.port + offset


def unit(inst: Instance) -> str:
    return f"centrifugo@{inst.name}.service"


def config_path(inst: Instance) -> str:
    return f"/etc/centrifugo/{inst.name}.json"


def path_prefix(inst: Instance) -> str:
    """Where the instance's clients connect on the ws site: /<instance>/connection/..."""
    return f"/{inst.name}"


def client_url(platform_domain: str, inst: Instance) -> str:
    return f"wss://{ws_domain(platform_domain)}{path_prefix(inst)}/connection/websocket"


def redis_engine_prefix(inst: Instance) -> str:
    """The instance's keys and channels in Redis: `centrifugo.<instance>.*` (the shared
    Centrifugo Redis user may use `centrifugo.*` only; no app's user reaches them)."""
    return f"{CENTRIFUGO_REDIS_PREFIX}.{inst.name}"


# Client permissions Centrifugo v6 knows per namespace; every namespace states all of them.
CENTRIFUGO_PERMISSIONS = (
    "allow_subscribe_for_client", "allow_subscribe_for_anonymous",
    "allow_publish_for_client", "allow_publish_for_subscriber", "allow_publish_for_anonymous",
    "allow_presence_for_client", "allow_presence_for_subscriber", "allow_presence_for_anonymous",
    "allow_history_for_client", "allow_history_for_subscriber", "allow_history_for_anonymous",
    "allow_user_limited_channels",
)


CENTRIFUGO_NAMESPACE_KEYS = {"personal", "open", "presence", "history_size", "history_ttl", "id_regex"}


# What follows `<namespace>:` in a channel name: an identifier chosen by the app.
CENTRIFUGO_ID_REGEX = "^[A-Za-z0-9_-]{1,64}$"


def centrifugo_namespaces(spec: Mapping[str, Mapping]) -> list[dict]:
    """Expand the data's namespace table into Centrifugo v6 namespace objects.

    Per namespace, the data says:
      personal:     channels `<ns>:#<user id>` (user-limited), readable by that user only
      open:         any authenticated client may subscribe without a subscription token
                    (default false: the app decides membership by signing subscription tokens)
      presence:     presence and join/leave for subscribers
      history_size, history_ttl: history kept, with recovery forced on subscribe
    Clients never publish (the apps publish through the server API after their own checks),
    and anonymous clients get nothing. Every permission is written out, true or false.
    """
    out = []
    for name, ns in sorted(spec.items()):
        unknown = set(ns) - CENTRIFUGO_NAMESPACE_KEYS
        if unknown:
            raise ValueError(f"centrifugo namespace {name!r}: unknown keys {sorted(unknown)}")
        personal = bool(ns.get("personal"))
        presence = bool(ns.get("presence"))
        history = int(ns.get("history_size", 0)) > 0
        if history and not ns.get("history_ttl"):
            raise ValueError(f"centrifugo namespace {name!r}: history_size needs history_ttl")
        if personal and ns.get("open"):
            raise ValueError(f"centrifugo namespace {name!r}: a personal namespace cannot be open")
        perms = dict.fromkeys(CENTRIFUGO_PERMISSIONS, False)
        perms["allow_subscribe_for_client"] = bool(ns.get("open"))
        perms["allow_user_limited_channels"] = personal
        perms["allow_presence_for_subscriber"] = presence
        perms["allow_history_for_subscriber"] = history
        id_regex = ns.get("id_regex", CENTRIFUGO_ID_REGEX)
        # A personal channel is `#<one user id>`: no `,`-separated list of users.
        regex = "^#" + id_regex.lstrip("^") if personal else id_regex
        out.append({
            "name": name,
            **perms,
            "presence": presence,
            "join_leave": presence,
            "force_push_join_leave": False,
            "history_size": int(ns.get("history_size", 0)),
            "history_ttl": ns.get("history_ttl", "0s") if history else "0s",
            "force_positioning": history,
            "force_recovery": history,
            "channel_regex": regex,
        })
    return out


def centrifugo_without_namespace() -> dict:
    """Channels outside every namespace: refused (no name matches, nothing is allowed)."""
    return {**dict.fromkeys(CENTRIFUGO_PERMISSIONS, False), "presence": False, "history_size": 0,
            "channel_regex": "^$"}


def centrifugo_upstreams(streaming_addrs: Iterable[str], port: int) -> list[str]:
    """Every streaming host's node of one instance: each host's Caddy balances over all of them."""
    return [f"{a}:{port}" for a in sorted(set(streaming_addrs))]


def centrifugo_redis_addresses(storage_addrs: Iterable[str], redis_port: int) -> list[str]:
    return [f"redis://{a}:{redis_port}" for a in sorted(storage_addrs)]
