"""App hosts, offline: env files, Quadlet units, Caddy sites, release state (services/app)."""

from __future__ import annotations

import json
import shutil
import subprocess
from types import SimpleNamespace

import pytest

from codeb import shared
from codeb.inventory import group_addrs
from codeb.registry import SLOTS, Instance, RateLimit
from services.app import model as app_model
from services.app import render as r
from services.caddy.tests import pinned_caddy
from tests.unit.conftest import load_inventory

ENVS = ("local", "staging", "production")


def app_host(env):
    inv = load_inventory(env)
    host = inv.get_group("app")[0]
    return inv, host


def instances(host):
    return [i for i in host.data.projects.instances if i.group in host.groups]


def inst(**kw):
    base = dict(project="shop", env="production", port=4200, domains=("shop.example.com",), image="ghcr.io/x/shop",
                tag="1.2.3", group="app", needs=frozenset({"database", "redis", "bucket", "realtime"}))
    base.update(kw)
    return Instance(**base)


SECRETS = {
    "db_password.shop-production": "dbpw",
    "redis_password.shop-production": "rpw",
    "s3_key_id.shop-production": "GK0123456789abcdef01234567",
    "s3_key_secret.shop-production": "s3pw",
    "centrifugo_api_key.shop-production": "apikey",
    "centrifugo_hmac_secret.shop-production": "hmac",
}


def env_of(i, secrets=SECRETS):
    return app_model.app_env(i, secrets, storage_addr="10.0.0.3", streaming_addrs=["10.0.0.2"],
                          platform_domain="example.net", postgresql_port=5432, redis_port=6379, s3_port=3900,
                          s3_region="garage", centrifugo_internal_port_offset=20000)


# --- env files -------------------------------------------------------------------------


def test_env_has_every_variable_the_manual_lists():
    env = env_of(inst())
    assert env["NODE_ENV"] == "production"
    assert env["PORT"] == "4200"
    assert env["DATABASE_URL"] == "postgresql://shop_production:dbpw@10.0.0.3:5432/shop_production?sslmode=require"
    assert env["REDIS_URL"] == "redis://shop-production:rpw@10.0.0.3:6379/0"
    assert env["REDIS_PREFIX"] == "shop-production:"
    # The prefix lies inside what the Redis ACL grants the user.
    assert shared.redis_acl_patterns(shared.redis_prefix(inst()))[0] == "~" + env["REDIS_PREFIX"] + "*"
    assert env["S3_BUCKET"] == "shop-production" and env["S3_SECRET_ACCESS_KEY"] == "s3pw"
    assert env["S3_ACCESS_KEY_ID"] == "GK0123456789abcdef01234567"
    assert env["S3_ENDPOINT"] == "http://10.0.0.3:3900" and env["S3_REGION"] == "garage"
    # The instance's own Centrifugo: its path on the ws site, its internal port (port + offset).
    assert env["CENTRIFUGO_URL"] == "wss://ws.example.net/shop-production/connection/websocket"
    assert env["CENTRIFUGO_API_URL"] == "http://10.0.0.2:24200/api"
    assert env["CENTRIFUGO_API_URLS"] == "http://10.0.0.2:24200/api"
    assert env["CENTRIFUGO_API_KEY"] == "apikey" and env["CENTRIFUGO_SECRET"] == "hmac"


def test_env_holds_only_what_the_instance_needs():
    env = env_of(inst(needs=frozenset()), secrets={})
    assert set(env) == {"NODE_ENV", "PORT"}


def test_env_file_text_and_its_refusals():
    assert app_model.env_file_text({"A": "1", "B": "x y"}) == "A=1\nB=x y\n"
    with pytest.raises(ValueError):
        app_model.env_file_text({"A": "line\nbreak"})


@pytest.mark.parametrize("env", ENVS)
def test_env_files_render_for_every_instance(env):
    inv, host = app_host(env)
    addrs = group_addrs(inv)
    for i in instances(host):
        text = r.env_file(i, host.data, host.data.secrets, addrs["storage"][0], addrs["streaming"][0])
        keys = [line.split("=", 1)[0] for line in text.splitlines()]
        assert keys[:2] == ["NODE_ENV", "PORT"]
        assert f"PORT={i.port}\n" in text
        assert f"@{addrs['storage'][0]}:{host.data.postgresql_port}/{shared.db_name(i)}?sslmode=require" in text


# --- release state and images ------------------------------------------------------------


def test_default_image_is_the_registry_pin_or_the_environment_override():
    data = SimpleNamespace(get=lambda k, d=None: None)
    assert r.default_image(inst(), data) == "ghcr.io/x/shop:1.2.3"
    assert r.default_image(inst(tag="sha256:" + "a" * 64), data) == "ghcr.io/x/shop@sha256:" + "a" * 64
    _, local = app_host("local")
    assert r.default_image(inst(), local.data) == f"{local.data.container_registry}/codeb/demo:1"


