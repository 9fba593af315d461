"""Prometheus's derivations and rendered configuration for every inventory, checked with
promtool where this machine has it. No host is contacted; secrets are the render-only
placeholders."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from codeb.inventory import group_addrs, platform_hosts
from services.pgbackrest import SOURCES as PGBACKREST_PROGRAMS
from services.prometheus import PROM_CONF, PROM_RULES, S3_METRICS_TOKEN, prometheus_rendered, s3_metrics_token
from services.prometheus import model as prometheus_model
from services.restic import SOURCES as RESTIC_PROGRAMS
from tests.unit.conftest import INVENTORIES, load_inventory


def _params():
    out = []
    for env in INVENTORIES:
        inv = load_inventory(env)
        hosts, addrs = platform_hosts(inv), group_addrs(inv)
        for h in inv:
            if "backup" in h.groups:
                out.append(pytest.param((env, h, hosts, addrs), id=f"{env}-{h.name}"))
    return out


PARAMS = _params()


def test_durations():
    """Alert ages in the inventory's units (26h, 5m) become seconds; anything else is refused."""
    assert prometheus_model.duration_seconds("26h") == 93600 and prometheus_model.duration_seconds("5m") == 300
    with pytest.raises(ValueError):
        prometheus_model.duration_seconds("5 minutes")


@pytest.mark.parametrize("param", PARAMS)
def test_public_files_hold_no_secret(param):
    """Prometheus's files shown by --diff carry no secret (the Garage token is uploaded apart)."""
    env, h, hosts, addrs = param
    for name, text in prometheus_rendered(h.data, h.data.private_ip, hosts, addrs).items():
        assert "placeholder-" not in text, name
    assert S3_METRICS_TOKEN not in prometheus_rendered(h.data, h.data.private_ip, hosts, addrs)


@pytest.mark.parametrize("param", PARAMS)
def test_every_platform_metric_an_alert_uses_is_written_by_a_program(param):
    """Each codeb_* series the alert rules read is written by one of the backup programs
    (the static files of services/pgbackrest and services/restic), so a renamed metric
    cannot silently disable an alert."""
    env, h, hosts, addrs = param
    rules = prometheus_rendered(h.data, h.data.private_ip, hosts, addrs)[PROM_RULES]
    used = set(re.findall(r"\bcodeb_[a-z_]+\b", rules))
    assert used
    programs = "".join(p.read_text() for p in [*PGBACKREST_PROGRAMS.values(), *RESTIC_PROGRAMS.values()])
    assert {m for m in used if not re.search(rf"\b{m}\b", programs)} == set()


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (lab/deps installs it)")
@pytest.mark.parametrize("param", PARAMS, ids=lambda p: "")
def test_prometheus_config_and_rules_pass_promtool(param, tmp_path):
    """promtool accepts the rendered configuration and rules; every alert is there, with the
    inventory's ages in seconds."""
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
