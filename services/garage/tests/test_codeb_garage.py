"""codeb-garage (services/garage/codeb_garage.py), the program that converges Garage's buckets
and keys on the storage host: its plan, the one thing it decides. The admin API calls are
exercised against a real Garage by the topology tests (tests/topology/test_s3.py)."""

import pytest

from services.garage import codeb_garage as g

KEY_A, KEY_B = "GK" + "a" * 24, "GK" + "b" * 24
SECRET_A, SECRET_B = "1" * 64, "2" * 64
NODE = {"id": "f" * 64, "role": {"zone": "dc1", "capacity": 10**11, "tags": []}}


def desired(*entries):
    return {"buckets": [{"bucket": b, "name": n, "key_id": k, "secret": s} for b, n, k, s in entries]}


def key(name, secret, buckets=None, create_bucket=False):
    return {"name": name, "secret": secret, "create_bucket": create_bucket, "buckets": buckets or {}}


def test_empty_cluster_gets_layout_bucket_key_and_permission():
    actions = g.plan(desired(("shop", "shop", KEY_A, SECRET_A)), {"buckets": {}, "keys": {}},
                     dict(NODE, role=None))
    assert [a[0] for a in actions] == ["layout", "create-bucket", "import-key", "allow"]


def test_in_sync_plans_nothing():
    current = {"buckets": {"shop": "id-shop"}, "keys": {KEY_A: key("shop", SECRET_A, {"id-shop": {"read", "write"}})}}
    assert g.plan(desired(("shop", "shop", KEY_A, SECRET_A)), current, NODE) == []


def test_owner_or_another_bucket_is_taken_away():
    current = {"buckets": {"shop": "id-shop", "blog": "id-blog"},
               "keys": {KEY_A: key("shop", SECRET_A, {"id-shop": {"read", "write", "owner"}, "id-blog": {"read"}})}}
    actions = g.plan(desired(("shop", "shop", KEY_A, SECRET_A)), current, NODE)
    assert ("allow", "shop", KEY_A, "shop") in actions
    assert ("deny", "shop", KEY_A, "id-blog") in actions


def test_bucket_creation_right_is_removed():
    current = {"buckets": {"shop": "id-shop"},
               "keys": {KEY_A: key("shop", SECRET_A, {"id-shop": {"read", "write"}}, create_bucket=True)}}
    assert g.plan(desired(("shop", "shop", KEY_A, SECRET_A)), current, NODE) == [("update-key", "shop", KEY_A)]


def test_a_removed_project_is_revoked_but_its_bucket_kept():
    current = {"buckets": {"shop": "id-shop", "gone": "id-gone"},
               "keys": {KEY_A: key("shop", SECRET_A, {"id-shop": {"read", "write"}}),
                        KEY_B: key("gone", SECRET_B, {"id-gone": {"read", "write"}})}}
    actions = g.plan(desired(("shop", "shop", KEY_A, SECRET_A)), current, NODE)
    assert actions == [("revoke", "gone", KEY_B)]
    assert not any(a[0] == "delete-bucket" for a in actions)


def test_keep_leaves_unwanted_keys_until_the_apps_have_moved():
    current = {"buckets": {"shop": "id-shop"},
               "keys": {KEY_A: key("shop", SECRET_A, {"id-shop": {"read", "write"}}),
                        KEY_B: key("shop", SECRET_B, {"id-shop": {"read", "write"}})}}
    assert g.plan(desired(("shop", "shop", KEY_A, SECRET_A)), current, NODE, keep=True) == []
    assert g.plan(desired(("shop", "shop", KEY_A, SECRET_A)), current, NODE) == [("revoke", "shop", KEY_B)]


def test_a_returning_project_gets_its_key_back():
    current = {"buckets": {"shop": "id-shop"}, "keys": {KEY_A: key("shop", SECRET_A)}}
    assert g.plan(desired(("shop", "shop", KEY_A, SECRET_A)), current, NODE) == [("allow", "shop", KEY_A, "shop")]


def test_a_revoked_key_is_not_revoked_again():
    current = {"buckets": {"gone": "id-gone"}, "keys": {KEY_B: key("gone", SECRET_B)}}
    assert g.plan(desired(), current, NODE) == []


def test_the_migration_key_is_not_revoked_by_the_registry():
    current = {"buckets": {"shop": "id-shop"},
               "keys": {KEY_B: key(g.MIGRATION_KEY, SECRET_B, {"id-shop": {"read", "write"}})}}
    assert g.plan(desired(), current, NODE) == []


def test_another_secret_for_a_known_key_id_is_an_error_naming_the_key_not_the_secret():
    current = {"buckets": {"shop": "id-shop"}, "keys": {KEY_A: key("shop", SECRET_B, {"id-shop": {"read", "write"}})}}
    with pytest.raises(g.GarageError, match="rotate the key id and secret together") as exc:
        g.plan(desired(("shop", "shop", KEY_A, SECRET_A)), current, NODE)
    assert SECRET_A not in str(exc.value) and SECRET_B not in str(exc.value)


@pytest.mark.parametrize("text,expected", [("100G", 10**11), ("1T", 10**12), ("2048", 2048), ("5 GB", 5 * 10**9)])
def test_capacities(text, expected):
    assert g.parse_size(text) == expected


def test_bad_capacity_is_refused():
    with pytest.raises(g.GarageError, match="capacity"):
        g.parse_size("lots")


def test_admin_endpoint_and_token_come_from_garages_config(tmp_path):
    conf = tmp_path / "garage.toml"
    conf.write_text('[admin]\napi_bind_addr = "10.78.0.3:3903"\nadmin_token = "tok"\n')
    api = g.Admin.from_config(str(conf))
    assert api.endpoint == "http://10.78.0.3:3903" and api.token == "tok"
    conf.write_text('[admin]\napi_bind_addr = "10.78.0.3:3903"\n')
    with pytest.raises(g.GarageError, match="admin_token"):
        g.Admin.from_config(str(conf))


def test_every_plan_line_is_readable_and_holds_no_secret():
    actions = [("layout", "f" * 64), ("create-bucket", "shop"), ("import-key", "shop", KEY_A),
               ("update-key", "shop", KEY_A), ("allow", "shop", KEY_A, "shop"), ("deny", "shop", KEY_A, "id-blog"),
               ("revoke", "gone", KEY_B)]
    for action in actions:
        line = g.describe(action)
        assert line and SECRET_A not in line and "\n" not in line


def test_the_copy_keeps_garages_newer_objects_and_takes_the_rest():
    minio = {"a": {"size": 1, "modified": "2026-12-02T06:00:00Z"},    # missing in Garage
             "b": {"size": 1, "modified": "2026-12-02T06:00:00Z"},    # same size: copied already
             "c": {"size": 2, "modified": "2026-12-02T06:05:00Z"},    # changed in MinIO after the copy
             "d": {"size": 3, "modified": "2026-12-02T06:00:00Z"}}    # rewritten in Garage after the switch
    garage = {"b": {"size": 1, "modified": "2026-12-02T06:01:00Z"},
              "c": {"size": 1, "modified": "2026-12-02T06:01:00Z"},
              "d": {"size": 4, "modified": "2026-12-02T06:10:00Z"},
              "e": {"size": 1, "modified": "2026-12-02T06:10:00Z"}}  # only in Garage: kept
    assert g.stale_in_garage(minio, garage) == ["a", "c"]
