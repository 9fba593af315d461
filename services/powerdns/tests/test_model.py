"""PowerDNS derivations (services/powerdns/model.py): zones and records from the inventory
and the registry, the hashed API key. No host is contacted."""

from __future__ import annotations

import base64

import pytest

from codeb import registry
from services.powerdns import model as powerdns_model

REG = registry.load()
ADDRS = {"app": ["10.77.0.11"], "streaming": ["10.77.0.12"], "storage": ["10.77.0.13"], "backup": ["10.77.0.14"]}
HOSTS = [("n1", "10.77.0.11"), ("n2", "10.77.0.12"), ("n3", "10.77.0.13"), ("n4", "10.77.0.14")]


def instances_without(project: str):
    return [i for i in REG.instances if i.project != project]


def test_pdns_api_key_hash_matches_powerdns_regression_vector():
    """From PowerDNS's own regression tests (api key 'apisecret' and its hashed form)."""
    salt = base64.b64decode("9v8JxDfzQVyTpBkTbkUqYg==")
    assert powerdns_model.pdns_api_key_hash("apisecret", salt) == (
        "$scrypt$ln=10,p=1,r=8$9v8JxDfzQVyTpBkTbkUqYg==$bDQzAOHeK1G9UvTPypNhrX48w974ZXbFPtRKS34+aso=")


def test_pdns_api_key_hash_is_deterministic_per_key():
    assert powerdns_model.pdns_api_key_hash("k1") == powerdns_model.pdns_api_key_hash("k1")
    assert powerdns_model.pdns_api_key_hash("k1") != powerdns_model.pdns_api_key_hash("k2")
    assert "k1" not in powerdns_model.pdns_api_key_hash("k1").split("$")[-1]


@pytest.mark.parametrize("domain, zone", [
    ("workb.net", "workb.net"), ("www.workb.net", "workb.net"), ("staging.videopick.kr", "videopick.kr"),
    ("dashboard.codeb.kr", "codeb.kr"), ("shop.example.co.kr", "example.co.kr"), ("a.b.example.co.uk", "example.co.uk"),
])
def test_registrable_domain(domain, zone):
    assert powerdns_model.registrable_domain(domain) == zone


def _records(zones):
    return {(name, t): tuple(c) for z in zones.values() for (name, t), c in z["rrsets"].items()}


def test_dns_zones_local():
    zones = powerdns_model.dns_zones("codeb.test", HOSTS, ADDRS, REG.instances)
    assert set(zones) == {"codeb.test", "codeb.kr", "videopick.kr", "workb.net"}
    recs = _records(zones)
    for name, a in HOSTS:
        assert recs[(f"{name}.codeb.test.", "A")] == (a,)
    assert recs[("ws.codeb.test.", "A")] == ("10.77.0.12",)
    assert recs[("api.codeb.test.", "A")] == ("10.77.0.11",)
    assert recs[("db.codeb.test.", "A")] == ("10.77.0.13",)
    domains = {d for i in REG.instances for d in i.domains}
    for d in domains:
        assert recs[(d + ".", "A")] == ("10.77.0.11",)
        assert (d + ".", "A") in zones[powerdns_model.registrable_domain(d)]["rrsets"]
    # Nothing but hosts, service names and registry domains.
    assert len(recs) == len(HOSTS) + 3 + len(domains)
    assert all(z["nameservers"] == ["n3.codeb.test."] for z in zones.values())


def test_dns_zones_production_merges_platform_and_app_zone():
    zones = powerdns_model.dns_zones("codeb.kr", HOSTS, ADDRS, REG.instances)
    assert set(zones) == {"codeb.kr", "videopick.kr", "workb.net"}
    assert ("dashboard.codeb.kr.", "A") in zones["codeb.kr"]["rrsets"]
    assert ("n3.codeb.kr.", "A") in zones["codeb.kr"]["rrsets"]


def test_dns_records_leave_with_their_project():
    zones = powerdns_model.dns_zones("codeb.test", HOSTS, ADDRS, instances_without("workb"))
    assert "workb.net" not in zones
    assert not any("workb" in name for name, _ in _records(zones))


def test_dns_app_domains_follow_every_app_host():
    addrs = {**ADDRS, "app": ["10.77.0.11", "10.77.0.21"]}
    zones = powerdns_model.dns_zones("codeb.test", HOSTS, addrs, REG.instances)
    assert zones["workb.net"]["rrsets"][("workb.net.", "A")] == ["10.77.0.11", "10.77.0.21"]
    assert zones["codeb.test"]["rrsets"][("api.codeb.test.", "A")] == ["10.77.0.11", "10.77.0.21"]
