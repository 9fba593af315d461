"""PostgreSQL's rendered files for the storage host of every inventory. No host is
contacted; secrets are the render-only placeholders (`placeholder-<name>`)."""

from __future__ import annotations

import re
import subprocess

import pytest

from codeb.inventory import group_addrs
from services import postgresql
from services.postgresql import model as postgresql_model
from tests.unit.conftest import INVENTORIES, load_inventory


def storage_hosts():
    return [pytest.param((inv, host), id=f"{env}-{host.name}")
            for env in INVENTORIES for inv in [load_inventory(env)] for host in inv.get_group("storage")]


@pytest.fixture(params=storage_hosts())
def rendered(request):
    inv, host = request.param
    data = host.data
    addrs = group_addrs(inv)
    return {"data": data, "ip": data.private_ip, "addrs": addrs,
            "pg": postgresql.rendered(data, data.private_ip, addrs)}


def placeholders(text: str) -> list[str]:
    return re.findall(r"placeholder-[\w.-]+", text)


def test_files_uploaded_in_clear_hold_no_secret(rendered):
    """Files written with put() (shown by --diff) never contain a secret."""
    for key in ("conf", "hba", "state", "reload_config"):
        assert placeholders(rendered["pg"][key]) == [], key


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


def test_reload_config_names_this_hosts_cluster_as_the_shell_reads_it(rendered, tmp_path):
    """codeb-pg-reload sources the file with /bin/sh: each key reads back as the cluster's path."""
    config = tmp_path / "pg-reload.conf"
    config.write_text(rendered["pg"]["reload_config"])
    out = subprocess.run(["sh", "-c", f'. {config}; printf "%s\\n" "$service" "$bindir" "$datadir" "$confdir"'],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    p = postgresql.paths(rendered["data"].postgresql_version)
    assert out == [p["service"], p["bindir"], p["datadir"], p["confdir"]]


def test_reload_command_runs_the_installed_program_with_its_config():
    """RELOAD is a whole command line (services/pgbackrest runs it as is)."""
    assert postgresql.RELOAD == "/usr/local/sbin/codeb-pg-reload /etc/codeb/pg-reload.conf"
    assert postgresql.RELOAD_SOURCE.read_text().startswith("#!/bin/sh\n")
