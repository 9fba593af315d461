"""Derivations of the streaming hosts: origins, namespaces, listeners, upstreams."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from codeb.registry import Instance


def origins(instances: Iterable[Instance]) -> list[str]:
    """Exact browser origins allowed to open a realtime connection: never '*'."""
    return sorted({f"https://{d}" for inst in instances if "realtime" in inst.needs for d in inst.domains})


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


def centrifugo_clustered(streaming_addrs: Iterable[str]) -> bool:
    """More than one Centrifugo node: Redis engine, client port on the private address, sticky Caddy."""
    return len(set(streaming_addrs)) > 1


def centrifugo_client_listen(streaming_addrs: Iterable[str], private_ip: str) -> str:
    """Where the client (WebSocket) port listens: localhost for the local Caddy, or the private
    address when Caddy on every streaming host balances over all nodes."""
    return private_ip if centrifugo_clustered(streaming_addrs) else "127.0.0.1"


def centrifugo_upstreams(streaming_addrs: Iterable[str], client_port: int) -> list[str]:
    addrs = sorted(set(streaming_addrs))
    if not centrifugo_clustered(addrs):
        return [f"127.0.0.1:{client_port}"]
    return [f"{a}:{client_port}" for a in addrs]


def centrifugo_redis_addresses(storage_addrs: Iterable[str], redis_port: int) -> list[str]:
    return [f"redis://{a}:{redis_port}" for a in sorted(storage_addrs)]
