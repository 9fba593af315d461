"""Storage derivations (codeb/derive.py): pg_hba, SCRAM verifiers, Redis ACLs, S3 policies,
DNS zones, the hashed PowerDNS API key. No host is contacted."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from codeb import registry, secrets, shared
from services.garage import model as garage_model
from services.postgresql import model as postgresql_model
from services.powerdns import model as powerdns_model
from services.redis import model as redis_model

REG = registry.load()
ADDRS = {"app": ["10.77.0.11"], "streaming": ["10.77.0.12"], "storage": ["10.77.0.13"], "backup": ["10.77.0.14"]}
HOSTS = [("n1", "10.77.0.11"), ("n2", "10.77.0.12"), ("n3", "10.77.0.13"), ("n4", "10.77.0.14")]
SECRETS = {name: secrets.generator(name)() if name.startswith(("s3_", "garage_rpc")) else f"pw-{name}"
           for name in shared.required_secrets(REG.instances)}


def instances_without(project: str):
    return [i for i in REG.instances if i.project != project]


# --- PostgreSQL -----------------------------------------------------------------------


def test_scram_verifier_matches_the_rfc_7677_exchange():
    """RFC 7677 section 3: user 'user', password 'pencil'. A server holding our verifier
    must accept the RFC's client proof and answer with the RFC's server signature."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = postgresql_model.scram_sha256_verifier("pencil", salt, 4096)
    head, keys = verifier.rsplit("$", 1)
    assert head == "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    auth_message = (
        "n=user,r=rOprNGfwEbeRWgbNEkqO,"
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    ).encode()
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    assert base64.b64encode(server_signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_role_verifiers_are_stable_and_follow_the_password():
    a = postgresql_model.pg_role_verifier("workb_production", "secret-1")
    assert a == postgresql_model.pg_role_verifier("workb_production", "secret-1")
    assert a != postgresql_model.pg_role_verifier("workb_production", "secret-2")
    # Same password, another role: another salt.
    assert a.split("$")[1] != postgresql_model.pg_role_verifier("videopick_production", "secret-1").split("$")[1]
    assert "secret-1" not in a


def test_pg_logins_cover_every_database_project_and_powerdns():
    logins = postgresql_model.pg_logins(REG.instances, SECRETS, 20)
    roles = {ln["role"] for ln in logins}
    assert roles == {shared.db_role(i) for i in REG.instances if "database" in i.needs} | {shared.PDNS_DB}
    assert all(ln["role"] == ln["database"] or ln["role"] == shared.PDNS_DB for ln in logins)
    assert all(ln["connection_limit"] == 20 for ln in logins)


def test_pg_hba_allows_each_project_only_its_database_from_its_app_hosts_over_tls():
    addrs = {**ADDRS, "app": ["10.77.0.11", "10.77.0.21"]}
    rules = postgresql_model.pg_hba_rules(REG.instances, addrs)
    network = [r for r in rules if r["type"] != "local"]
    assert {r["type"] for r in network} == {"hostssl"}
    assert {r["method"] for r in network} == {"scram-sha-256"}
    want = {(shared.db_name(i), shared.db_role(i), f"{a}/32")
            for i in REG.instances if "database" in i.needs for a in addrs["app"]}
    assert {(r["database"], r["user"], r["address"]) for r in network} == want
    assert not any("all" in (r["database"], r["user"]) for r in network)
    local = [r for r in rules if r["type"] == "local"]
    assert {(r["database"], r["user"], r["method"]) for r in local} == {
        ("all", "postgres", "peer"), (shared.PDNS_DB, shared.PDNS_DB, "scram-sha-256")}


def test_pg_hba_extra_rules_come_before_the_projects():
    extra = [{"type": "local", "database": "all", "user": "backup", "method": "peer"}]
    rules = postgresql_model.pg_hba_rules(REG.instances, ADDRS, extra)
    assert rules[2]["user"] == "backup" and rules[3]["type"] == "hostssl"


def test_removed_project_loses_its_hba_lines():
    rules = postgresql_model.pg_hba_rules(instances_without("workb"), ADDRS)
    assert not any(r["user"].startswith("workb") for r in rules)


# --- Redis ------------------------------------------------------------------------------


def test_redis_password_hash_is_acl_sha256_form():
    assert redis_model.redis_password_hash("foo") == "#" + hashlib.sha256(b"foo").hexdigest()


def test_redis_acl_users():
    users = dict(redis_model.redis_acl_users(REG.instances, SECRETS))
    assert users["default"] == "reset off"
    # Only the admin user has every key and admin commands.
    assert [u for u, rules in users.items() if "~*" in rules.split()] == [redis_model.REDIS_ADMIN_USER]
    for inst in REG.instances:
        if "redis" not in inst.needs:
            continue
        rules = users[shared.redis_user(inst)].split()
        p = shared.redis_prefix(inst)
        assert rules[:2] == ["reset", "on"]
        assert f"~{p}:*" in rules and f"&{p}:*" in rules
        assert rules[-3:] == ["+@all", "-@admin", "-@dangerous"]
        assert len([r for r in rules if r.startswith(("~", "&", "%"))]) == 2
    centrifugo = users[shared.CENTRIFUGO_REDIS_USER].split()
    assert {"~centrifugo.*", "&centrifugo.*", "%R~_"} <= set(centrifugo)
    assert "-@admin" in centrifugo and "-@dangerous" in centrifugo
    assert not any(v in " ".join(users.values()) for v in SECRETS.values())


# --- Garage (S3) --------------------------------------------------------------------------


def test_s3_desired_has_one_bucket_and_key_per_instance_with_a_bucket():
    desired = garage_model.s3_desired(REG.instances, SECRETS)
    assert {p["bucket"] for p in desired} == {i.name for i in REG.instances if "bucket" in i.needs}
    for p in desired:
        assert p["key_id"] == SECRETS[f"s3_key_id.{p['name']}"]
        assert p["secret"] == SECRETS[f"s3_key_secret.{p['name']}"]


def test_s3_secrets_in_another_format_are_refused_naming_the_secret_only():
    assert shared.s3_secret_problems(REG.instances, SECRETS) == []
    inst = next(i for i in REG.instances if "bucket" in i.needs)
    for name, bad in ((f"s3_key_id.{inst.name}", "GK" + "a" * 24 + "\n"), (f"s3_key_id.{inst.name}", "GKnothex"),
                      (f"s3_key_secret.{inst.name}", "x" * 64), ("garage_rpc_secret", "0" * 63)):
        problems = shared.s3_secret_problems(REG.instances, dict(SECRETS, **{name: bad}))
        assert len(problems) == 1 and name in problems[0] and bad.strip() not in problems[0]
    others = [i for i in REG.instances if "bucket" in i.needs and i != inst]
    dup = dict(SECRETS, **{f"s3_key_id.{others[0].name}": SECRETS[f"s3_key_id.{inst.name}"]})
    assert "shared" in shared.s3_secret_problems(REG.instances, dup)[0]


# --- PowerDNS ----------------------------------------------------------------------------


def test_pdns_api_key_hash_matches_powerdns_regression_vector():
    # From PowerDNS's own regression tests (api key 'apisecret' and its hashed form).
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
