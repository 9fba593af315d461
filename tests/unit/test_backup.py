"""The backup role's derivations and rendered files, for every inventory, checked with the
real tools where this machine has them (systemd-analyze, promtool, bash -n). No host is
contacted; secrets are the render-only placeholders."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from codeb import shared
from codeb.inventory import group_addrs, platform_hosts
from codeb.ops import UNITS
from services.pgbackrest import DRILL_CONF, PGBACKREST_CONF, databases, pg_rendered, repo_rendered
from services.pgbackrest import model as pgbackrest_model
from services.prometheus import PROM_CONF, PROM_RULES, prometheus_rendered, s3_metrics_token
from services.prometheus import model as prometheus_model
from services.restic import client_rendered, server_rendered
from services.restic import model as restic_model
from tests.unit.conftest import INVENTORIES, load_inventory
from tools.restore import normalise_target


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
    env, h, hosts, addrs = param
    d = h.data
    files: dict[str, str] = {}
    if "storage" in h.groups:
        files.update({f"pg:{k}": v for k, v in pg_rendered(d, h.name, d.private_ip, hosts, addrs).items()})
    if "backup" in h.groups:
        files.update({f"repo:{k}": v for k, v in repo_rendered(d, h.name, d.private_ip, hosts, addrs).items()})
        files.update({f"repo:{k}": v for k, v in server_rendered(d, h.name, d.private_ip, hosts).items()})
        files.update({f"prom:{k}": v for k, v in prometheus_rendered(d, d.private_ip, hosts, addrs).items()})
    public, _ = client_rendered(d, h.name, h.groups, hosts, addrs)
    files.update({f"client:{k}": v for k, v in public.items()})
    return files


def ini(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    return cp


# --- derivations -------------------------------------------------------------------------------


def test_archive_command_and_tls_auth():
    assert pgbackrest_model.pgbackrest_archive_command("main") == "pgbackrest --stanza=main archive-push %p"
    assert pgbackrest_model.pgbackrest_tls_auth(["n4.x.test", "n4.x.test"], "main") == ["n4.x.test=main"]
    assert shared.tls_names("n3", "codeb.test") == ["n3.codeb.test", "n3"]


def test_pgbackrest_conf_roles():
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
    spec = {"all": ["/etc"], "storage": ["/var/lib/garage/data"], "app": ["/var/lib/caddy"]}
    assert restic_model.file_backup_paths(["storage"], spec) == ["/etc", "/var/lib/garage/data"]
    assert restic_model.file_backup_paths(["backup"], spec) == ["/etc"]
    assert restic_model.restic_repository("n1", "n4.x", 8443, False, "/srv/restic") == "rest:https://n4.x:8443/n1/"
    assert restic_model.restic_repository("n4", "n4.x", 8443, True, "/srv/restic") == "/srv/restic/n4"


def test_durations():
    assert prometheus_model.duration_seconds("26h") == 93600 and prometheus_model.duration_seconds("5m") == 300
    with pytest.raises(ValueError):
        prometheus_model.duration_seconds("5 minutes")


def test_restore_target_needs_a_zone():
    assert normalise_target("2025-01-31 14:05:00+09") == "2025-01-31 14:05:00+09"
    assert normalise_target("2025-01-31T05:05:00.123Z") == "2025-01-31T05:05:00.123+00"
    for bad in ("2025-01-31 14:05:00", "yesterday", "2025-01-31; rm -rf /"):
        with pytest.raises(SystemExit):
            normalise_target(bad)


# --- rendered files ------------------------------------------------------------------------------


@pytest.mark.parametrize("param", PARAMS)
def test_public_files_hold_no_secret(param):
    for name, text in rendered_for(param).items():
        assert "placeholder-" not in text, name


@pytest.mark.parametrize("param", [p for p in PARAMS if "storage" in p.values[0][1].groups], ids=lambda p: "")
def test_database_host_pgbackrest_conf_and_archiving(param):
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


def _units_dir(files: dict[str, str], tmp: Path) -> list[Path]:
    """Units in a scratch dir with ExecStart (and ExecStartPre) pointing at /bin/true (the
    scripts are not installed here), so systemd-analyze checks syntax, keys and calendars."""
    out = []
    for name, text in files.items():
        path = name.split(":", 1)[1]
        if path.startswith(UNITS + "/") and ".service.d/" not in path:
            dest = tmp / Path(path).name
            dest.write_text(re.sub(r"^(ExecStart(?:Pre)?)=.*$", r"\1=/bin/true", text, flags=re.M))
            out.append(dest)
    return out


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("param", [p for p in PARAMS if p.values[0][0] == "local"], ids=lambda p: "")
def test_units_and_timers_pass_systemd_analyze_verify(param, tmp_path):
    units = _units_dir(rendered_for(param), tmp_path)
    assert any(u.suffix == ".timer" for u in units)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)], capture_output=True,
                         text=True, cwd=tmp_path)
    problems = [ln for ln in (out.stdout + out.stderr).splitlines()
                if str(tmp_path) in ln or "Unknown" in ln or "Failed" in ln or "timer" in ln.lower()]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_schedules_are_valid_calendars():
    data = load_inventory("local").get_group("backup")[0].data
    assert set(data.backup_schedule) >= {"full", "incr", "verify", "drill", "files", "files_prune"}
    assert data.backup_schedule["full"] == ["*-*-* 03:00:00"]
    for key, exprs in data.backup_schedule.items():
        for expr in exprs:
            out = subprocess.run(["systemd-analyze", "calendar", expr], capture_output=True, text=True)
            assert out.returncode == 0, (key, expr, out.stderr)
    assert "Sun" in data.backup_schedule["files"][0] and "Sun" in data.backup_schedule["verify"][0]


@pytest.mark.parametrize("param", [p for p in PARAMS if p.values[0][0] == "local"], ids=lambda p: "")
def test_scripts_parse(param, tmp_path):
    for name, text in rendered_for(param).items():
        path = name.split(":", 1)[1]
        if not path.startswith("/usr/local/sbin/"):
            continue
        if text.startswith("#!/usr/bin/python3"):
            compile(text, path, "exec")
        else:
            script = tmp_path / Path(path).name
            script.write_text(text)
            out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
            assert out.returncode == 0, (path, out.stderr)


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (lab/deps installs it)")
@pytest.mark.parametrize("param", [p for p in PARAMS if "backup" in p.values[0][1].groups], ids=lambda p: "")
def test_prometheus_config_and_rules_pass_promtool(param, tmp_path):
    env, h, hosts, addrs = param
    files = prometheus_rendered(h.data, h.data.private_ip, hosts, addrs)
    rules = tmp_path / "codeb.yml"
    rules.write_text(files[PROM_RULES])
    token = tmp_path / "garage-metrics.token"
    token.write_text(s3_metrics_token(h.data))
    conf = tmp_path / "prometheus.yml"
    conf.write_text(files[PROM_CONF].replace(PROM_RULES, str(rules)).replace("/etc/prometheus/garage-metrics.token",
                                                                             str(token)))
    out = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(["promtool", "check", "config", str(conf)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    for alert in ("BackupTooOld", "WalArchiveTooOld", "RestoreDrillFailed", "HostDown", "S3ServerDown",
                  "S3ClusterUnhealthy", "S3BlockResyncErrors"):
        assert f"alert: {alert}" in files[PROM_RULES]
    assert "93600" in files[PROM_RULES] and "> 300" in files[PROM_RULES]


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")
def test_alert_rules_fire_as_specified(tmp_path):
    """promtool test rules: a backup 27 h old fires BackupTooOld; WAL waiting 6 min fires
    WalArchiveTooOld; an idle cluster (nothing waiting) does not."""
    h = load_inventory("local").get_group("backup")[0]
    files = prometheus_rendered(h.data, h.data.private_ip, platform_hosts(h.inventory), group_addrs(h.inventory))
    (tmp_path / "codeb.yml").write_text(files[PROM_RULES])
    (tmp_path / "test.yml").write_text("""
