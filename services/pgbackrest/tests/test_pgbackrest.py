"""pgBackRest's derivations, rendered files and deploy for every inventory, checked with the
real tools where this machine has them (systemd-analyze). No host is contacted; secrets are
the render-only placeholders."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from codeb import shared
from codeb.inventory import group_addrs, platform_hosts
from codeb.ops import SBIN, UNITS
from services import pgbackrest
from services.pgbackrest import (
    CONF_DIR,
    CONFIGS,
    DRILL_CONF,
    PGBACKREST_CONF,
    SCRIPTS,
    SOURCES,
    UNIT_NAMES,
    backup_metrics,
    command,
    databases,
    pg_rendered,
    repo_rendered,
    wal_metrics,
)
from services.pgbackrest import model as pgbackrest_model
from tests.unit.conftest import INVENTORIES, load_inventory
from tests.unit.operations import Ops


def _params():
    out = []
    for env in INVENTORIES:
        inv = load_inventory(env)
        hosts, addrs = platform_hosts(inv), group_addrs(inv)
        for h in inv:
            if {"storage", "backup"} & set(h.groups):
                out.append(pytest.param((env, h, hosts, addrs), id=f"{env}-{h.name}"))
    return out


PARAMS = _params()


def rendered_for(param) -> dict[str, str]:
    env, h, hosts, addrs = param
    d = h.data
    files: dict[str, str] = {}
    if "storage" in h.groups:
        files.update(pg_rendered(d, h.name, d.private_ip, hosts, addrs))
    if "backup" in h.groups:
        files.update(repo_rendered(d, h.name, d.private_ip, hosts, addrs))
    return files


def ini(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    return cp


# --- derivations -------------------------------------------------------------------------------


def test_archive_command_and_tls_auth():
    """archive_command pushes through pgBackRest; tls-server-auth lists each CN once."""
    assert pgbackrest_model.pgbackrest_archive_command("main") == "pgbackrest --stanza=main archive-push %p"
    assert pgbackrest_model.pgbackrest_tls_auth(["n4.x.test", "n4.x.test"], "main") == ["n4.x.test=main"]
    assert shared.tls_names("n3", "codeb.test") == ["n3.codeb.test", "n3"]


def test_pgbackrest_conf_roles():
    """The database host pushes to the repository host over TLS (async); the repository host
    keeps the repository (retention, bundles, zstd) and reaches the database over TLS."""
    settings = {"repo_path": "/var/lib/pgbackrest", "retention_full": 7}
    pg = pgbackrest_model.pgbackrest_conf("pg", stanza="main", private_ip="10.0.0.3", tls_port=8432,
                                          peer_names=["n4.x.test"], pg_path="/pg", pg_port=5432, settings=settings)
    assert pg["global"]["repo1-host"] == "n4.x.test" and pg["global"]["repo1-host-type"] == "tls"
    assert pg["global"]["archive-async"] == "y" and pg["global"]["tls-server-auth"] == "n4.x.test=main"
    assert "repo1-path" not in pg["global"]
    repo = pgbackrest_model.pgbackrest_conf("repo", stanza="main", private_ip="10.0.0.4", tls_port=8432,
                                            peer_names=["n3.x.test"], pg_path="/pg", pg_port=5432, settings=settings)
    g = repo["global"]
    assert (g["repo1-path"], g["repo1-retention-full"], g["compress-type"], g["repo1-bundle"]) == \
        ("/var/lib/pgbackrest", "7", "zst", "y")
    assert repo["main"]["pg1-host"] == "n3.x.test" and repo["main"]["pg1-host-type"] == "tls"
    with pytest.raises(ValueError):
        pgbackrest_model.pgbackrest_conf("pg", stanza="main", private_ip="x", tls_port=1, peer_names=[], pg_path="/",
                                         pg_port=1, settings=settings)


# --- rendered files ------------------------------------------------------------------------------


@pytest.mark.parametrize("param", PARAMS)
def test_public_files_hold_no_secret(param):
    """No rendered file of pgBackRest carries a secret (they are all shown by --diff)."""
    for name, text in rendered_for(param).items():
        assert "placeholder-" not in text, name


@pytest.mark.parametrize("param", PARAMS)
def test_templates_render_configuration_only(param):
    """Programs are static files: nothing rendered lands under /usr/local/sbin."""
    assert not [name for name in rendered_for(param) if name.startswith(SBIN)]


@pytest.mark.parametrize("param", [p for p in PARAMS if "storage" in p.values[0][1].groups], ids=lambda p: "")
def test_database_host_pgbackrest_conf_and_archiving(param):
    """The database host's pgbackrest.conf points at the repository host over TLS, and the
    archiving drop-in turns on archive_mode with pgBackRest and the RPO timeout."""
    env, h, hosts, addrs = param
    files = pg_rendered(h.data, h.name, h.data.private_ip, hosts, addrs)
    cp = ini(files[PGBACKREST_CONF])
    stanza = h.data.pgbackrest_stanza
    backup_host = [n for n, a in hosts if a in addrs["backup"]][0]
    assert cp["global"]["repo1-host"] == f"{backup_host}.{h.data.platform_domain}"
    assert cp["global"]["tls-server-address"] == h.data.private_ip
    assert cp["global"]["compress-type"] == "zst"
    assert cp[stanza]["pg1-path"] == f"/var/lib/postgresql/{h.data.postgresql_version}/main"
    archiving = [v for k, v in files.items() if k.endswith("20-archiving.conf")][0]
    assert "archive_mode = on" in archiving
    assert f"archive_command = 'pgbackrest --stanza={stanza} archive-push %p'" in archiving
    assert f"archive_timeout = {h.data.postgresql_archive_timeout}" in archiving


@pytest.mark.parametrize("param", [p for p in PARAMS if "backup" in p.values[0][1].groups], ids=lambda p: "")
def test_repository_host_pgbackrest_conf(param):
    """The repository host keeps the repository with the inventory's retention, authorises
    the database host's certificate for the stanza, and the drill restores locally."""
    env, h, hosts, addrs = param
    files = repo_rendered(h.data, h.name, h.data.private_ip, hosts, addrs)
    cp = ini(files[PGBACKREST_CONF])
    g = cp["global"]
    assert g["repo1-path"] == h.data.pgbackrest["repo_path"]
    assert g["repo1-retention-full"] == str(h.data.pgbackrest["retention_full"])
    assert (g["repo1-bundle"], g["compress-type"]) == ("y", "zst")
    storage_host = [n for n, a in hosts if a in addrs["storage"]][0]
    assert g["tls-server-auth"] == f"{storage_host}.{h.data.platform_domain}={h.data.pgbackrest_stanza}"
    drill = ini(files[DRILL_CONF])
    assert "pg1-host" not in drill[h.data.pgbackrest_stanza]
    assert drill[h.data.pgbackrest_stanza]["pg1-port"] == str(h.data.restore_drill_port)
    assert set(databases(h.data)) >= {shared.PDNS_DB}


def _source(conf: str, tmp_path: Path, *names: str) -> list[str]:
    path = tmp_path / "program.conf"
    path.write_text(conf)
    script = f". {path}; " + " ".join(f'printf "%s\\n" "${{{n}[*]}}";' for n in names)
    out = subprocess.run(["bash", "-euc", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.parametrize("param", [p for p in PARAMS if "backup" in p.values[0][1].groups], ids=lambda p: "")
def test_repository_host_program_configs_hold_the_inventorys_values(param, tmp_path):
    """Sourced by bash, the job's and the drill's configs give the stanza, the textfile
    directory, the shared lock and library, the drill's port and databases; the metrics
    program reads its JSON config with the repository path."""
    env, h, hosts, addrs = param
    d = h.data
    files = repo_rendered(d, h.name, d.private_ip, hosts, addrs)
    assert _source(files[CONFIGS["job"]], tmp_path, "STANZA", "TEXTFILE_DIR", "LOCK", "PROM_WRITE", "METRICS",
                   "METRICS_CONFIG") == [
        d.pgbackrest_stanza, d.node_exporter_textfile_dir, "/run/lock/codeb-pgbackrest.lock",
        "/usr/local/lib/codeb/prom-write.sh", SCRIPTS["metrics"], CONFIGS["metrics"]]
    assert _source(files[CONFIGS["drill"]], tmp_path, "PORT", "EXPECTED", "DRILL_CONF", "STANZA", "LOCK", "BIN",
                   "MAX_CONNECTIONS") == [
        str(d.restore_drill_port), " ".join(databases(d)), DRILL_CONF, d.pgbackrest_stanza,
        "/run/lock/codeb-pgbackrest.lock", f"/usr/lib/postgresql/{d.postgresql_version}/bin",
        str(d.postgresql_max_connections)]
    (tmp_path / "m.json").write_text(files[CONFIGS["metrics"]])
    assert backup_metrics.load_config(str(tmp_path / "m.json")) == {
        "textfile_dir": d.node_exporter_textfile_dir, "repo_path": d.pgbackrest["repo_path"],
        "stanza": d.pgbackrest_stanza}


@pytest.mark.parametrize("param", [p for p in PARAMS if "storage" in p.values[0][1].groups], ids=lambda p: "")
def test_database_host_program_configs_hold_the_inventorys_values(param, tmp_path):
    """The restore's config names PostgreSQL's unit, PowerDNS as the dependent, every
    database to bring back; the WAL metrics read the cluster's archive_status."""
    env, h, hosts, addrs = param
    d = h.data
    files = pg_rendered(d, h.name, d.private_ip, hosts, addrs)
    assert _source(files[CONFIGS["pitr"]], tmp_path, "SERVICE", "DEPENDENTS", "EXPECTED", "STANZA") == [
        f"postgresql@{d.postgresql_version}-main", "pdns.service", " ".join(databases(d)), d.pgbackrest_stanza]
    (tmp_path / "w.json").write_text(files[CONFIGS["wal_metrics"]])
    assert wal_metrics.load_config(str(tmp_path / "w.json")) == {
        "textfile_dir": d.node_exporter_textfile_dir,
        "archive_status": f"/var/lib/postgresql/{d.postgresql_version}/main/pg_wal/archive_status"}


@pytest.mark.parametrize("param", PARAMS)
def test_units_call_each_program_with_its_config(param):
    """Every unit's ExecStart is an installed program, `--config` its own config file, which
    is rendered for the same host."""
    files = rendered_for(param)
    programs = {v: k for k, v in SCRIPTS.items()}
    seen = set()
    for name, text in files.items():
        for line in re.findall(r"^ExecStart=(.*)$", text, re.M):
            argv = line.split()
            key = programs[argv[0]]
            assert argv[1:3] == ["--config", CONFIGS[key]] and CONFIGS[key] in files, (name, line)
            seen.add(key)
    env, h, *_ = param
    assert seen == ({"wal_metrics"} if "storage" in h.groups else set()) | \
        ({"job", "drill", "metrics"} if "backup" in h.groups else set())
    assert command("job", "full") == f"{SCRIPTS['job']} --config {CONFIGS['job']} full"


def _units_dir(files: dict[str, str], tmp: Path) -> list[Path]:
    """Units in a scratch dir with ExecStart pointing at the static program (the file that is
    installed at that path), so systemd-analyze checks syntax, keys, calendars and that the
    program is executable."""
    sources = {SCRIPTS[k]: str(SOURCES[k]) for k in SCRIPTS}
    out = []
    for path, text in files.items():
        if path.startswith(UNITS + "/") and ".service.d/" not in path:
            dest = tmp / Path(path).name
            text = re.sub(r"^(ExecStart=)(\S+)", lambda m: m.group(1) + sources[m.group(2)], text, flags=re.M)
            dest.write_text(re.sub(r"^(ExecStartPre)=.*$", r"\1=/bin/true", text, flags=re.M))
            out.append(dest)
    return out


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("param", [p for p in PARAMS if p.values[0][0] == "local"], ids=lambda p: "")
def test_units_and_timers_pass_systemd_analyze_verify(param, tmp_path):
    """systemd-analyze verify accepts every pgBackRest unit and timer (the backup host has timers)."""
    units = _units_dir(rendered_for(param), tmp_path)
    env, h, *_ = param
    if "backup" in h.groups:
        assert any(u.suffix == ".timer" for u in units)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)], capture_output=True,
                         text=True, cwd=tmp_path)
    problems = [ln for ln in (out.stdout + out.stderr).splitlines()
                if str(tmp_path) in ln or "Unknown" in ln or "Failed" in ln or "timer" in ln.lower()]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_schedules_are_valid_calendars():
    """The pgBackRest timers' schedules (full daily at 03:00, verify on Sundays) are calendars
    systemd accepts."""
    data = load_inventory("local").get_group("backup")[0].data
    assert set(data.backup_schedule) >= {"full", "incr", "verify", "drill"}
    assert data.backup_schedule["full"] == ["*-*-* 03:00:00"]
    for key in ("full", "incr", "verify", "drill"):
        for expr in data.backup_schedule[key]:
            out = subprocess.run(["systemd-analyze", "calendar", expr], capture_output=True, text=True)
            assert out.returncode == 0, (key, expr, out.stderr)
    assert "Sun" in data.backup_schedule["verify"][0]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_postgresql_dropin_checkpoints_after_start(tmp_path):
    """The drop-in that restores archive_timeout after a start is a valid addition to a service."""
    param = next(p.values[0] for p in PARAMS if p.values[0][0] == "local" and "storage" in p.values[0][1].groups)
    files = rendered_for(param)
    dropin = next(path for path in files if path.endswith(".service.d/20-archive-timeout.conf"))
    assert "ExecStartPost=-/usr/sbin/runuser -u postgres -- /usr/bin/psql" in files[dropin] and "CHECKPOINT" in files[dropin]
    service = Path(dropin).parent.name[: -len(".d")]
    (tmp_path / service).write_text("[Service]\nExecStart=/bin/true\n")
    (tmp_path / f"{service}.d").mkdir()
    (tmp_path / f"{service}.d" / "20-archive-timeout.conf").write_text(files[dropin])
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / service)], capture_output=True,
                         text=True, cwd=tmp_path, env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr


