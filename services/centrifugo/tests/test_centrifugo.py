"""Streaming hosts, offline: Centrifugo config, namespaces, unit, Caddy site (services/centrifugo).

The rendered config is checked by the pinned Centrifugo itself (`checkconfig --strict`,
built on this machine through codeb/artifacts.py) and the site by `caddy validate`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from codeb import artifacts, shared
from codeb.inventory import group_addrs, platform_hosts
from services import centrifugo as s
from services.app import model as app_model
from services.baseline import rendered_files
from services.centrifugo import model as centrifugo_model
from tests.unit.conftest import REPO, load_inventory

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


def two_streaming_hosts(tmp_path):
    """The local inventory with a second streaming host (n2-2), loaded offline."""
    from pyinfra.api import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    text = (REPO / "inventory" / "local.py").read_text()
    text = text.replace(
        'streaming = [("n2", {"ssh_hostname": "10.77.0.12", "public_ip": "10.77.0.12", "private_ip": "10.78.0.12", '
        '**_ssh})]',
        'streaming = [("n2", {"ssh_hostname": "10.77.0.12", "public_ip": "10.77.0.12", "private_ip": "10.78.0.12", '
        '**_ssh}),\n'
        '             ("n2-2", {"ssh_hostname": "10.77.0.22", "public_ip": "10.77.0.22", "private_ip": "10.78.0.22", '
        '**_ssh})]',
    )
    assert "n2-2" in text, "inventory/local.py changed shape: update this fixture"
    path = tmp_path / "two_streaming.py"
    path.write_text(text)
    os.environ["CODEB_RENDER_ONLY"] = "1"
    try:
        with ctx_state.use(State()):
            return make_inventory(str(path), cwd=str(REPO), group_data_directories=[str(REPO / "group_data")])
    finally:
        del os.environ["CODEB_RENDER_ONLY"]


def config_of(inv, host, data=None) -> dict:
    return json.loads(s.config_json(data or host.data, host.data.private_ip, group_addrs(inv)))


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
def test_config_from_data_and_registry(env):
    inv, host = streaming_host(env)
    conf = config_of(inv, host)
    secrets = host.data.secrets
    origins = conf["client"]["allowed_origins"]
    assert origins == centrifugo_model.origins(host.data.projects.instances)
    assert origins and all(re.fullmatch(r"https://[a-z0-9.-]+", o) for o in origins)
    assert "*" not in json.dumps(origins)
    assert conf["client"]["token"]["hmac_secret_key"] == secrets["centrifugo_hmac_secret"]
    assert conf["http_api"]["key"] == secrets["centrifugo_api_key"]
    assert conf["client"]["insecure"] is False and conf["http_api"]["insecure"] is False
    assert conf["client"]["allow_anonymous_connect_without_token"] is False
    server = conf["http_server"]
    assert (server["address"], server["port"]) == ("127.0.0.1", host.data.centrifugo_client_port)
    assert server["internal_address"] == host.data.private_ip
    assert server["internal_port"] == str(host.data.centrifugo_internal_port)
    assert conf["http_api"]["external"] is False
    assert conf["prometheus"]["enabled"] and conf["health"]["enabled"]
    assert conf["admin"] == {"enabled": False}
    assert conf["engine"] == {"type": "memory"}  # one streaming host
    assert [ns["name"] for ns in conf["channel"]["namespaces"]] == ["chat", "project", "user", "workspace"]


@pytest.mark.parametrize("env", ENVS)
def test_config_passes_centrifugo_checkconfig_strict(env, centrifugo_binary, tmp_path):
    inv, host = streaming_host(env)
    text = s.config_json(host.data, host.data.private_ip, group_addrs(inv))
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
    conf = config_of(inv, host, data)
    admin = conf["admin"]
    assert admin["enabled"] and not admin["external"] and not admin["insecure"]
    assert admin["password"] == host.data.secrets["centrifugo_admin_password"]
    assert admin["secret"] and admin["secret"] != admin["password"]
    text = s.config_json(data, host.data.private_ip, group_addrs(inv))
    assert checkconfig(centrifugo_binary, text, tmp_path).returncode == 0


def test_unit_checks_the_config_before_every_start():
    _, host = streaming_host("production")
    unit = s.unit_file(host.data)
    assert "User=centrifugo" in unit
    assert "ExecStartPre=/usr/local/bin/centrifugo checkconfig --strict --config /etc/centrifugo/config.json" in unit
    assert f"LimitNOFILE={host.data.centrifugo_nofile}" in unit and host.data.centrifugo_nofile >= 65536


def test_app_env_values():
    secrets = {"centrifugo_api_key": "k", "centrifugo_hmac_secret": "h"}
    env = app_model.centrifugo_app_env("codeb.kr", ["10.0.0.3", "10.0.0.2"], 8001, secrets)
    assert env == {
        "CENTRIFUGO_URL": "wss://ws.codeb.kr/connection/websocket",
        "CENTRIFUGO_API_URL": "http://10.0.0.2:8001/api",
        "CENTRIFUGO_API_KEY": "k",
        "CENTRIFUGO_SECRET": "h",
    }
    with pytest.raises(ValueError):
        app_model.centrifugo_app_env("codeb.kr", [], 8001, secrets)


# --- several streaming hosts ----------------------------------------------------------------------


def test_two_streaming_hosts_use_redis_and_a_sticky_caddy(tmp_path, centrifugo_binary):
    inv = two_streaming_hosts(tmp_path)
    host = inv.get_host("n2")
    addrs = group_addrs(inv)
    assert addrs["streaming"] == ["10.78.0.12", "10.78.0.22"]
    conf = config_of(inv, host)
    assert conf["http_server"]["address"] == "10.78.0.12"  # reachable by the other host's Caddy
    redis = conf["engine"]["redis"]
    assert conf["engine"]["type"] == "redis"
    assert redis["address"] == [f"redis://{a}:{host.data.redis_port}" for a in addrs["storage"]]
    assert redis["user"] == shared.CENTRIFUGO_REDIS_USER and redis["prefix"] == shared.CENTRIFUGO_REDIS_PREFIX
    assert redis["password"] == host.data.secrets["redis_centrifugo_password"]
    text = s.config_json(host.data, host.data.private_ip, addrs)
    assert checkconfig(centrifugo_binary, text, tmp_path).returncode == 0

    site = s.ws_site(host.data, addrs)
    port = host.data.centrifugo_client_port
    assert f"reverse_proxy 10.78.0.12:{port} 10.78.0.22:{port} {{" in site
    assert f"lb_policy {host.data.centrifugo_lb_policy}" in site
    assert host.data.centrifugo_lb_policy in ("ip_hash", "cookie")
    validate_caddy(tmp_path / "caddy", {"ws": site}, host.data)

    # The client port opens to the streaming hosts only; it is not listened on with one host.
    nft, _ = rendered_files(host.data, "n2", host.groups, addrs, platform_hosts(inv))["/etc/nftables.conf"]
    (rule,) = [line.strip() for line in nft.splitlines() if 'comment "centrifugo-client"' in line]
    assert "10.78.0.12/32, 10.78.0.22/32" in rule and f"dport {port} " in rule


# --- Caddy ---------------------------------------------------------------------------------------


def validate_caddy(tmp_path: Path, sites: dict[str, str], data) -> None:
    """`caddy validate` on the global Caddyfile and the sites, /etc paths moved to tmp_path."""
    from services.caddy import PKI_DIR, SITES_DIR, caddyfile

    caddy = shutil.which("caddy")
    if not caddy:
        pytest.skip("caddy is not installed (make deps)")
    (tmp_path / "sites").mkdir(parents=True)
    main = caddyfile(data).replace(f"{SITES_DIR}/", f"{tmp_path}/sites/").replace(f"{PKI_DIR}/", f"{tmp_path}/")
    if data.tls_mode == "internal":  # a throwaway CA where the environment's root would be
        subprocess.run(["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-keyout", str(tmp_path / "root.key"), "-out",
                        str(tmp_path / "root.crt"), "-days", "1", "-subj", "/CN=test root",
                        "-addext", "basicConstraints=critical,CA:TRUE"], check=True, capture_output=True)
    for name, body in sites.items():
        (tmp_path / "sites" / f"{name}.caddy").write_text(body)
    (tmp_path / "Caddyfile").write_text(main)
    env = dict(os.environ, HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    proc = subprocess.run([caddy, "validate", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("env", ENVS)
def test_ws_site(env, tmp_path):
    inv, host = streaming_host(env)
    site = s.ws_site(host.data, group_addrs(inv))
    lines = [line.strip() for line in site.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert lines[0] == f"ws.{host.data.platform_domain} {{"
    assert ("tls internal" in lines) == (host.data.tls_mode == "internal")
    assert "import security_headers" in lines and "import access_log" in lines
    assert "handle /connection/* {" in lines
    assert f"reverse_proxy 127.0.0.1:{host.data.centrifugo_client_port} {{" in lines
    assert "lb_policy" not in site
    # Everything else: 404 (the API, metrics and health are never proxied).
    assert lines[lines.index("handle {") + 1] == "respond 404"
    validate_caddy(tmp_path, {"ws": site}, host.data)


# --- firewall --------------------------------------------------------------------------------------


def _rules(inv, host, name):
    nft, _ = rendered_files(host.data, host.name, host.groups, group_addrs(inv), platform_hosts(inv))[
        "/etc/nftables.conf"]
    return [line.strip() for line in nft.splitlines() if f'comment "{name}"' in line]


@pytest.mark.parametrize("env", ENVS)
def test_firewall_internal_port_for_app_and_backup_only(env):
    inv, host = streaming_host(env)
    addrs = group_addrs(inv)
    port = host.data.centrifugo_internal_port
    (api,) = _rules(inv, host, "centrifugo-api")
    (metrics,) = _rules(inv, host, "centrifugo-metrics")
    assert api == f"iifname \"wg0\" ip saddr {{ {', '.join(a + '/32' for a in addrs['app'])} }} tcp dport {port} " \
                  f'accept comment "centrifugo-api"'
    assert metrics == f"iifname \"wg0\" ip saddr {{ {', '.join(a + '/32' for a in addrs['backup'])} }} tcp dport " \
                      f'{port} accept comment "centrifugo-metrics"'
    assert all("saddr" not in r for r in _rules(inv, host, "ws-https"))  # 443 from anywhere
    assert _rules(inv, host, "ws-http")
    # Nothing else on the internal port; no other host opens it.
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
