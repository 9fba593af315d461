"""Redis 8 (Debian trixie's redis-server): localhost and the private address, protected
mode, AOF everysec, users from the registry in an ACL file (`default` off)."""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from codeb.files import put, put_secret
from codeb.ops import record, restart_on_change
from codeb.render import templates

from . import model

render = templates(__file__)

CONF = "/etc/redis/redis.conf"
ACL = "/etc/redis/users.acl"
ADMIN_ENV = "/etc/redis/admin.env"
CLI = "/usr/local/sbin/codeb-redis-cli"
CLI_SOURCE = Path(__file__).with_name("redis-cli.sh")
CLI_CONFIG = "/etc/redis/codeb-cli.conf"  # what redis-cli.sh reads unless given --config
CHECK = "/usr/local/sbin/codeb-redis-check"
CHECK_SOURCE = Path(__file__).with_name("redis-check.sh")
STATE = "/var/lib/codeb/redis"
SERVICE = "redis-server"


def rendered(data, private_ip: str) -> dict:
    instances = data.projects.instances
    return {
        "conf": render("redis.conf.j2", major=8, bind=["127.0.0.1", "-::1", private_ip],
                       port=data.redis_port, aclfile=ACL, maxmemory=data.redis_maxmemory),
        "acl": render("redis-users.acl.j2", users=model.redis_acl_users(instances, data.secrets)),
        "admin_env": f"REDISCLI_AUTH={data.secrets['redis_admin_password']}\n",
        "cli_config": render("codeb-cli.conf.j2", env_file=ADMIN_ENV, user=model.REDIS_ADMIN_USER,
                             port=data.redis_port),
    }


@deploy("Redis")
def redis():
    data = host.data
    r = rendered(data, data.private_ip)

    apt.packages(name="Redis server and tools", packages=["redis-server", "redis-tools"], update=True,
                 cache_time=3600, no_recommends=True)
    files.directory(name=f"{STATE} (applied markers)", path=STATE, user="root", group="root", mode="700")
    put(CHECK, CHECK_SOURCE.read_text(), "755")
    put(CLI, CLI_SOURCE.read_text(), "755")
    put(CLI_CONFIG, r["cli_config"], "644")
    put_secret(ADMIN_ENV, r["admin_env"], "600")
    # The ACL file holds SHA-256 password hashes only; hidden from --diff all the same.
    put_secret(ACL, r["acl"], "640", group="redis")
    put(CONF, r["conf"], "640", group="redis")
    systemd.service(name="Redis enabled", service=SERVICE, enabled=True, running=True)
    # redis.conf needs a restart; it loads the ACL file too, so both markers are refreshed.
    restart_on_change("Check redis.conf, restart Redis", [CONF],
                      f"systemctl restart {SERVICE} && sleep 1 && {CLI} PING >/dev/null "
                      f"&& {record([ACL], f'{STATE}/acl.applied')}",
                      validate=f"{CHECK} {CONF}", marker=f"{STATE}/conf.applied")
    # ACL LOAD validates the whole file and keeps the old users if any line is wrong.
    restart_on_change("Load the ACL file (ACL LOAD)", [ACL], f"{CLI} ACL LOAD | grep -qx OK",
                      marker=f"{STATE}/acl.applied")
