"""Redis derivations (services/redis/model.py): ACL users from the registry, passwords as
SHA-256 hashes. No host is contacted."""

from __future__ import annotations

import hashlib

from codeb import registry, secrets, shared
from services.redis import model as redis_model

REG = registry.load()
SECRETS = {name: secrets.generator(name)() if name.startswith(("s3_", "garage_rpc")) else f"pw-{name}"
           for name in shared.required_secrets(REG.instances)}


def test_redis_password_hash_is_acl_sha256_form():
    assert redis_model.redis_password_hash("foo") == "#" + hashlib.sha256(b"foo").hexdigest()


def test_redis_acl_users_confine_each_project_to_its_prefix_and_only_admin_has_every_key():
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