# --- the deploy --------------------------------------------------------------------------------


def run_deploy(monkeypatch, func, group: str) -> tuple[Ops, object, dict]:
    inv = load_inventory("local")
    h = inv.get_group(group)[0]
    ops = Ops()
    monkeypatch.setattr(pgbackrest, "host", SimpleNamespace(data=h.data, name=h.name, groups=h.groups))
    for name in ("apt", "files", "systemd"):
        monkeypatch.setattr(pgbackrest, name, ops.module(name))
    for name in ("put", "host_tls", "converge", "restart_on_change", "install_units", "install_prom_write"):
        monkeypatch.setattr(pgbackrest, name, ops.op(name))
    monkeypatch.setattr(pgbackrest, "platform_hosts", lambda: platform_hosts(inv))
    monkeypatch.setattr(pgbackrest, "group_addrs", lambda: group_addrs(inv))
    func._inner()
    hosts, addrs = platform_hosts(inv), group_addrs(inv)
    rendered = (repo_rendered if group == "backup" else pg_rendered)(h.data, h.name, h.data.private_ip, hosts, addrs)
    return ops, h, rendered


def test_repository_deploy_installs_static_programs_and_configs_before_the_first_backup(monkeypatch):
    """The backup host gets each program as it is in this folder (755) and its rendered config
    (644, in /etc/codeb/pgbackrest), and the textfile library, before the first full backup
    runs the job; install_units gets units only."""
    ops, h, rendered = run_deploy(monkeypatch, pgbackrest.repository, "backup")
    puts = ops.puts()
    for key in ("job", "metrics", "drill"):
        assert puts[SCRIPTS[key]] == (SOURCES[key].read_text(), "755")
        assert puts[CONFIGS[key]] == (rendered[CONFIGS[key]], "644") and CONFIGS[key].startswith(CONF_DIR + "/")
    assert SCRIPTS["pitr"] not in puts and SCRIPTS["wal_metrics"] not in puts
    first = ops.index("converge", lambda a, k: k["apply_command"] == command("job", "full"))
    assert ops.index("install_prom_write", lambda a, k: True) < first
    assert ops.index("put", lambda a, k: a[0] == CONFIGS["job"]) < first
    assert ops.index("put", lambda a, k: a[0] == SCRIPTS["job"]) < first
    units = next(a[0] for n, a, k in ops.calls if n == "install_units")
    assert units and all(path.startswith(UNITS + "/") for path in units)
    assert {f"{UNITS}/{u}.timer" for u in UNIT_NAMES.values()} <= set(units)