def test_state_round_trip_and_malformed_state_is_an_error():
    _, host = app_host("production")
    i = instances(host)[0]
    state = r.parse_state(None, i, host.data)
    assert state == {"active": "blue", "previous": None,
                     "slots": {"blue": f"{i.image}:{i.tag}", "green": f"{i.image}:{i.tag}"}}
    assert r.parse_state(r.state_text(state), i, host.data) == state
    with pytest.raises(ValueError):
        r.parse_state(json.dumps({"active": "red", "slots": {}}), i, host.data)
    assert app_model.other_slot("blue") == "green" and app_model.other_slot("green") == "blue"


# --- Quadlet units -----------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_units_for_both_slots(env):
    inv, host = app_host(env)
    addrs = group_addrs(inv)
    for i in instances(host):
        state = {"active": "green", "previous": "blue", "slots": {"blue": "img:old", "green": "img:new"}}
        units = r.units_for_state(i, state, host.data, addrs["app"], host.data.private_ip)
        assert set(units) == {r.unit_file(i, s) for s in SLOTS}
        for slot in SLOTS:
            text = units[r.unit_file(i, slot)]
            assert f"PublishPort=127.0.0.1:{i.slot_ports[slot]}:{i.port}\n" in text
            assert f"Image={state['slots'][slot]}\n" in text
            assert f"EnvironmentFile={app_model.env_file_path(i)}\n" in text
            assert "Notify=healthy\n" in text and "/api/health" in text
            assert "Restart=on-failure\n" in text and "MemoryMax=" in text
            # Only the active slot starts at boot.
            assert ("WantedBy=multi-user.target" in text) == (slot == "green")
        assert ("PodmanArgs=--cgroups=disabled" in text) == (env == "local")
        assert ("REGISTRY_AUTH_FILE" in text) == (env == "production")


