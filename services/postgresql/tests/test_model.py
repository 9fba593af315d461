"""PostgreSQL derivations (services/postgresql/model.py): pg_hba rules, SCRAM verifiers,
login roles. No host is contacted."""

from __future__ import annotations

import base64
import hashlib
import hmac

from codeb import registry, secrets, shared
from services.postgresql import model as postgresql_model

REG = registry.load()
ADDRS = {"app": ["10.77.0.11"], "streaming": ["10.77.0.12"], "storage": ["10.77.0.13"], "backup": ["10.77.0.14"]}
SECRETS = {name: secrets.generator(name)() if name.startswith(("s3_", "garage_rpc")) else f"pw-{name}"
           for name in shared.required_secrets(REG.instances)}


def instances_without(project: str):
    return [i for i in REG.instances if i.project != project]


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
