"""Shared fixtures for the topology tests: real hosts of the local topology, real clients.

Run after `make up` (or inside `make test`): `.venv/bin/pytest tests/topology`.
"""

from __future__ import annotations

import runpy
import secrets
import subprocess
import sys
import time
import urllib.request
from functools import cache
from pathlib import Path

import pytest
import testinfra
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from lab.topology import BRIDGE, inventory_groups  # noqa: E402

LAB = REPO / ".lab"
SSH_CONFIG = LAB / "ssh" / "config"
SSH_KEY = LAB / "ssh" / "id_ed25519"
CA_CERT = LAB / "ca" / "root.crt"
GROUPS = ("app", "streaming", "storage", "backup")


@cache
def inventory() -> dict[str, dict]:
    """name -> {"addr": public address, "private": private address, "groups": [...]}."""
    return inventory_groups()


def hosts_in(group: str) -> list[str]:
    return [name for name, h in inventory().items() if group in h["groups"]]


def addr(name: str) -> str:
    """The host's public address: what the gateway (admin network) and vantage points reach."""
    return inventory()[name]["addr"]


def private(name: str) -> str:
    """The host's private (mesh) address: what the other guests use for internal services."""
    return inventory()[name]["private"]


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


# --- a capture of the public bridge for the whole session ---------------------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", "public_capture: reads the session's capture of the public bridge; runs last")


def pytest_collection_modifyitems(config, items):
    last = [i for i in items if i.get_closest_marker("public_capture")]
    items[:] = [i for i in items if not i.get_closest_marker("public_capture")] + last


@pytest.fixture(scope="session", autouse=True)
def public_capture():
    """tcpdump on the lab's public bridge from the first topology test to the capture check
    (tests/topology/test_network.py), which must find no secret in it. A canary sent in clear
    text to an app host's port 80 proves the capture saw the bridge's traffic."""
    pcap = LAB / "public-bridge.pcap"
    pcap.unlink(missing_ok=True)
    proc = subprocess.Popen(["tcpdump", "-i", BRIDGE, "-s", "0", "-U", "-n", "-w", str(pcap)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not pcap.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None and pcap.exists(), "tcpdump did not start on the public bridge"
    canary = f"codeb-capture-canary-{secrets.token_hex(8)}".encode()
    app = [n for n, h in inventory().items() if "app" in h["groups"]][0]
    request = urllib.request.Request(f"http://{addr(app)}/", headers={"X-Canary": canary.decode()})
    try:
        urllib.request.urlopen(request, timeout=5).close()
    except Exception:  # a redirect or an error page: the request crossed the bridge all the same
        pass

    def stop():
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        return pcap

    yield {"canary": canary, "stop": stop}
    stop()