def test_units_pass_quadlet_dryrun(tmp_path):
    """Quadlet itself (Podman >= 4.4) checks the units where it exists; on this control node's
    Debian bookworm (Podman 4.3) it does not, and the topology test runs it on the app host."""
    quadlet = shutil.which("quadlet") or (r.QUADLET if shutil.os.path.exists(r.QUADLET) else None)
    if not quadlet:
        pytest.skip("quadlet is not installed here (checked on the app host by tests/topology/test_app.py)")
    inv, host = app_host("local")
    addrs = group_addrs(inv)
    for i in instances(host):
        for path, text in r.units_for_state(i, r.parse_state(None, i, host.data), host.data, addrs["app"],
                                            host.data.private_ip).items():
            (tmp_path / path.rsplit("/", 1)[1]).write_text(text)
    proc = subprocess.run([quadlet, "-dryrun"], env={"QUADLET_UNIT_DIRS": str(tmp_path)}, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


# --- Caddy sites --------------------------------------------------------------------------


def test_upstreams_single_and_multi_host():
    i = inst()
    assert app_model.app_upstreams(i, "green", ["10.0.0.1"]) == ["127.0.0.1:4201"]
    assert app_model.app_upstreams(i, "blue", ["10.0.0.2", "10.0.0.1"]) == ["10.0.0.1:4200", "10.0.0.2:4200"]
    assert app_model.app_publish_addr(["10.0.0.1"], "10.0.0.1") == "127.0.0.1"
    assert app_model.app_publish_addr(["10.0.0.1", "10.0.0.2"], "10.0.0.2") == "10.0.0.2"
    assert app_model.caddy_lb_policy("cookie", i) == "cookie lb_shop_production"
    assert app_model.caddy_lb_policy("least_conn", i) == "least_conn"


def _validate_caddy(tmp_path, sites: dict[str, str], data):
    from services.caddy import caddyfile

    caddy = pinned_caddy()
    main = caddyfile(data).replace("/etc/caddy/sites/", f"{tmp_path}/sites/")
    (tmp_path / "sites").mkdir()
    for name, body in sites.items():
        (tmp_path / "sites" / f"{name}.caddy").write_text(body)
    (tmp_path / "Caddyfile").write_text(main)
    proc = subprocess.run([caddy, "validate", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]  # Caddy logs errors to stdout


@pytest.mark.parametrize("env", ENVS)
def test_sites_pass_caddy_validate(env, tmp_path):
    inv, host = app_host(env)
    addrs = group_addrs(inv)
    sites = {r.site_name(i): r.site(i, "blue", host.data, addrs["app"], host.data.private_ip)
             for i in instances(host)}
    for i in instances(host):
        body = sites[r.site_name(i)]
        assert body.splitlines()[2].startswith(", ".join(i.domains) + " {")
        assert "import security_headers" in body and "import access_log" in body
        assert "health_uri /api/health" in body and "header_down X-Upstream {rp.upstream.hostport}" in body
        assert f"127.0.0.1:{i.slot_ports['blue']}" in body
        assert ("tls internal" in body) == (env == "local")
        # Open WebSockets outlive a reload (group data), and no limit unless the registry sets one.
        assert f"stream_close_delay {host.data.caddy_stream_close_delay}" in body
        assert ("rate_limit {" in body) == (i.rate_limit is not None)
    data = host.data
    _validate_caddy(tmp_path, sites, data if env != "local" else SimpleNamespace(
        tls_mode="acme", get=data.get, platform_domain=data.platform_domain))


def test_multi_host_sites_balance_with_the_registry_policy(tmp_path):
    _, host = app_host("production")
    addrs = ["10.0.0.1", "10.0.0.2"]
    sites = {}
    for i in instances(host):
        body = r.site(i, "green", host.data, addrs, "10.0.0.1")
        sites[r.site_name(i)] = body
        assert f"reverse_proxy 10.0.0.1:{i.slot_ports['green']} 10.0.0.2:{i.slot_ports['green']} {{" in body
        assert f"lb_policy {app_model.caddy_lb_policy(i.lb_policy, i)}" in body
    _validate_caddy(tmp_path, sites, host.data)


def test_a_rate_limited_site_limits_per_client_ip_and_passes_caddy_validate(tmp_path):
    """The registry's rate_limit becomes the plugin's rate_limit, one zone per instance (zones are
    shared by name across a Caddy process), keyed by the client address; the pinned Caddy
    (which has the plugin and orders it before the proxy) accepts it."""
    _, host = app_host("production")
    limited = inst(rate_limit=RateLimit(requests=100, window="1m"))
    body = r.site(limited, "blue", host.data, ["10.0.0.1"], "10.0.0.1")
    lines = [line.strip() for line in body.splitlines()]
    block = lines[lines.index("rate_limit {"):lines.index("reverse_proxy 127.0.0.1:4200 {")]
    assert block == ["rate_limit {", "zone shop-production {", "key {remote_host}", "events 100", "window 1m",
                     "}", "}"]
    assert "rate_limit" not in r.site(inst(), "blue", host.data, ["10.0.0.1"], "10.0.0.1")
    _validate_caddy(tmp_path, {r.site_name(limited): body}, host.data)


# --- Podman configuration -----------------------------------------------------------------


def test_podman_dropins_are_data():
    _, local = app_host("local")
    conf = r.containers_conf(local.data)
    assert "pids_limit = 0" in conf and 'firewall_driver = "nftables"' in conf
    assert f'location = "{local.data.container_registry}"\ninsecure = true' in r.registries_conf(local.data)
    _, prod = app_host("production")
    assert "pids_limit" not in r.containers_conf(prod.data)
    assert "[[registry]]" not in r.registries_conf(prod.data)


def test_registry_auth_json():
    text = app_model.registry_auth_json("ghcr.io", "me", "tok")
    assert json.loads(text) == {"auths": {"ghcr.io": {"auth": "bWU6dG9r"}}}


def test_database_url_verifies_the_server_certificate_by_name():
    from codeb import registry

    inst = next(i for i in registry.load().instances if "database" in i.needs)
    url = app_model.database_url(inst, "pw", "n3.codeb.test", 5432, shared.PLATFORM_CA_FILE)
    assert url.startswith(f"postgresql://{shared.db_role(inst)}:pw@n3.codeb.test:5432/{shared.db_name(inst)}?")
    assert url.endswith(f"sslmode=verify-full&sslrootcert={shared.PLATFORM_CA_FILE}")


def test_app_containers_get_the_platform_ca_read_only():
    from tests.unit.conftest import all_hosts

    for _env, _inv, host in [h for h in all_hosts() if "app" in h[2].groups]:
        inst = next(i for i in host.data.projects.instances if i.group in host.groups)
        unit = r.container_unit(inst, "blue", "img", True, host.data, ["10.78.0.11"], "10.78.0.11")
        assert f"Volume={shared.PLATFORM_CA_FILE}:{shared.PLATFORM_CA_FILE}:ro" in unit


def test_an_env_switch_moves_to_the_idle_slot_with_the_active_image():
    from services.app import env_switch

    state = {"active": "blue", "previous": "green", "slots": {"blue": "img@sha256:new", "green": "img@sha256:old"}}
    assert env_switch(state) == {"active": "green", "previous": "blue",
                                 "slots": {"blue": "img@sha256:new", "green": "img@sha256:new"}}
    assert env_switch(env_switch(state))["active"] == "blue"


def test_stale_env_fact_compares_the_container_start_with_the_env_file():
    from services.app import StaleEnv

    fact = StaleEnv()
    cmd = fact.command([("shop-production", "shop-production-blue", "/etc/platform/apps/shop-production.env")])
    assert "podman inspect" in cmd and "shop-production-blue" in cmd and "stat -c %.9Y" in cmd
    assert fact.command([]) == "true"
    proc = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert fact.process(["shop-production", ""]) == ["shop-production"]
