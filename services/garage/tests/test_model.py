"""Garage derivations (services/garage/model.py) and the S3 secrets' checks: one bucket
and key per instance that needs one. No host is contacted."""

from __future__ import annotations

from codeb import registry, secrets, shared
from services.garage import model as garage_model

REG = registry.load()
SECRETS = {name: secrets.generator(name)() if name.startswith(("s3_", "garage_rpc")) else f"pw-{name}"
           for name in shared.required_secrets(REG.instances)}


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
