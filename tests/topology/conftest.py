"""Shared fixtures for the topology tests: real hosts of the local topology, real clients.

Run after `make up` (or inside `make test`): `.venv/bin/pytest tests/topology`.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import testinfra
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from lab.topology import inventory_groups  # noqa: E402

LAB = REPO / ".lab"
SSH_CONFIG = LAB / "ssh" / "config"
SSH_KEY = LAB / "ssh" / "id_ed25519"
CA_CERT = LAB / "ca" / "root.crt"
GROUPS = ("app", "streaming", "storage", "backup")


@cache
def inventory() -> dict[str, dict]:
    """name -> {"addr": private address, "groups": [...]} from inventory/local.py."""
    return inventory_groups()


def hosts_in(group: str) -> list[str]:
    return [name for name, h in inventory().items() if group in h["groups"]]


def addr(name: str) -> str:
    return inventory()[name]["addr"]


@cache
def connect(name: str):
    """A testinfra host over SSH as the deploy account, with sudo."""
    return testinfra.get_host(f"ssh://{name}", ssh_config=str(SSH_CONFIG), sudo=True)


@cache
def group_data(env: str = "local") -> dict:
    data = runpy.run_path(str(REPO / "group_data" / "all.py"))
    data.update(runpy.run_path(str(REPO / "group_data" / f"{env}.py")))
    return data


@cache
def lab_secrets() -> dict[str, str]:
    return yaml.safe_load((LAB / "secrets" / "local.yml").read_text())


def gateway_ssh(user: str, address: str, *extra: str, timeout: int = 10) -> subprocess.CompletedProcess:
    """An SSH attempt from the gateway with the topology key, as `user`."""
    return subprocess.run(
        ["ssh", "-i", str(SSH_KEY), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", f"ConnectTimeout={timeout}", *extra, f"{user}@{address}", "true"],
        capture_output=True, text=True, timeout=timeout + 10,
    )


ALL_HOSTS = list(inventory())


@pytest.fixture(params=ALL_HOSTS)
def any_host(request):
    return request.param, connect(request.param)