rule_files: [codeb.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'codeb_pgbackrest_last_backup_timestamp_seconds{stanza="main",type="full"}'
        values: '0x120'
      - series: 'codeb_postgresql_wal_ready_segments{host="n3"}'
        values: '1x10 0x110'
      - series: 'codeb_postgresql_wal_oldest_ready_timestamp_seconds{host="n3"}'
        values: '0x10 0x110'
      - series: 'up{job="node",host="n1"}'
        values: '1 1 0 0 0 0 0 0'
    alert_rule_test:
      - eval_time: 8m
        alertname: WalArchiveTooOld
        exp_alerts:
          - exp_labels: {severity: critical, host: n3}
            exp_annotations: {summary: "WAL waiting for the archive on n3 for more than 5m"}
      - eval_time: 30m
        alertname: WalArchiveTooOld
        exp_alerts: []
      - eval_time: 7m
        alertname: HostDown
        exp_alerts:
          - exp_labels: {severity: critical, host: n1, job: node}
            exp_annotations: {summary: "n1 is down (node-exporter unreachable)"}
""")
    # Backups 0 s after the epoch: at 120 min the age is 7200 s, below 26 h: no alert.
    (tmp_path / "test2.yml").write_text("""
rule_files: [codeb.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'codeb_pgbackrest_last_backup_timestamp_seconds{stanza="main",type="full"}'
        values: '0x120'
    alert_rule_test:
      - eval_time: 120m
        alertname: BackupTooOld
        exp_alerts: []
""")
    for test in ("test.yml", "test2.yml"):
        out = subprocess.run(["promtool", "test", "rules", test], capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_postgresql_dropin_checkpoints_after_start(tmp_path):
    """The drop-in that restores archive_timeout after a start is a valid addition to a service."""
    param = next(p.values[0] for p in PARAMS if p.values[0][0] == "local" and "storage" in p.values[0][1].groups)
    files = {name.split(":", 1)[1]: text for name, text in rendered_for(param).items()}
    dropin = next(path for path in files if path.endswith(".service.d/20-archive-timeout.conf"))
    assert "ExecStartPost=-/usr/sbin/runuser -u postgres -- /usr/bin/psql" in files[dropin] and "CHECKPOINT" in files[dropin]
    service = Path(dropin).parent.name[: -len(".d")]
    (tmp_path / service).write_text("[Service]\nExecStart=/bin/true\n")
    (tmp_path / f"{service}.d").mkdir()
    (tmp_path / f"{service}.d" / "20-archive-timeout.conf").write_text(files[dropin])
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / service)], capture_output=True,
                         text=True, cwd=tmp_path, env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr
