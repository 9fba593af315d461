"""The control node's inventory reader and ssh command lines: no host is contacted here."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeb import ssh
from codeb.inventory import REPO, inventory_path, read_inventory, unique_hosts
from codeb.registry import HOST_GROUPS

INVENTORY = """
from codeb.preflight import environment_group

_ssh = {"ssh_user": "deploy", "ssh_key": "keys/id", "ssh_known_hosts_file": "known/hosts"}
app = [("a1", {"ssh_hostname": "192.0.2.1", "public_ip": "192.0.2.1", "private_ip": "10.78.0.1", **_ssh}),
       ("a2", {"ssh_hostname": "192.0.2.2", "private_ip": "10.78.0.2", "ssh_port": 2222, **_ssh})]
streaming = [("s1", {"ssh_hostname": "192.0.2.3", "public_ip": "192.0.2.3", "private_ip": "10.78.0.3", **_ssh})]
storage = [("s1", {"ssh_hostname": "192.0.2.3", "public_ip": "192.0.2.3", "private_ip": "10.78.0.3", **_ssh})]
backup = [("b1", {"ssh_hostname": "192.0.2.4", "public_ip": "192.0.2.4", "private_ip": "10.78.0.4", **_ssh})]
local = environment_group("local", globals())
"""


@pytest.fixture
def inventory_file(tmp_path) -> Path:
    path = tmp_path / "local.py"
    path.write_text(INVENTORY)
    return path


def test_hosts_per_group_in_inventory_order_with_their_data(inventory_file):
    groups = read_inventory(inventory_file, validate=False)
    assert tuple(groups) == HOST_GROUPS
    assert [h.name for h in groups["app"]] == ["a1", "a2"]
    a2 = groups["app"][1]
    assert a2.data["ssh_port"] == 2222 and a2.private_ip == "10.78.0.2"
    assert a2.public_ip == "192.0.2.2"  # no public_ip: the SSH address


def test_a_host_in_two_groups_is_one_host_with_both_groups(inventory_file):
    groups = read_inventory(inventory_file, validate=False)
    assert groups["streaming"][0] is groups["storage"][0]
    hosts = unique_hosts(groups)
    assert list(hosts) == ["a1", "a2", "s1", "b1"]
    assert hosts["s1"].groups == ("streaming", "storage")


def test_validate_runs_the_inventory_checks(inventory_file, monkeypatch):
    from codeb import preflight

    seen = []
    monkeypatch.setattr(preflight, "environment_group", lambda env, groups: seen.append(env) or ([], {}))
    read_inventory(inventory_file)
    assert seen == ["local"]
    seen.clear()
    read_inventory(inventory_file, validate=False)
    assert seen == []


def test_the_checks_are_back_after_a_read_without_them(inventory_file):
    from codeb import preflight

    before = preflight.environment_group
    read_inventory(inventory_file, validate=False)
    assert preflight.environment_group is before


def test_environment_names_and_paths():
    assert inventory_path("staging") == REPO / "inventory" / "staging.py"
    assert inventory_path("inventory/local.py") == REPO / "inventory" / "local.py"
    assert inventory_path("/elsewhere/local.py") == Path("/elsewhere/local.py")


@pytest.mark.parametrize("env", ["production", "staging", "local"])
def test_the_real_inventories_have_every_group(env):
    groups = read_inventory(env, validate=False)
    assert all(groups[g] for g in HOST_GROUPS)
    for host in unique_hosts(groups).values():
        assert host.data["ssh_user"] == "deploy" and host.data["ssh_strict_host_key_checking"] == "yes"


# --- ssh: one host-key policy ------------------------------------------------------------------


DATA = {"ssh_hostname": "192.0.2.1", "ssh_user": "deploy", "ssh_key": "keys/id", "ssh_known_hosts_file": "known/hosts"}


def pairs(cmd: list[str]) -> dict[str, str]:
    return dict(cmd[i + 1].split("=", 1) for i, arg in enumerate(cmd) if arg == "-o")


def test_command_pins_host_keys_and_checks_them_strictly():
    cmd = ssh.command(DATA, "true")
    opts = pairs(cmd)
    assert cmd[0] == "ssh" and cmd[-2:] == ["deploy@192.0.2.1", "true"]
    assert opts["StrictHostKeyChecking"] == "yes"
    assert opts["UserKnownHostsFile"] == str(REPO / "known" / "hosts")
    assert opts["GlobalKnownHostsFile"] == "/dev/null"
    assert opts["BatchMode"] == "yes"
    assert opts["IdentityFile"] == str(REPO / "keys" / "id") and opts["IdentitiesOnly"] == "yes"
    assert "Port" not in opts


def test_command_user_port_timeout_and_extra_options():
    cmd = ssh.command({**DATA, "ssh_port": 2222}, None, user="root", connect_timeout=3,
                      extra=["-N", "-L", "127.0.0.1:1:10.0.0.1:2"])
    opts = pairs(cmd)
    assert opts["Port"] == "2222" and opts["ConnectTimeout"] == "3"
    assert cmd[-4:] == ["-N", "-L", "127.0.0.1:1:10.0.0.1:2", "root@192.0.2.1"]


def test_no_known_hosts_file_is_refused():
    with pytest.raises(SystemExit, match="host keys must be pinned"):
        ssh.command({k: v for k, v in DATA.items() if k != "ssh_known_hosts_file"}, "true")


def test_the_ssh_config_has_the_same_settings_as_the_command_line():
    text = ssh.config({"n1": DATA, "n2": {**DATA, "ssh_hostname": "192.0.2.2", "ssh_port": 2222}})
    entries = text.split("Host ")[1:]
    assert [e.splitlines()[0] for e in entries] == ["n1", "n2"]
    for entry, data in zip(entries, (DATA, {**DATA, "ssh_port": 2222}), strict=True):
        lines = dict(line.strip().split(" ", 1) for line in entry.splitlines()[1:] if line.strip())
        assert lines.pop("User") == "deploy"
        lines.pop("HostName")
        assert lines == pairs(ssh.command(data, "true"))


def test_known_hosts_names_carry_a_port_other_than_22():
    assert ssh.known_hosts_name(DATA) == "192.0.2.1"
    assert ssh.known_hosts_name({**DATA, "ssh_port": 22}) == "192.0.2.1"
    assert ssh.known_hosts_name({**DATA, "ssh_port": 2222}) == "[192.0.2.1]:2222"
