"""Derivations of Prometheus: scrape configs and durations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def prometheus_scrape_configs(hosts: Iterable[tuple[str, str]], group_addrs: Mapping[str, list[str]], *,
                              node_port: int, centrifugo_ports: Mapping[str, int], s3_admin_port: int,
                              s3_metrics_token_file: str) -> list[dict]:
    """Prometheus scrape jobs: node-exporter on every host (labelled by host name), every
    instance's Centrifugo on every streaming host (`centrifugo_ports`: instance -> internal
    port; labelled by host and app instance), Garage's metrics (admin port, bearer token) on
    the storage hosts."""
    hosts = sorted(hosts)
    by_addr = {a: n for n, a in hosts}

    def targets(addrs, port):
        return [{"targets": [f"{a}:{port}"], "labels": {"host": by_addr.get(a, a)}} for a in sorted(addrs)]

    return [
        {"job_name": "node", "static_configs": targets([a for _, a in hosts], node_port)},
        {"job_name": "centrifugo", "metrics_path": "/metrics",
         "static_configs": [{"targets": [f"{a}:{port}"], "labels": {"host": by_addr.get(a, a), "app_instance": name}}
                            for name, port in sorted(centrifugo_ports.items())
                            for a in sorted(group_addrs.get("streaming", []))]},
        {"job_name": "garage", "metrics_path": "/metrics",
         "authorization": {"type": "Bearer", "credentials_file": s3_metrics_token_file},
         "static_configs": targets(group_addrs.get("storage", []), s3_admin_port)},
    ]


def duration_seconds(value: str) -> int:
    """'26h', '5m', '90s', '7d' -> seconds (the data's spelling of alert thresholds)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if not value or value[-1] not in units or not value[:-1].isdigit():
        raise ValueError(f"duration {value!r}: expected <n>s, <n>m, <n>h or <n>d")
    return int(value[:-1]) * units[value[-1]]
