"""Redis's rendered files for the storage host of every inventory. No host is contacted;
secrets are the render-only placeholders (`placeholder-<name>`)."""

from __future__ import annotations

import re
import subprocess

import pytest

from services import redis
from services.redis import model as redis_model
from tests.unit.conftest import INVENTORIES, load_inventory


def storage_hosts():
    return [pytest.param(host, id=f"{env}-{host.name}")
            for env in INVENTORIES for inv in [load_inventory(env)] for host in inv.get_group("storage")]


@pytest.fixture(params=storage_hosts())
def rendered(request):
    data = request.param.data
    return {"data": data, "ip": data.private_ip, "redis": redis.rendered(data, data.private_ip)}


def placeholders(text: str) -> list[str]:
    return re.findall(r"placeholder-[\w.-]+", text)


def test_files_uploaded_in_clear_hold_no_secret(rendered):
    """redis.conf and the CLI wrapper's config go up with put() (shown by --diff); the ACL
    file holds hashes only."""
    for key in ("conf", "cli_config", "acl"):
        assert placeholders(rendered["redis"][key]) == [], key
    assert rendered["redis"]["admin_env"] == "REDISCLI_AUTH=placeholder-redis_admin_password\n"


def test_redis_conf_listens_on_localhost_and_private_address_with_aof_and_the_acl_file(rendered):
    conf = rendered["redis"]["conf"].splitlines()
    assert f"bind 127.0.0.1 -::1 {rendered['ip']}" in conf
    for line in ("protected-mode yes", "appendonly yes", "appendfsync everysec", "aclfile /etc/redis/users.acl"):
        assert line in conf


def test_acl_file_turns_default_off_and_holds_only_user_lines(rendered):
    acl = rendered["redis"]["acl"].splitlines()
    assert acl[0] == "user default reset off"
    assert all(line.startswith("user ") for line in acl)


def test_cli_config_names_the_admin_env_file_user_and_port_as_the_shell_reads_it(rendered, tmp_path):
    """codeb-redis-cli sources the file with /bin/sh."""
    config = tmp_path / "codeb-cli.conf"
    config.write_text(rendered["redis"]["cli_config"])
    out = subprocess.run(["sh", "-c", f'. {config}; printf "%s\\n" "$env_file" "$user" "$port"'],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == [redis.ADMIN_ENV, redis_model.REDIS_ADMIN_USER, str(rendered["data"].redis_port)]


def test_cli_wrapper_reads_the_config_the_deploy_uploads():
    """The deploy calls `codeb-redis-cli <args>` without --config: the wrapper's default is CLI_CONFIG."""
    assert f"config={redis.CLI_CONFIG}\n" in redis.CLI_SOURCE.read_text()
