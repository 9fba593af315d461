"""Streaming hosts, offline: Centrifugo config, namespaces, unit, Caddy site (services/centrifugo).

The rendered config is checked by the pinned Centrifugo itself (`checkconfig --strict`,
built on this machine through codeb/artifacts.py) and the site by `caddy validate`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from codeb import artifacts, shared
from codeb.inventory import group_addrs, platform_hosts
from services import centrifugo as s
from services.app import model as app_model
from services.baseline import rendered_files
from services.centrifugo import model as centrifugo_model
from tests.unit.conftest import load_inventory

ENVS = ("local", "staging", "production")
MEMBERSHIP = ("workspace", "project", "chat")


class Data:
    """host.data with some keys overridden (what another environment's data would say)."""

    def __init__(self, data, **overrides):
        self._data, self._overrides = data, overrides

    def __getattr__(self, name):
        return self._overrides[name] if name in self._overrides else getattr(self._data, name)

    def get(self, name, default=None):
        return self._overrides[name] if name in self._overrides else self._data.get(name, default)


def streaming_host(env):
    inv = load_inventory(env)
    return inv, inv.get_group("streaming")[0]


def realtime(host):
    return centrifugo_model.realtime_instances(host.data.projects.instances)


def config_of(inv, host, inst=None, data=None) -> dict:
    inst = inst or realtime(host)[0]
    return json.loads(s.config_json(data or host.data, inst, host.data.private_ip, group_addrs(inv)))


@pytest.fixture(scope="module")
def centrifugo_binary():
    """The pinned Centrifugo, as `make artifacts` built it (a prerequisite of `make test-unit`)."""
    spec = load_inventory("local").get_group("streaming")[0].data.artifacts["centrifugo"]
    return artifacts.lookup(spec, "centrifugo").path


def checkconfig(binary: Path, text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "config.json"
    path.write_text(text)
    return subprocess.run([str(binary), "checkconfig", "--strict", "--config", str(path)],
                          capture_output=True, text=True, cwd=tmp_path)


# --- namespaces --------------------------------------------------------------------------------


def test_every_namespace_states_every_permission():
    for ns in centrifugo_model.centrifugo_namespaces(load_inventory("local").get_group("streaming")[0].data
                                           .centrifugo_namespaces):
        for perm in centrifugo_model.CENTRIFUGO_PERMISSIONS:
            assert isinstance(ns[perm], bool), (ns["name"], perm)
        # Clients never publish, anonymous clients get nothing.
        assert not any(ns[p] for p in centrifugo_model.CENTRIFUGO_PERMISSIONS if "publish" in p or "anonymous" in p)


def test_the_platform_namespaces():
    _, host = streaming_host("production")
    nss = {ns["name"]: ns for ns in centrifugo_model.centrifugo_namespaces(host.data.centrifugo_namespaces)}
    assert set(nss) == {"user", *MEMBERSHIP}
    user = nss["user"]
    assert user["allow_user_limited_channels"] and not user["allow_subscribe_for_client"]
    assert re.fullmatch(user["channel_regex"], "#42") and not re.fullmatch(user["channel_regex"], "#42,43")
    for name in MEMBERSHIP:
        ns = nss[name]
        assert not ns["allow_subscribe_for_client"], f"{name} must need a subscription token"
        assert not ns["allow_user_limited_channels"]
        assert re.fullmatch(ns["channel_regex"], "w-1_A") and not re.fullmatch(ns["channel_regex"], "a:b")
    for name in ("workspace", "chat"):
        assert nss[name]["presence"] and nss[name]["allow_presence_for_subscriber"]
    for name in ("project", "chat"):
        ns = nss[name]
        assert ns["history_size"] > 0 and ns["history_ttl"] != "0s"
        assert ns["force_recovery"] and ns["force_positioning"] and ns["allow_history_for_subscriber"]
    assert not nss["user"]["presence"] and not nss["project"]["presence"]
    assert nss["workspace"]["history_size"] == 0 and nss["user"]["history_size"] == 0


def test_namespace_data_is_checked_and_can_open_a_namespace():
    with pytest.raises(ValueError, match="unknown keys"):
        centrifugo_model.centrifugo_namespaces({"chat": {"presense": True}})
    with pytest.raises(ValueError, match="history_ttl"):
        centrifugo_model.centrifugo_namespaces({"chat": {"history_size": 10}})
    with pytest.raises(ValueError, match="personal"):
        centrifugo_model.centrifugo_namespaces({"user": {"personal": True, "open": True}})
    (opened,) = centrifugo_model.centrifugo_namespaces({"lobby": {"open": True}})
    assert opened["allow_subscribe_for_client"] and not opened["allow_subscribe_for_anonymous"]


def test_channels_outside_the_namespaces_match_nothing():
    without = centrifugo_model.centrifugo_without_namespace()
    assert not any(without[p] for p in centrifugo_model.CENTRIFUGO_PERMISSIONS)
    # Centrifugo refuses an empty channel name before this check: no name passes.
    assert re.fullmatch(without["channel_regex"], "") and not re.fullmatch(without["channel_regex"], "news")


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_each_instance_gets_its_own_config_keys_origins_ports_and_redis_prefix(env):
    inv, host = streaming_host(env)
    secrets = host.data.secrets
    seen = {"origins": set(), "ports": set(), "keys": set(), "prefixes": set()}
    instances = realtime(host)
    assert len(instances) >= 2
    for inst in instances:
        conf = config_of(inv, host, inst)
        origins = conf["client"]["allowed_origins"]
        assert origins == sorted(f"https://{d}" for d in inst.domains) and "*" not in json.dumps(origins)
        assert conf["client"]["token"]["hmac_secret_key"] == secrets[shared.secret_centrifugo_token_key(inst)]
        assert conf["http_api"]["key"] == secrets[shared.secret_centrifugo_api_key(inst)]
        assert conf["client"]["insecure"] is False and conf["http_api"]["insecure"] is False
        assert conf["client"]["allow_anonymous_connect_without_token"] is False
        server = conf["http_server"]
        # Both ports on the private address: every streaming host's Caddy reaches every node.
        assert (server["address"], server["port"]) == (host.data.private_ip, inst.port + 10000)
        assert (server["internal_address"], server["internal_port"]) == (host.data.private_ip, str(inst.port + 20000))
        assert conf["http_api"]["external"] is False
        assert conf["prometheus"]["enabled"] and conf["health"]["enabled"] and conf["admin"] == {"enabled": False}
        # Always the Redis engine: history survives a restart, and nodes share publications.
        assert conf["engine"]["type"] == "redis"
        redis = conf["engine"]["redis"]
        assert redis["prefix"] == f"centrifugo.{inst.name}" and redis["user"] == shared.CENTRIFUGO_REDIS_USER
        assert redis["password"] == secrets["redis_centrifugo_password"]
        # The incident report's four namespaces keep their shape in every instance.
        assert [ns["name"] for ns in conf["channel"]["namespaces"]] == ["chat", "project", "user", "workspace"]
        seen["origins"] |= set(origins)
        seen["ports"] |= {server["port"], server["internal_port"]}
        seen["keys"] |= {conf["client"]["token"]["hmac_secret_key"], conf["http_api"]["key"]}
        seen["prefixes"].add(redis["prefix"])
    # Nothing is shared between instances: no origin, port, key or Redis prefix.
    n = len(instances)
    assert len(seen["ports"]) == 2 * n and len(seen["keys"]) == 2 * n and len(seen["prefixes"]) == n
    assert seen["origins"] == set(centrifugo_model.origins(host.data.projects.instances))


@pytest.mark.parametrize("env", ENVS)
def test_config_passes_centrifugo_checkconfig_strict(env, centrifugo_binary, tmp_path):
    inv, host = streaming_host(env)
    for inst in realtime(host):
        text = s.config_json(host.data, inst, host.data.private_ip, group_addrs(inv))
        proc = checkconfig(centrifugo_binary, text, tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_checkconfig_strict_does_reject_unknown_fields(centrifugo_binary, tmp_path):
    inv, host = streaming_host("local")
    conf = config_of(inv, host)
    conf["client"]["allowed_origin"] = ["*"]  # a typo that would silently allow nothing
    assert checkconfig(centrifugo_binary, json.dumps(conf), tmp_path).returncode != 0


def test_admin_ui_when_data_enables_it(centrifugo_binary, tmp_path):
    inv, host = streaming_host("local")
    data = Data(host.data, centrifugo_admin=True)
    conf = config_of(inv, host, data=data)
    admin = conf["admin"]
    assert admin["enabled"] and not admin["external"] and not admin["insecure"]
    assert admin["password"] == host.data.secrets["centrifugo_admin_password"]
    assert admin["secret"] and admin["secret"] != admin["password"]
    assert checkconfig(centrifugo_binary, json.dumps(conf), tmp_path).returncode == 0


def test_template_unit_checks_the_instance_config_before_every_start():
    _, host = streaming_host("production")
    unit = s.unit_file(host.data)
    assert "User=centrifugo" in unit
    assert "ExecStartPre=/usr/local/bin/centrifugo checkconfig --strict --config /etc/centrifugo/%i.json" in unit
    assert "ExecStart=/usr/local/bin/centrifugo --config /etc/centrifugo/%i.json" in unit
    assert f"LimitNOFILE={host.data.centrifugo_nofile}" in unit and host.data.centrifugo_nofile >= 65536


def test_a_restart_waits_for_the_node_to_be_healthy():
    """Rolling restarts: the next streaming host restarts only once this node answers /health."""
    _, host = streaming_host("local")
    inst = realtime(host)[0]
    cmd = s.restart_command(host.data, inst, "10.78.0.12")
    health = f"http://10.78.0.12:{inst.port + 20000}/health"
    assert cmd.startswith(f"systemctl restart centrifugo@{inst.name}.service && ")
    assert cmd.endswith(f"curl -fsS -o /dev/null {health}") and "seq 1 60" in cmd


def test_app_env_values():
    inst = next(i for i in load_inventory("local").get_group("app")[0].data.projects.instances
                if "realtime" in i.needs)
    secrets = {f"centrifugo_api_key.{inst.name}": "k", f"centrifugo_hmac_secret.{inst.name}": "h"}
    env = app_model.centrifugo_app_env(inst, "codeb.kr", ["10.0.0.3", "10.0.0.2"], 24000, secrets)
    assert env == {
        "CENTRIFUGO_URL": f"wss://ws.codeb.kr/{inst.name}/connection/websocket",
        "CENTRIFUGO_API_URL": "http://10.0.0.2:24000/api",
        "CENTRIFUGO_API_URLS": "http://10.0.0.2:24000/api,http://10.0.0.3:24000/api",
        "CENTRIFUGO_API_KEY": "k",
        "CENTRIFUGO_SECRET": "h",
    }
    with pytest.raises(ValueError):
        app_model.centrifugo_app_env(inst, "codeb.kr", [], 24000, secrets)


def test_secrets_are_per_instance():
    host = load_inventory("local").get_group("app")[0]
    names = shared.required_secrets(host.data.projects.instances)
    for inst in realtime(host):
        assert f"centrifugo_hmac_secret.{inst.name}" in names and f"centrifugo_api_key.{inst.name}" in names
    assert "centrifugo_hmac_secret" not in names and "centrifugo_api_key" not in names


# --- Caddy ---------------------------------------------------------------------------------------


def validate_caddy(tmp_path: Path, sites: dict[str, str], data) -> None:
    """`caddy validate` on the global Caddyfile and the sites, /etc paths moved to tmp_path."""
    from services.caddy import PKI_DIR, SITES_DIR, caddyfile
    from services.caddy.tests import pinned_caddy

    caddy = pinned_caddy()  # the version and plugins the hosts run
    (tmp_path / "sites").mkdir(parents=True)
    main = caddyfile(data).replace(f"{SITES_DIR}/", f"{tmp_path}/sites/").replace(f"{PKI_DIR}/", f"{tmp_path}/")
    if data.tls_mode == "internal":  # a throwaway CA where the environment's root would be
        subprocess.run(["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-keyout", str(tmp_path / "root.key"), "-out",
                        str(tmp_path / "root.crt"), "-days", "30", "-subj", "/CN=test root",
                        "-addext", "basicConstraints=critical,CA:TRUE"], check=True, capture_output=True)
    for name, body in sites.items():
        (tmp_path / "sites" / f"{name}.caddy").write_text(body)
    (tmp_path / "Caddyfile").write_text(main)
    env = dict(os.environ, HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    proc = subprocess.run([caddy, "validate", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("env", ENVS)
def test_ws_site_routes_each_instance_to_its_nodes_on_every_streaming_host(env, tmp_path):
    inv, host = streaming_host(env)
    addrs = group_addrs(inv)
    site = s.ws_site(host.data, addrs)
    lines = [line.strip() for line in site.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert lines[0] == f"ws.{host.data.platform_domain} {{"
    assert ("tls internal" in lines) == (host.data.tls_mode == "internal")
    assert "import security_headers" in lines and "import access_log" in lines
    for inst in realtime(host):
        port = inst.port + 10000
        assert f"handle_path /{inst.name}/* {{" in lines
        assert f"reverse_proxy {' '.join(f'{a}:{port}' for a in sorted(addrs['streaming']))} {{" in lines
    assert f"lb_policy {host.data.centrifugo_lb_policy}" in lines
    # Everything else: 404 (the API, metrics and health are never proxied).
    assert lines[-4:] == ["handle {", "respond 404", "}", "}"]
    validate_caddy(tmp_path, {"ws": site}, host.data)


def test_the_lab_deploys_two_streaming_hosts():
    inv, _ = streaming_host("local")
    assert group_addrs(inv)["streaming"] == ["10.78.0.12", "10.78.0.22"]


# --- firewall --------------------------------------------------------------------------------------


def _rules(inv, host, name):
    nft, _ = rendered_files(host.data, host.name, host.groups, group_addrs(inv), platform_hosts(inv))[
        "/etc/nftables.conf"]
    return [line.strip() for line in nft.splitlines() if f'comment "{name}"' in line]


@pytest.mark.parametrize("env", ENVS)
def test_firewall_internal_ports_for_app_and_backup_only_client_ports_for_streaming(env):
    inv, host = streaming_host(env)
    addrs = group_addrs(inv)

    def saddr(group):
        return ", ".join(a + "/32" for a in addrs[group])

    (api,) = _rules(inv, host, "centrifugo-api")
    (metrics,) = _rules(inv, host, "centrifugo-metrics")
    (client,) = _rules(inv, host, "centrifugo-client")
    assert api == f'iifname "wg0" ip saddr {{ {saddr("app")} }} tcp dport 24000-25999 accept comment "centrifugo-api"'
    assert metrics == (f'iifname "wg0" ip saddr {{ {saddr("backup")} }} tcp dport 24000-25999 '
                       'accept comment "centrifugo-metrics"')
    assert client == (f'iifname "wg0" ip saddr {{ {saddr("streaming")} }} tcp dport 14000-15999 '
                      'accept comment "centrifugo-client"')
    for inst in realtime(host):
        assert 24000 <= inst.port + 20000 <= 25999 and 14000 <= inst.port + 10000 <= 15999
    assert all("saddr" not in r for r in _rules(inv, host, "ws-https"))  # 443 from anywhere
    assert _rules(inv, host, "ws-http")
    for other in inv:
        if "streaming" not in other.groups:
            assert not _rules(inv, other, "centrifugo-api") and not _rules(inv, other, "ws-https")


# --- the artifact mechanism's source edits ----------------------------------------------------------


def test_pin_records_its_replacements_and_edits():
    spec = load_inventory("local").get_group("streaming")[0].data.artifacts["centrifugo"]
    assert spec["version"] == "v6.9.1" and "build.Version=6.9.1" in spec["ldflags"]
    mod = artifacts._go_mod(spec)
    assert "replace github.com/centrifugal/centrifugo/v6 => ./edited-src" in mod
    assert "replace github.com/centrifugal/centrifuge => github.com/centrifugal/centrifuge v0.40.1" in mod


def test_edits_must_match(tmp_path):
    (tmp_path / "a.go").write_text("x := push.MarshalVT()\n")
    artifacts.apply_edits(tmp_path, {"a.go": [["push.MarshalVT()", "push.MarshalCF()"]]})
    assert (tmp_path / "a.go").read_text() == "x := push.MarshalCF()\n"
    with pytest.raises(RuntimeError, match="not found"):
        artifacts.apply_edits(tmp_path, {"a.go": [["push.MarshalVT()", "push.MarshalCF()"]]})
