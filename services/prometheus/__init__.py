"""Prometheus on the backup host: scrapes every host's node-exporter, Centrifugo and Garage's
metrics over the private network, and evaluates the platform's alert rules (backups too
old, WAL archiving stalled, restore drill failed, hosts and services down)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from codeb.files import put, put_secret
from codeb.inventory import group_addrs, platform_hosts
from codeb.ops import restart_on_change
from codeb.render import templates
from services.centrifugo import model as centrifugo_model

from . import model

render = templates(__file__)

PROM_RULES = "/etc/prometheus/rules/codeb.yml"
PROM_CONF = "/etc/prometheus/prometheus.yml"
S3_METRICS_TOKEN = "/etc/prometheus/garage-metrics.token"
STATE = "/var/lib/codeb/backup"


def prometheus_rendered(data, private_ip: str, hosts, addrs) -> dict[str, str]:
    alerts = data.backup_alerts
    secs = {k: model.duration_seconds(v) for k, v in alerts.items() if k.endswith("_age")}
    return {
        "/etc/default/prometheus": render("prometheus.default.j2",
                                          listen=f"{private_ip}:{data.prometheus_port}",
                                          retention=data.prometheus_retention),
        PROM_CONF: render(
            "prometheus.yml.j2", scrape_interval="15s", environment=data.environment, rules_file=PROM_RULES,
            self_target=f"{private_ip}:{data.prometheus_port}",
            scrape_configs=model.prometheus_scrape_configs(
                hosts, addrs, node_port=data.node_exporter_port, centrifugo_ports=centrifugo_ports(data),
                s3_admin_port=data.garage_admin_port, s3_metrics_token_file=S3_METRICS_TOKEN)),
        PROM_RULES: render("rules.yml.j2", host_down_for=alerts["host_down_for"],
                           **{k: v for k, v in secs.items()},
                           **{f"{k}_text": alerts[k] for k in secs}),
    }


def centrifugo_ports(data) -> dict[str, int]:
    """instance -> the internal port of its Centrifugo (metrics), on every streaming host."""
    return {i.name: centrifugo_model.internal_port(i, data.centrifugo_internal_port_offset)
            for i in centrifugo_model.realtime_instances(data.projects.instances)}


def s3_metrics_token(data) -> str:
    return data.secrets["garage_metrics_token"] + "\n"


@deploy("Prometheus (backup host)")
def prometheus():
    data = host.data
    r = prometheus_rendered(data, data.private_ip, platform_hosts(), group_addrs())
    apt.packages(name="Prometheus", packages=["prometheus"], update=True, cache_time=3600, no_recommends=True)
    files.directory(name="/etc/prometheus/rules", path="/etc/prometheus/rules", user="root", group="root",
                    mode="755")
    for dest in ("/etc/default/prometheus", PROM_CONF, PROM_RULES):
        put(dest, r[dest], "644")
    put_secret(S3_METRICS_TOKEN, s3_metrics_token(data), "640", group="prometheus")
    # promtool checks the configuration and the rule files it names before Prometheus sees them.
    ready = f"http://{data.private_ip}:{data.prometheus_port}/-/ready"
    restart_on_change(
        "Check Prometheus config and rules (promtool), restart, wait until ready",
        ["/etc/default/prometheus", PROM_CONF, PROM_RULES, S3_METRICS_TOKEN],
        "systemctl enable prometheus && systemctl restart prometheus && "
        f"for i in $(seq 1 60); do curl -fsS -o /dev/null {ready} && break; sleep 1; done && "
        f"curl -fsS -o /dev/null {ready}",
        validate=f"promtool check config {PROM_CONF}", marker=f"{STATE}/prometheus.applied",
    )
    systemd.service(name="Prometheus running", service="prometheus", running=True, enabled=True)
