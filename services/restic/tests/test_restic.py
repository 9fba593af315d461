"""The file backups' derivations, rendered files and deploy for every inventory, checked with
the real tools where this machine has them (systemd-analyze, bash). No host is contacted;
secrets are the render-only placeholders."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from codeb.inventory import group_addrs, platform_hosts
from codeb.ops import SBIN, UNITS
from services import restic
from services.restic import CLIENT_DIR, CONFIGS, SCRIPTS, SOURCES, client_rendered, retention_args, server_rendered
from services.restic import model as restic_model
from tests.unit.conftest import INVENTORIES, load_inventory
from tests.unit.operations import Ops


def _params():
    out = []
    for env in INVENTORIES:
        inv = load_inventory(env)
        hosts, addrs = platform_hosts(inv), group_addrs(inv)
        for h in inv:
            out.append(pytest.param((env, h, hosts, addrs), id=f"{env}-{h.name}"))
    return out


PARAMS = _params()


def rendered_for(param) -> dict[str, str]:
    """A host's public files of the file backups (the client's, and the server's on the backup host)."""
    env, h, hosts, addrs = param
    d = h.data
    files, _ = client_rendered(d, h.name, h.groups, hosts, addrs)
    if "backup" in h.groups:
        files = {**files, **server_rendered(d, h.name, d.private_ip, hosts)}
    return files


# --- derivations -------------------------------------------------------------------------------


def test_host_secrets_are_stable_distinct_and_alphanumeric():
    a = restic_model.host_secret("master", "restic-repo", "n1")
    assert a == restic_model.host_secret("master", "restic-repo", "n1")
    assert a != restic_model.host_secret("master", "restic-repo", "n2")
    assert a != restic_model.host_secret("master", "restic-rest", "n1")
    assert re.fullmatch(r"[A-Za-z0-9]{40}", a)


def test_htpasswd_is_bcrypt_stable_and_verifies():
    import bcrypt

    line = restic_model.bcrypt_htpasswd("n1", "pw-one")
    assert line == restic_model.bcrypt_htpasswd("n1", "pw-one")
    user, hashed = line.split(":", 1)
    assert user == "n1" and hashed.startswith("$2b$10$")
    assert bcrypt.checkpw(b"pw-one", hashed.encode())
    assert not bcrypt.checkpw(b"pw-two", hashed.encode())


def test_file_backup_paths_and_repositories():
    """A host backs up `all` plus its groups' paths; clients push to rest-server, the backup
    host writes locally."""
    spec = {"all": ["/etc"], "storage": ["/var/lib/garage/data"], "app": ["/var/lib/caddy"]}
    assert restic_model.file_backup_paths(["storage"], spec) == ["/etc", "/var/lib/garage/data"]
    assert restic_model.file_backup_paths(["backup"], spec) == ["/etc"]
    assert restic_model.restic_repository("n1", "n4.x", 8443, False, "/srv/restic") == "rest:https://n4.x:8443/n1/"
    assert restic_model.restic_repository("n4", "n4.x", 8443, True, "/srv/restic") == "/srv/restic/n4"


def test_retention_becomes_restic_forget_options_sorted_by_option():
    """{"keep_weekly": 8, "keep_monthly": 6} -> --keep-monthly 6 --keep-weekly 8."""
    assert retention_args({"keep_weekly": 8, "keep_monthly": 6}) == ["--keep-monthly", "6", "--keep-weekly", "8"]


# --- rendered files ------------------------------------------------------------------------------


@pytest.mark.parametrize("param", PARAMS)
def test_public_files_hold_no_secret(param):
    """No file of the file backups shown by --diff carries a secret (they are in restic.env
    and the password files, uploaded with put_secret)."""
    for name, text in rendered_for(param).items():
        assert "placeholder-" not in text, name


@pytest.mark.parametrize("param", PARAMS)
def test_templates_render_configuration_only(param):
    """Programs are static files: nothing rendered lands under /usr/local/sbin."""
    env, h, hosts, addrs = param
    _, secret = client_rendered(h.data, h.name, h.groups, hosts, addrs)
    assert not [name for name in {**rendered_for(param), **secret} if name.startswith(SBIN)]


