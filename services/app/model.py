"""Derivations of the app hosts: unit and file names, env files, upstreams, release state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from codeb.registry import Instance
from codeb.shared import (
    bucket_name,
    db_name,
    db_role,
    redis_prefix,
    redis_user,
    s3_endpoint,
    secret_centrifugo_api_key,
    secret_centrifugo_token_key,
    secret_db_password,
    secret_redis_password,
    secret_s3_key_id,
    secret_s3_key_secret,
    sql_name,
)


def unit_name(inst: Instance, slot: str) -> str:
    return f"{inst.name}-{slot}"


# Generated env files follow the operations manual: Node apps run with NODE_ENV=production
# in every app environment (staging and preview are production builds on other data).
APP_NODE_ENV = "production"


# Every app answers its health check here (the demo app, and the platform's Next.js apps).
HEALTH_PATH = "/api/health"


def health_url(addr: str, port: int) -> str:
    """An app slot's health check URL (Podman's check, `make release`, `make health`)."""
    return f"http://{addr}:{port}{HEALTH_PATH}"


def env_file_path(inst: Instance) -> str:
    return f"/etc/platform/apps/{inst.name}.env"


def release_state_path(inst: Instance) -> str:
    return f"/var/lib/platform/releases/{inst.name}.json"


def app_volume(inst: Instance) -> str:
    """The instance's named Podman volume: kept when the instance leaves the registry."""
    return f"{inst.name}-data"


def database_url(inst: Instance, password: str, host: str, port: int, ca_file: str | None = None) -> str:
    """The instance's own role and database on the storage host over TLS (pg_hba: hostssl).
    With the platform CA, the server's certificate is verified for `host` (verify-full)."""
    tls = f"sslmode=verify-full&sslrootcert={ca_file}" if ca_file else "sslmode=require"
    return f"postgresql://{db_role(inst)}:{password}@{host}:{port}/{db_name(inst)}?{tls}"


def redis_url(inst: Instance, password: str, host: str, port: int) -> str:
    """The instance's ACL user; its keys and channels live under redis_env_prefix()."""
    return f"redis://{redis_user(inst)}:{password}@{host}:{port}/0"


def redis_env_prefix(inst: Instance) -> str:
    """REDIS_PREFIX as the manual writes it (`myapp:`): inside the ACL's `~<prefix>:*`."""
    return f"{redis_prefix(inst)}:"


def app_env(
    inst: Instance,
    secrets: Mapping[str, str],
    *,
    storage_addr: str,
    streaming_addrs: Iterable[str],
    platform_domain: str,
    postgresql_port: int,
    redis_port: int,
    s3_port: int,
    s3_region: str,
    centrifugo_internal_port_offset: int,
    database_host: str | None = None,
    ca_file: str | None = None,
) -> dict[str, str]:
    """The instance's environment (its env file), in a stable order.

    `database_host` is the name in the storage host's certificate (default: its address);
    with `ca_file`, PostgreSQL clients verify it (verify-full).

    PORT is the registry port: the app listens on it inside its container; the blue
    and green slots publish it on their own slot ports on the host.
    """
    env = {"NODE_ENV": APP_NODE_ENV, "PORT": str(inst.port)}
    if "database" in inst.needs:
        env["DATABASE_URL"] = database_url(inst, secrets[secret_db_password(inst)], database_host or storage_addr,
                                           postgresql_port, ca_file)
    if "redis" in inst.needs:
        env["REDIS_URL"] = redis_url(inst, secrets[secret_redis_password(inst)], storage_addr, redis_port)
        env["REDIS_PREFIX"] = redis_env_prefix(inst)
    if "bucket" in inst.needs:
        env.update({
            "S3_ENDPOINT": s3_endpoint(storage_addr, s3_port),
            "S3_REGION": s3_region,
            "S3_BUCKET": bucket_name(inst),
            "S3_ACCESS_KEY_ID": secrets[secret_s3_key_id(inst)],
            "S3_SECRET_ACCESS_KEY": secrets[secret_s3_key_secret(inst)],
            "S3_FORCE_PATH_STYLE": "true",
        })
    if "realtime" in inst.needs:
        env.update(centrifugo_app_env(inst, platform_domain, streaming_addrs, inst.port + centrifugo_internal_port_offset,
                                      secrets))
    return env


def env_file_text(env: Mapping[str, str]) -> str:
    """KEY=value lines for systemd/Podman EnvironmentFile (values are alphanumeric URLs)."""
    for key, value in env.items():
        if "\n" in value or '"' in value or "\\" in value:
            raise ValueError(f"env: value of {key} cannot be written to an env file")
    return "".join(f"{k}={v}\n" for k, v in env.items())


def app_upstreams(inst: Instance, slot: str, app_addrs: list[str]) -> list[str]:
    """Where Caddy sends an instance's traffic: the active slot on this host alone, or on
    every app host when the group has several (each publishes its slots on its private address)."""
    port = inst.slot_ports[slot]
    if len(app_addrs) <= 1:
        return [f"127.0.0.1:{port}"]
    return [f"{addr}:{port}" for addr in sorted(app_addrs)]


def app_publish_addr(app_addrs: list[str], self_addr: str) -> str:
    """Slot ports stay on localhost unless other app hosts' Caddy must reach them."""
    return "127.0.0.1" if len(app_addrs) <= 1 else self_addr


def caddy_lb_policy(policy: str, inst: Instance) -> str:
    """Caddy's lb_policy line for a registry policy (cookie: sticky per instance)."""
    return {"round_robin": "round_robin", "least_conn": "least_conn", "ip_hash": "ip_hash",
            "cookie": f"cookie lb_{sql_name(inst)}"}[policy]


def other_slot(slot: str) -> str:
    from codeb.registry import SLOTS

    return SLOTS[1 - SLOTS.index(slot)]


def initial_release_state(image: str) -> dict:
    """Before the first release: blue active, both slots on the registry's image."""
    return {"active": "blue", "previous": None, "slots": {"blue": image, "green": image}}


def registry_auth_json(registry: str, username: str, token: str) -> str:
    import base64
    import json

    auth = base64.b64encode(f"{username}:{token}".encode()).decode()
    return json.dumps({"auths": {registry: {"auth": auth}}}, indent=2, sort_keys=True) + "\n"


def centrifugo_app_env(inst: Instance, platform_domain: str, streaming_addrs: Iterable[str], internal_port: int,
                       secrets: Mapping[str, str]) -> dict[str, str]:
    """What an app's env file gets for realtime, all of it its own instance's: the public wss
    URL (its path on the ws site), the internal API URLs of its Centrifugo on every streaming
    host (any node works: the Redis engine delivers to every node's subscribers; the first is
    CENTRIFUGO_API_URL), its API key and the key it signs connection and subscription tokens with."""
    addrs = sorted(set(streaming_addrs))
    if not addrs:
        raise ValueError("centrifugo: the streaming group has no host")
    apis = [f"http://{a}:{internal_port}/api" for a in addrs]
    return {
        "CENTRIFUGO_URL": f"wss://ws.{platform_domain}/{inst.name}/connection/websocket",
        "CENTRIFUGO_API_URL": apis[0],
        "CENTRIFUGO_API_URLS": ",".join(apis),
        "CENTRIFUGO_API_KEY": secrets[secret_centrifugo_api_key(inst)],
        "CENTRIFUGO_SECRET": secrets[secret_centrifugo_token_key(inst)],
    }
