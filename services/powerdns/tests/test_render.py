"""PowerDNS's rendered files for the storage host of every inventory: pdns.conf, the
wanted zones and pdns-sync's configuration. No host is contacted; secrets are the
render-only placeholders (`placeholder-<name>`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from codeb.inventory import group_addrs, platform_hosts
from services import powerdns
from services.powerdns import pdns_sync
from tests.unit.conftest import INVENTORIES, load_inventory


def storage_hosts():
    return [pytest.param((inv, host), id=f"{env}-{host.name}")
            for env in INVENTORIES for inv in [load_inventory(env)] for host in inv.get_group("storage")]


@pytest.fixture(params=storage_hosts())
def rendered(request):
    inv, host = request.param
    data = host.data
    addrs, hosts = group_addrs(inv), platform_hosts(inv)
    return {"data": data, "ip": data.private_ip, "addrs": addrs,
            "pdns": powerdns.rendered(data, data.private_ip, hosts, addrs)}


def test_files_uploaded_in_clear_hold_no_secret(rendered):
    """The wanted zones and pdns-sync's config go up with put() (shown by --diff)."""
    for key in ("desired", "sync_config"):
        assert re.findall(r"placeholder-[\w.-]+", rendered["pdns"][key]) == [], key


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


def test_sync_config_points_pdns_sync_at_the_private_api_its_key_and_the_wanted_zones(rendered):
    config = json.loads(rendered["pdns"]["sync_config"])
    assert config == {"api_url": f"http://{rendered['ip']}:{rendered['data'].pdns_api_port}",
                      "key_file": powerdns.KEY_FILE, "desired": powerdns.DESIRED, "account": powerdns.ACCOUNT}
    assert set(config) == set(pdns_sync.CONFIG_KEYS)


def test_wanted_zones_are_what_pdns_sync_reads(rendered):
    """Every wanted zone plans as a creation against an empty server (the file's shape is
    the one pdns-sync expects)."""
    desired = json.loads(rendered["pdns"]["desired"])
    changes = pdns_sync.plan(desired, [], {}, powerdns.ACCOUNT)
    assert [c[:2] for c in changes] == [("create", z["name"]) for z in desired["zones"]]
    assert all(z["name"].endswith(".") and z["nameservers"] for z in desired["zones"])


def test_deploy_installs_the_tested_program_at_its_path():
    """What is uploaded to /usr/local/lib/codeb/pdns-sync is the module these tests import."""
    assert powerdns.SYNC == "/usr/local/lib/codeb/pdns-sync"
    assert powerdns.SYNC_SOURCE == Path(pdns_sync.__file__)