def _source(conf: str, tmp_path: Path, *names: str) -> list[str]:
    path = tmp_path / "program.conf"
    path.write_text(conf)
    script = f". {path}; " + " ".join(f'printf "%s\\n" "${{{n}[*]}}";' for n in names)
    out = subprocess.run(["bash", "-euc", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.parametrize("param", PARAMS)
def test_file_backup_config_holds_the_hosts_paths_and_env_file(param, tmp_path):
    """Sourced by bash, a host's file-backup.conf gives its name, restic.env, the paths of its
    groups, the textfile directory and the shared library."""
    env, h, hosts, addrs = param
    d = h.data
    files = rendered_for(param)
    assert _source(files[CONFIGS["file_backup"]], tmp_path, "HOST", "ENV_FILE", "PATHS", "TEXTFILE_DIR",
                   "PROM_WRITE") == [
        h.name, f"{CLIENT_DIR}/restic.env", " ".join(restic_model.file_backup_paths(h.groups, d.file_backup_paths)),
        d.node_exporter_textfile_dir, "/usr/local/lib/codeb/prom-write.sh"]


@pytest.mark.parametrize("param", [p for p in PARAMS if "backup" in p.values[0][1].groups], ids=lambda p: "")
def test_server_configs_name_every_host_and_the_backup_host_itself(param, tmp_path):
    """Prune and init cover every host of the platform; init knows which one is local;
    restore reads below the repository root with the per-host passwords."""
    env, h, hosts, addrs = param
    d = h.data
    files = rendered_for(param)
    names = " ".join(n for n, _ in hosts)
    assert _source(files[CONFIGS["file_prune"]], tmp_path, "HOSTS", "REPO_ROOT", "PASSWORD_DIR", "RETENTION") == [
        names, d.file_backup_repo_path, "/etc/codeb/backup/repositories",
        " ".join(retention_args(d.file_backup_retention))]
    assert _source(files[CONFIGS["restic_init"]], tmp_path, "HOSTS", "SELF_HOST", "SERVER_USER") == [
        names, h.name, "restic-rest-server"]
    assert _source(files[CONFIGS["file_restore"]], tmp_path, "RESTORE_DIR", "REPO_ROOT", "PASSWORD_DIR") == [
        "/var/tmp/codeb-restore", d.file_backup_repo_path, "/etc/codeb/backup/repositories"]


@pytest.mark.parametrize("param", PARAMS)
def test_units_call_each_program_with_its_config(param):
    """Every unit's ExecStart is an installed program with `--config` its own config file,
    rendered for the same host."""
    files = rendered_for(param)
    programs = {v: k for k, v in SCRIPTS.items()}
    seen = set()
    for name, text in files.items():
        for line in re.findall(r"^ExecStart=(.*)$", text, re.M):
            argv = line.split()
            key = programs[argv[0]]
            assert argv[1:] == ["--config", CONFIGS[key]] and CONFIGS[key] in files, (name, line)
            seen.add(key)
    env, h, *_ = param
    assert seen == {"file_backup"} | ({"file_prune"} if "backup" in h.groups else set())


def _units_dir(files: dict[str, str], tmp: Path) -> list[Path]:
    """Units in a scratch dir with ExecStart pointing at the static program (the file that is
    installed at that path) and ExecStartPre at /bin/true, so systemd-analyze checks syntax,
    keys, calendars and that the program is executable."""
    sources = {SCRIPTS[k]: str(SOURCES[k]) for k in SCRIPTS}
    out = []
    for path, text in files.items():
        if path.startswith(UNITS + "/"):
            dest = tmp / Path(path).name
            text = re.sub(r"^(ExecStart=)(\S+)", lambda m: m.group(1) + sources[m.group(2)], text, flags=re.M)
            dest.write_text(re.sub(r"^(ExecStartPre)=.*$", r"\1=/bin/true", text, flags=re.M))
            out.append(dest)
    return out


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("param", [p for p in PARAMS if p.values[0][0] == "local"], ids=lambda p: "")
def test_units_and_timers_pass_systemd_analyze_verify(param, tmp_path):
    """systemd-analyze verify accepts the file backup's units and timers on every host."""
    units = _units_dir(rendered_for(param), tmp_path)
    assert any(u.suffix == ".timer" for u in units)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)], capture_output=True,
                         text=True, cwd=tmp_path)
    problems = [ln for ln in (out.stdout + out.stderr).splitlines()
                if str(tmp_path) in ln or "Unknown" in ln or "Failed" in ln or "timer" in ln.lower()]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_schedules_are_valid_calendars():
    """The file backup (Sundays) and prune schedules are calendars systemd accepts."""
    data = load_inventory("local").get_group("backup")[0].data
    assert set(data.backup_schedule) >= {"files", "files_prune"}
    for key in ("files", "files_prune"):
        for expr in data.backup_schedule[key]:
            out = subprocess.run(["systemd-analyze", "calendar", expr], capture_output=True, text=True)
            assert out.returncode == 0, (key, expr, out.stderr)
    assert "Sun" in data.backup_schedule["files"][0]


