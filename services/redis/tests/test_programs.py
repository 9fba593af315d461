"""codeb-redis-check (services/redis/redis-check.sh) and codeb-redis-cli
(services/redis/redis-cli.sh), run in a temporary directory: root's tools (chown, runuser)
and redis-cli are stand-ins that record what they are asked; redis-server is a stand-in
too, or the real one where it is installed. On a storage host they run in the topology
tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from services import redis
from tests.unit.conftest import load_inventory

CHECK, CLI = redis.CHECK_SOURCE, redis.CLI_SOURCE

ROOT_TOOLS = {
    "chown": 'echo "chown $*" >> "$LOG"\n',
    "runuser": '[ "$1" = -u ] && [ "$3" = -- ] || exit 97\necho "as $2: $4" >> "$LOG"\nshift 3\nexec "$@"\n',
}
# Refuses a file with an unknown directive the way redis-server does; accepts (keeps
# running) otherwise.
FAKE_REDIS_SERVER = r'''echo "redis-server $*" >> "$LOG"
if [ ! -r "$1" ]; then echo "Fatal error, can't open config file '$1': No such file or directory"; exit 1; fi
if grep -q '^nosuchdirective' "$1"; then
    printf '\n*** FATAL CONFIG FILE ERROR (Redis 8.0.2) ***\nReading the configuration file, at line 2\n'
    printf ">>> 'nosuchdirective yes'\nBad directive or wrong number of arguments\n"
    exit 1
fi
echo "Server initialized"
exec sleep 30
'''


def _tool(path: Path, body: str):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _run(script, args, bin_dir: Path, log: Path, cwd: Path, **env):
    result = subprocess.run(["sh", str(script), *args], capture_output=True, text=True, cwd=cwd, timeout=60,
                            env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log), **env})
    result.log = log.read_text().splitlines() if log.exists() else []
    return result


@pytest.fixture
def tools(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in ROOT_TOOLS.items():
        _tool(bin_dir / name, body)
    return bin_dir


def test_scripts_parse_as_posix_sh_and_bash():
    for script in (CHECK, CLI):
        subprocess.run(["sh", "-n", str(script)], check=True)
        subprocess.run(["bash", "-n", str(script)], check=True)


# --- codeb-redis-check ---------------------------------------------------------------------


@pytest.fixture
def check(tmp_path, tools):
    _tool(tools / "redis-server", FAKE_REDIS_SERVER)

    def run(*args):
        return _run(CHECK, args, tools, tmp_path / "log", tmp_path)

    return run


def test_check_accepts_a_file_redis_keeps_running_on_with_a_throwaway_server(check, tmp_path):
    conf = tmp_path / "redis.conf"
    conf.write_text("port 6379\nappendonly yes\n")
    r = check(str(conf))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    scratch = r.log[0].split()[-1]
    assert r.log[0] == f"chown redis:redis {scratch}"
    assert r.log[1] == "as redis: redis-server"
    # No TCP, no persistence, nothing in the real data directory, logs to its output.
    assert r.log[2] == (f"redis-server {conf} --port 0 --unixsocket {scratch}/check.sock --dir {scratch} "
                        f"--appendonly no --save  --supervised no --daemonize no --pidfile {scratch}/pid --logfile ")
    assert not Path(scratch).exists()  # the scratch directory is removed


def test_check_rejects_a_file_redis_refuses_and_shows_why(check, tmp_path):
    conf = tmp_path / "redis.conf"
    conf.write_text("port 6379\nnosuchdirective yes\n")
    r = check(str(conf))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"redis rejected {conf}:", "*** FATAL CONFIG FILE ERROR (Redis 8.0.2) ***",
                                     "Bad directive or wrong number of arguments"]


def test_check_shows_the_whole_output_when_no_line_names_the_error(check, tmp_path):
    r = check(str(tmp_path / "missing.conf"))
    assert r.returncode == 1
    assert r.stderr == (f"redis rejected {tmp_path}/missing.conf:\n"
                        f"Fatal error, can't open config file '{tmp_path}/missing.conf': No such file or directory\n")


def test_check_without_argument_checks_the_live_redis_conf(check):
    r = check()
    assert r.log[2].startswith("redis-server /etc/redis/redis.conf --port 0 ")


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed here")
def test_check_with_the_real_redis_server_accepts_the_rendered_conf_and_refuses_a_broken_acl(tmp_path, tools):
    """The storage host's redis.conf and ACL file as rendered for the local inventory."""
    data = load_inventory("local").get_group("storage")[0].data
    r = redis.rendered(data, data.private_ip)
    acl = tmp_path / "users.acl"
    acl.write_text(r["acl"])
    conf = tmp_path / "redis.conf"
    conf.write_text(r["conf"].replace(f"aclfile {redis.ACL}", f"aclfile {acl}"))
    ok = _run(CHECK, [str(conf)], tools, tmp_path / "log", tmp_path)
    assert (ok.returncode, ok.stderr) == (0, "")
    acl.write_text("user broken on nosuchrule\n")
    broken = _run(CHECK, [str(conf)], tools, tmp_path / "log", tmp_path)
    assert broken.returncode == 1 and broken.stderr.startswith(f"redis rejected {conf}:\n")
    assert f"{acl}:1:" in broken.stderr  # the ACL file and line redis refused