def test_backup_metrics_restart_when_the_program_or_its_config_changes(monkeypatch):
    """The metrics service's restart trigger covers the installed program and its config."""
    ops, *_ = run_deploy(monkeypatch, pgbackrest.repository, "backup")
    (_, files, cmd), _ = next((a, k) for n, a, k in ops.calls
                                 if n == "restart_on_change" and "codeb-backup-metrics.service" in a[2])
    assert files == [SCRIPTS["metrics"], CONFIGS["metrics"]]
    assert cmd.endswith("systemctl restart codeb-backup-metrics.service")


def test_archiving_deploy_installs_the_database_hosts_programs_and_restarts_wal_metrics_on_change(monkeypatch):
    """The database host gets codeb-wal-metrics and codeb-pitr (755) with their configs (644);
    the WAL metrics service restarts when the program or its config changes."""
    ops, h, rendered = run_deploy(monkeypatch, pgbackrest.archiving, "storage")
    puts = ops.puts()
    for key in ("wal_metrics", "pitr"):
        assert puts[SCRIPTS[key]] == (SOURCES[key].read_text(), "755")
        assert puts[CONFIGS[key]] == (rendered[CONFIGS[key]], "644")
    assert SCRIPTS["job"] not in puts
    (_, files, cmd), _ = next((a, k) for n, a, k in ops.calls
                                 if n == "restart_on_change" and "codeb-wal-metrics.service" in a[2])
    assert files == [SCRIPTS["wal_metrics"], CONFIGS["wal_metrics"]]
    restart = ops.index("restart_on_change", lambda a, k: "codeb-wal-metrics.service" in a[2])
    assert ops.index("put", lambda a, k: a[0] == CONFIGS["wal_metrics"]) < restart
    assert json.loads(rendered[CONFIGS["wal_metrics"]])["archive_status"].endswith("/pg_wal/archive_status")