# --- the deploy --------------------------------------------------------------------------------


def run_deploy(monkeypatch, func, group: str):
    inv = load_inventory("local")
    h = inv.get_group(group)[0]
    ops = Ops()
    monkeypatch.setattr(restic, "host", SimpleNamespace(data=h.data, name=h.name, groups=h.groups))
    for name in ("apt", "files", "systemd", "pki"):
        monkeypatch.setattr(restic, name, ops.module(name))
    for name in ("put", "put_secret", "host_tls", "converge", "restart_on_change", "install_units",
                 "install_prom_write"):
        monkeypatch.setattr(restic, name, ops.op(name))
    monkeypatch.setattr(restic, "platform_hosts", lambda: platform_hosts(inv))
    monkeypatch.setattr(restic, "group_addrs", lambda: group_addrs(inv))
    monkeypatch.setattr(restic.model, "restic_htpasswd", lambda secrets, hosts: "")  # bcrypt: slow, tested above
    func._inner()
    return ops, h, inv


@pytest.mark.parametrize("group", ["app", "storage", "backup"])
def test_client_deploy_installs_the_backup_program_its_config_and_the_textfile_library(monkeypatch, group):
    """Every host gets codeb-file-backup as it is in this folder (755), its rendered config
    (644, next to restic.env), the textfile library; install_units gets units only."""
    ops, h, inv = run_deploy(monkeypatch, restic.client, group)
    public, secret = client_rendered(h.data, h.name, h.groups, platform_hosts(inv), group_addrs(inv))
    puts = ops.puts()
    assert puts[SCRIPTS["file_backup"]] == (SOURCES["file_backup"].read_text(), "755")
    assert puts[CONFIGS["file_backup"]] == (public[CONFIGS["file_backup"]], "644")
    assert set(ops.puts("put_secret")) == set(secret)
    assert ops.index("install_prom_write", lambda a, k: True) >= 0
    units = next(a[0] for n, a, k in ops.calls if n == "install_units")
    assert units and all(path.startswith(UNITS + "/") for path in units)


def test_server_deploy_installs_programs_and_configs_before_initialising_repositories(monkeypatch):
    """The backup host gets prune, restore and init (755) with their configs (644, in
    /etc/codeb/restic) before `codeb-restic-init --config ...` runs."""
    ops, h, inv = run_deploy(monkeypatch, restic.server, "backup")
    rendered = server_rendered(h.data, h.name, h.data.private_ip, platform_hosts(inv))
    puts = ops.puts()
    for key in ("file_prune", "file_restore", "restic_init"):
        assert puts[SCRIPTS[key]] == (SOURCES[key].read_text(), "755")
        assert puts[CONFIGS[key]] == (rendered[CONFIGS[key]], "644")
        assert CONFIGS[key].startswith("/etc/codeb/restic/")
    init = ops.index("converge", lambda a, k: k["apply_command"] == restic.command("restic_init"))
    assert restic.command("restic_init") == f"{SCRIPTS['restic_init']} --config {CONFIGS['restic_init']}"
    assert ops.index("put", lambda a, k: a[0] == CONFIGS["restic_init"]) < init
    assert ops.index("put", lambda a, k: a[0] == SCRIPTS["restic_init"]) < init
    units = next(a[0] for n, a, k in ops.calls if n == "install_units")
    assert units and all(path.startswith(UNITS + "/") for path in units)