# --- codeb-redis-cli -----------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path, tools):
    """A config in tmp_path naming an env file with the admin password; redis-cli prints
    its arguments one a line, then the REDISCLI_AUTH it sees."""
    _tool(tools / "redis-cli", 'for a; do echo "arg:$a"; done\necho "auth:${REDISCLI_AUTH:-}"\n')
    env_file = tmp_path / "admin.env"
    env_file.write_text("REDISCLI_AUTH=s3cret-admin\n")
    config = tmp_path / "codeb-cli.conf"
    config.write_text(f"env_file={env_file}\nuser=admin\nport=6380\n")

    def run(*args):
        return _run(CLI, args, tools, tmp_path / "log", tmp_path)

    run.config = config
    return run


def test_cli_runs_redis_cli_as_the_admin_user_with_the_password_from_the_env_file(cli):
    r = cli("--config", str(cli.config), "ACL", "LOAD")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["arg:--no-auth-warning", "arg:--user", "arg:admin", "arg:-h", "arg:127.0.0.1",
                                     "arg:-p", "arg:6380", "arg:ACL", "arg:LOAD", "auth:s3cret-admin"]


def test_cli_passes_arguments_through_unsplit(cli):
    r = cli("--config", str(cli.config), "SET", "a key", "--config")
    assert r.stdout.splitlines()[-4:] == ["arg:SET", "arg:a key", "arg:--config", "auth:s3cret-admin"]


def test_cli_config_named_without_a_directory_is_read_from_the_current_one(cli):
    assert cli("--config", cli.config.name, "PING").stdout.splitlines()[-2:] == ["arg:PING", "auth:s3cret-admin"]


@pytest.mark.skipif(Path(redis.CLI_CONFIG).exists(), reason=f"{redis.CLI_CONFIG} exists on this machine")
def test_cli_without_config_option_reads_the_deployed_config(cli):
    r = cli("PING")
    assert r.returncode != 0 and redis.CLI_CONFIG in r.stderr
    assert r.stdout == ""


def test_cli_config_option_without_file_prints_usage(cli):
    r = cli("--config")
    assert r.returncode == 2 and "usage:" in r.stderr and r.stdout == ""


def test_cli_config_lacking_a_key_is_refused_naming_it(cli):
    cli.config.write_text(cli.config.read_text().replace("port=6380\n", ""))
    r = cli("--config", str(cli.config), "PING")
    assert r.returncode != 0 and "port" in r.stderr and r.stdout == ""
