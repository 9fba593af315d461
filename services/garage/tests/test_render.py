"""Garage's rendered files for the storage host of every inventory. No host is contacted;
secrets are the render-only placeholders (`placeholder-<name>`)."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from services import garage
from tests.unit.conftest import INVENTORIES, load_inventory


def storage_hosts():
    return [pytest.param(host, id=f"{env}-{host.name}")
            for env in INVENTORIES for inv in [load_inventory(env)] for host in inv.get_group("storage")]


@pytest.fixture(params=storage_hosts())
def rendered(request):
    data = request.param.data
    return {"data": data, "ip": data.private_ip, "garage": garage.rendered(data, data.private_ip)}


def test_unit_uploaded_in_clear_holds_no_secret(rendered):
    """The unit goes up with put() (shown by --diff); config and desired state are put_secret."""
    assert re.findall(r"placeholder-[\w.-]+", rendered["garage"]["unit"]) == []


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
