"""Shared fixtures for the topology tests: real hosts of the local topology, real clients.

Run after `make up` (or inside `make test`): `.venv/bin/pytest tests/topology`.
"""

from __future__ import annotations

import functools
import os
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
from codeb import ssh  # noqa: E402
from codeb.inventory import Host  # noqa: E402
from lab.topology import BRIDGE, SSH_CONFIG, inventory_hosts  # noqa: E402

LAB = REPO / ".lab"
CA_CERT = LAB / "ca" / "root.crt"


# --- the local inventory, read once, when a test first needs it -----------------------------------


@cache
def inventory() -> dict[str, Host]:
    """name -> Host (public_ip, private_ip, groups, data) of every host of inventory/local.py."""
    return inventory_hosts()


def hosts_in(group: str) -> list[str]:
    return [name for name, h in inventory().items() if group in h.groups]


def first(group: str) -> str:
    """The group's first host (the tests' app, storage, backup host ...)."""
    return hosts_in(group)[0]


def addr(name: str) -> str:
    """The host's public address: what the gateway (admin network) and vantage points reach."""
    return inventory()[name].public_ip


def private(name: str) -> str:
    """The host's private (mesh) address: what the other guests use for internal services."""
    return inventory()[name].private_ip


def pytest_generate_tests(metafunc):
    """Parametrize from the inventory at collection, never at import: `any_host` (name, testinfra
    host) and, for tests marked `each_host` (optionally with a group, and the argument name
    with arg=...), one test per host name."""
    if "any_host" in metafunc.fixturenames:
        metafunc.parametrize("any_host", list(inventory()), indirect=True)
    marker = metafunc.definition.get_closest_marker("each_host")
    if marker:
        names = hosts_in(marker.args[0]) if marker.args else list(inventory())
        metafunc.parametrize(marker.kwargs.get("arg", "name"), names)


@pytest.fixture
def any_host(request):
    return request.param, connect(request.param)


@cache
def connect(name: str):
    """A testinfra host over SSH as the deploy account, with sudo (.lab/ssh/config: codeb/ssh.py's settings)."""
    return testinfra.get_host(f"ssh://{name}", ssh_config=str(SSH_CONFIG), sudo=True)


@cache
def group_data(env: str = "local") -> dict:
    data = runpy.run_path(str(REPO / "group_data" / "all.py"))
    data.update(runpy.run_path(str(REPO / "group_data" / f"{env}.py")))
    return data


@cache
def lab_secrets() -> dict[str, str]:
    return yaml.safe_load((LAB / "secrets" / "local.yml").read_text())


# --- ssh, apply and plan ---------------------------------------------------------------------------


def ssh_run(name: str, remote: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    """`remote` (a shell command line) on a host over SSH as the deploy account, with codeb/ssh.py's
    host-key policy; secrets go on stdin only."""
    return subprocess.run(ssh.command(inventory()[name].data, remote), input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def gateway_ssh(user: str, name: str, *extra: str, timeout: int = 10) -> subprocess.CompletedProcess:
    """An SSH attempt from the gateway with the topology key, as `user`, to a host's public address."""
    cmd = ssh.command(inventory()[name].data, "true", user=user, connect_timeout=timeout, extra=extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)


def deploy(command: str, *args: str, env: dict | None = None, inventory_file: str | Path | None = None,
           timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m tools.run <command> local` (apply, plan, bootstrap), as `make apply`/`make plan`
    run it (pyinfra's output on stdout, a log in .lab/logs). `args` go to pyinfra (--limit, --data);
    `env` is added to the environment; `inventory_file` replaces inventory/local.py."""
    cmd = [sys.executable, "-m", "tools.run", command, "local"]
    if inventory_file:
        cmd += ["--inventory", str(inventory_file)]
    if args:
        cmd += ["--", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def ssh_to():
    """ssh_to(name, remote, stdin="", timeout=60): a command on a host as the deploy account."""
    return ssh_run


@pytest.fixture(scope="session")
def apply():
    """apply(*pyinfra_args, env=None, inventory_file=None): the deploy, applied."""
    return functools.partial(deploy, "apply")


@pytest.fixture(scope="session")
def plan():
    """plan(*pyinfra_args, env=None): the deploy's dry run with diffs; exit 0 clean, 2 drift."""
    return functools.partial(deploy, "plan")


# --- a capture of the public bridge for the whole session ---------------------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", "public_capture: reads the session's capture of the public bridge; runs last")
    config.addinivalue_line("markers", "each_host(group=None, arg='name'): one test per host (of the group)")
    # `destructive` is registered in pyproject.toml.


def pytest_collection_modifyitems(config, items):
    """Destructive tests (they stop services, restore, migrate, scale out, break an apply) run
    after every other test, and the capture check after them all; each keeps its relative order."""
    def rank(item) -> int:
        if item.get_closest_marker("public_capture"):
            return 2
        return 1 if item.get_closest_marker("destructive") else 0

    items[:] = sorted(items, key=rank)  # sorted() is stable


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
    app = first("app")
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
