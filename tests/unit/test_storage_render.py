"""The storage role's rendered files, for the storage host of every inventory. No host is
contacted; secrets are the render-only placeholders (`placeholder-<name>`)."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from codeb.inventory import group_addrs, platform_hosts
from services.garage import rendered as garage_rendered
from services.postgresql import model as postgresql_model
from services.postgresql import rendered as pg_rendered
from services.powerdns import rendered as pdns_rendered
from services.redis import rendered as redis_rendered
from tests.unit.conftest import INVENTORIES, load_inventory


def storage_hosts():
    out = []
    for env in INVENTORIES:
        inv = load_inventory(env)
        for host in inv.get_group("storage"):
            out.append(pytest.param((env, inv, host), id=f"{env}-{host.name}"))
    return out


@pytest.fixture(params=storage_hosts())
def rendered(request):
    env, inv, host = request.param
    data = host.data
    addrs, hosts = group_addrs(inv), platform_hosts(inv)
    return {
        "env": env, "data": data, "ip": data.private_ip, "addrs": addrs,
        "pg": pg_rendered(data, data.private_ip, addrs),
        "redis": redis_rendered(data, data.private_ip),
        "garage": garage_rendered(data, data.private_ip),
        "pdns": pdns_rendered(data, data.private_ip, hosts, addrs),
    }


def placeholders(text: str) -> list[str]:
    return re.findall(r"placeholder-[\w.-]+", text)


def test_files_uploaded_in_clear_hold_no_secret(rendered):
    """Files written with put() (shown by --diff) never contain a secret; only put_secret
    files do."""
    public = [rendered["pg"]["conf"], rendered["pg"]["hba"], rendered["pg"]["state"], rendered["pg"]["reload"],
              rendered["redis"]["conf"], rendered["redis"]["cli"], rendered["redis"]["check"],
              rendered["garage"]["unit"], rendered["pdns"]["desired"],
              rendered["pdns"]["sync"]]
    for text in public:
        assert placeholders(text) == []


def test_postgres_provisioning_holds_verifiers_not_passwords(rendered):
    sql = rendered["pg"]["provision"]
    assert placeholders(sql) == []
    assert sql.count("PASSWORD 'SCRAM-SHA-256$4096:") == len(postgresql_model.pg_logins(
        rendered["data"].projects.instances, rendered["data"].secrets, 20))
    assert "DROP" not in sql.upper()  # data is never dropped


def test_postgres_listens_on_localhost_and_private_address(rendered):
    conf = rendered["pg"]["conf"]
    assert f"listen_addresses = 'localhost,{rendered['ip']}'" in conf
    assert "password_encryption = 'scram-sha-256'" in conf and "ssl = on" in conf


def test_pg_hba_has_no_plain_host_or_trust_lines(rendered):
    lines = [ln.split() for ln in rendered["pg"]["hba"].splitlines() if ln and not ln.startswith("#")]
    assert lines, "empty pg_hba"
    assert {ln[0] for ln in lines} <= {"local", "hostssl"}
    assert not any("trust" in ln or "password" in ln or "md5" in ln for ln in lines)
    for ln in lines:
        if ln[0] == "hostssl":
            assert ln[3].endswith("/32") and ln[3][:-3] in rendered["addrs"]["app"]


def test_postgres_expected_state_covers_every_login(rendered):
    expected = rendered["pg"]["expected"]
    logins = postgresql_model.pg_logins(rendered["data"].projects.instances, rendered["data"].secrets, 20)
    assert len(expected) == 2 * len(logins)


def test_redis_conf(rendered):
    conf = rendered["redis"]["conf"].splitlines()
    assert f"bind 127.0.0.1 -::1 {rendered['ip']}" in conf
    for line in ("protected-mode yes", "appendonly yes", "appendfsync everysec", "aclfile /etc/redis/users.acl"):
        assert line in conf
    acl = rendered["redis"]["acl"].splitlines()
    assert acl[0] == "user default reset off"
    assert all(line.startswith("user ") for line in acl)
    assert placeholders(rendered["redis"]["acl"]) == []  # hashes only


def test_garage_listens_on_the_private_address_only(rendered):
    conf = tomllib.loads(rendered["garage"]["config"])
    ip, data = rendered["ip"], rendered["data"]
    assert conf["rpc_bind_addr"] == conf["rpc_public_addr"] == f"{ip}:{data.garage_rpc_port}"
    assert conf["s3_api"]["api_bind_addr"] == f"{ip}:{data.s3_port}"
    assert conf["admin"]["api_bind_addr"] == f"{ip}:{data.garage_admin_port}"
    assert conf["replication_factor"] == data.garage_replication_factor
    assert conf["consistency_mode"] == "consistent"
    assert conf["metadata_dir"].startswith("/var/lib/garage/") and conf["data_dir"].startswith("/var/lib/garage/")
    assert conf["rpc_secret"] == "placeholder-garage_rpc_secret"
    assert conf["admin"]["admin_token"] == "placeholder-garage_admin_token"


def test_garage_unit_is_hardened(rendered):
    unit = rendered["garage"]["unit"]
    for line in ("User=garage", "NoNewPrivileges=true", "ProtectSystem=strict", "ReadWritePaths=/var/lib/garage",
                 "CapabilityBoundingSet=", "MemoryDenyWriteExecute=true", "SystemCallFilter=@system-service",
                 "PrivateDevices=true", "ProtectHome=true"):
        assert line in unit.splitlines(), line
    assert "ExecStart=/usr/local/bin/garage -c /etc/garage.toml server" in unit


def test_garage_desired_state_has_one_bucket_and_key_per_instance(rendered):
    desired = json.loads(rendered["garage"]["desired"])
    wanted = {i.name for i in rendered["data"].projects.instances if "bucket" in i.needs}
    assert {b["bucket"] for b in desired["buckets"]} == wanted
    assert {b["name"] for b in desired["buckets"]} == wanted
    assert desired["rpc_public_addr"] == f"{rendered['ip']}:{rendered['data'].garage_rpc_port}"


def test_pdns_conf(rendered):
    conf = dict(line.split("=", 1) for line in rendered["pdns"]["conf"].splitlines()
                if line and not line.startswith("#"))
    assert conf["launch"] == "gpgsql"
    assert conf["local-address"] == f"127.0.0.1, {rendered['ip']}"
    assert conf["webserver-address"] == rendered["ip"]
    assert conf["api-key"].startswith("$scrypt$ln=10,p=1,r=8$")
    assert "placeholder" not in conf["api-key"]
    allowed = {a.strip() for a in conf["webserver-allow-from"].split(",")}
    assert allowed == {f"{a}/32" for a in rendered["addrs"]["app"]} | {f"{rendered['ip']}/32"}


def test_pdns_zones_cover_every_registry_domain(rendered):
    desired = json.loads(rendered["pdns"]["desired"])
    names = {rr[0] for z in desired["zones"] for rr in z["rrsets"]}
    for inst in rendered["data"].projects.instances:
        for d in inst.domains:
            assert d + "." in names
    platform = rendered["data"].platform_domain
    for short in ("ws", "api", "db"):
        assert f"{short}.{platform}." in names
