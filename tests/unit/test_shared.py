"""Shared derivations (codeb/shared.py): per-instance names, secret names and the firewall table."""

import pytest

from codeb import registry, shared
from services.app import model as app_model


@pytest.fixture(scope="module")
def reg():
    return registry.load()


def inst(reg, name):
    return next(i for i in reg.instances if i.name == name)


def test_names_are_safe_for_sql_redis_and_s3(reg):
    i = inst(reg, "codeb-dashboard-production")
    assert shared.db_name(i) == shared.db_role(i) == "codeb_dashboard_production"
    assert shared.redis_user(i) == shared.redis_prefix(i) == "codeb-dashboard-production"
    assert shared.redis_acl_patterns("codeb-dashboard-production") == ("~codeb-dashboard-production:*",
                                                                       "&codeb-dashboard-production:*")
    assert shared.bucket_name(i) == "codeb-dashboard-production"
    assert app_model.unit_name(i, "green") == "codeb-dashboard-production-green"


def test_every_sql_name_is_unique_and_a_plain_identifier(reg):
    names = [shared.db_name(i) for i in reg.instances]
    assert len(names) == len(set(names))
    assert all(n.replace("_", "").isalnum() and n.islower() and len(n) <= 63 for n in names)


def test_required_secrets_follow_needs(reg):
    names = shared.required_secrets(reg.instances)
    assert "db_password.workb-production" in names
    assert {"s3_key_id.workb-production", "s3_key_secret.workb-production"} <= set(names)
    # codeb-dashboard needs no bucket, so it gets no S3 key.
    assert "s3_key_id.codeb-dashboard-production" not in names
    assert set(shared.PLATFORM_SECRETS) <= set(names)
    assert len(names) == len(set(names))


GROUPS = {"app": ["10.0.0.11", "10.0.0.21"], "streaming": ["10.0.0.12"], "storage": ["10.0.0.13"],
          "backup": ["10.0.0.14"]}


SERVICES = {
    "ssh": {"port": 22, "on": "all", "from": ["@admin"]},
    "node-exporter": {"port": 9100, "on": "all", "from": ["backup"]},
    "postgresql": {"port": 5432, "on": "storage", "from": ["app", "backup"]},
    "dns": {"port": 53, "on": "storage", "from": ["@any"], "proto": "both"},
}


def test_firewall_rules_for_a_storage_host():
    rules = shared.firewall_rules(["storage"], SERVICES, GROUPS, ["192.0.2.0/24", "2001:db8::/32"])
    by_name = {(r["name"], r["proto"]): r for r in rules}
    assert by_name[("ssh", "tcp")]["v4"] == ["192.0.2.0/24"] and by_name[("ssh", "tcp")]["v6"] == ["2001:db8::/32"]
    assert by_name[("postgresql", "tcp")]["v4"] == ["10.0.0.11/32", "10.0.0.14/32", "10.0.0.21/32"]
    assert by_name[("dns", "udp")]["v4"] is None and by_name[("dns", "tcp")]["v4"] is None  # anyone
    assert by_name[("node-exporter", "tcp")]["v4"] == ["10.0.0.14/32"]


def test_services_of_other_groups_open_nothing():
    rules = shared.firewall_rules(["app"], SERVICES, GROUPS, ["192.0.2.0/24"])
    assert {r["name"] for r in rules} == {"ssh", "node-exporter"}


def test_a_service_without_allowed_sources_opens_nothing():
    rules = shared.firewall_rules(["storage"], {"x": {"port": 1, "on": "storage", "from": ["app"]}},
                                  {"app": []}, [])
    assert rules == []


def test_unknown_firewall_source_is_an_error():
    with pytest.raises(ValueError, match="unknown source 'web'"):
        shared.firewall_rules(["storage"], {"x": {"port": 1, "on": "storage", "from": ["web"]}}, GROUPS, [])


def test_cluster_source_opens_only_when_the_group_has_several_hosts():
    svc = {"redis": {"port": 6379, "on": "storage", "from": ["app", "streaming@cluster"]}}
    one = shared.firewall_rules(["storage"], svc, GROUPS, [])
    assert one[0]["v4"] == ["10.0.0.11/32", "10.0.0.21/32"]
    two = shared.firewall_rules(["storage"], svc, dict(GROUPS, streaming=["10.0.0.12", "10.0.0.22"]), [])
    assert two[0]["v4"] == ["10.0.0.11/32", "10.0.0.12/32", "10.0.0.21/32", "10.0.0.22/32"]


def test_port_ranges_for_release_slots_between_app_hosts():
    svc = {"app-slots": {"port": "4000-5999", "on": "app", "from": ["app@cluster"]}}
    rules = shared.firewall_rules(["app"], svc, GROUPS, [])
    assert rules == [{"name": "app-slots", "port": "4000-5999", "proto": "tcp", "iif": None,
                      "v4": ["10.0.0.11/32", "10.0.0.21/32"], "v6": []}]
    assert shared.firewall_rules(["app"], svc, dict(GROUPS, app=["10.0.0.11"]), []) == []
    with pytest.raises(ValueError, match="bad port range"):
        shared.firewall_rules(["app"], {"x": {"port": "5-1", "on": "app", "from": ["app"]}}, GROUPS, [])


def test_internal_services_are_allowed_only_on_the_private_interface():
    svc = dict(SERVICES, wireguard={"port": 51820, "proto": "udp", "on": "all", "from": ["@platform"]})
    rules = shared.firewall_rules(["storage"], svc, GROUPS, ["192.0.2.0/24"],
                                  public_addrs=["198.51.100.13", "198.51.100.11"], private_interface="wg0")
    by_name = {(r["name"], r["proto"]): r for r in rules}
    # From host groups (private addresses): internal, so only on wg0.
    assert by_name[("postgresql", "tcp")]["iif"] == "wg0"
    assert by_name[("node-exporter", "tcp")]["iif"] == "wg0"
    # Public services, SSH from the admins and the mesh's transport: any interface.
    assert by_name[("dns", "udp")]["iif"] is None and by_name[("ssh", "tcp")]["iif"] is None
    assert by_name[("wireguard", "udp")] == {"name": "wireguard", "port": 51820, "proto": "udp", "iif": None,
                                             "v4": ["198.51.100.11/32", "198.51.100.13/32"], "v6": []}


