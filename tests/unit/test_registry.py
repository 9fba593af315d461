"""Registry validation: every rule has a fixture that breaks it, with a clear message."""

import pytest

from codeb import registry


def problems(raw) -> list[str]:
    with pytest.raises(registry.RegistryError) as exc:
        registry.validate(raw)
    return exc.value.problems


def test_the_committed_registry_is_valid():
    reg = registry.load()
    assert {i.project for i in reg.instances} >= {"workb", "videopick", "codeb-dashboard"}
    dashboard = next(i for i in reg.instances if i.name == "codeb-dashboard-production")
    assert dashboard.port == 4000 and dashboard.slot_ports == {"blue": 4000, "green": 4001}


def test_duplicate_port_names_both_projects(raw_registry):
    raw_registry["projects"]["videopick"]["environments"]["production"]["port"] = 4000
    out = problems(raw_registry)
    assert any("'videopick'" in p and "4000" in p and "codeb-dashboard-production/blue" in p for p in out), out


def test_slots_of_neighbours_must_not_overlap(raw_registry):
    # 4001 is codeb-dashboard's green slot.
    raw_registry["projects"]["videopick"]["environments"]["production"]["port"] = 4001
    out = problems(raw_registry)
    assert any("codeb-dashboard-production/green" in p for p in out), out


@pytest.mark.parametrize("env,port", [("production", 3999), ("production", 4500), ("staging", 4499),
                                      ("staging", 5000), ("preview", 4999), ("preview", 6000)])
def test_port_outside_its_environment_range(raw_registry, env, port):
    raw_registry["projects"]["workb"]["environments"][env]["port"] = port
    out = problems(raw_registry)
    assert any(f"environment '{env}'" in p and f"'port' {port} is outside the {env} range" in p for p in out), out


def test_green_slot_outside_range(raw_registry):
    raw_registry["projects"]["workb"]["environments"]["production"]["port"] = 4499
    out = problems(raw_registry)
    assert out == ["project 'workb' environment 'production': field 'port' 4499 puts the green slot on 4500, "
                   "outside the production range 4000-4499"]


@pytest.mark.parametrize("domain", ["workb", "-workb.net", "workb-.net", "wo rkb.net", "workb.net.", "workb.1",
                                    "a" * 64 + ".net", "WORKB..net"])
def test_malformed_domain(raw_registry, domain):
    raw_registry["projects"]["workb"]["environments"]["staging"]["domains"] = [domain]
    out = problems(raw_registry)
    assert any("'workb'" in p and "'staging'" in p and "malformed domain" in p for p in out), out


def test_duplicate_domain(raw_registry):
    raw_registry["projects"]["videopick"]["environments"]["staging"]["domains"] = ["staging.workb.net"]
    out = problems(raw_registry)
    assert any("'staging.workb.net' is already used by" in p for p in out), out


@pytest.mark.parametrize("where", ["project", "environment", "needs"])
def test_unknown_keys_are_rejected(raw_registry, where):
    workb = raw_registry["projects"]["workb"]
    target = {"project": workb, "environment": workb["environments"]["production"], "needs": workb["needs"]}[where]
    target["replicas"] = 3
    out = problems(raw_registry)
    assert any("'workb'" in p and "replicas" in p and "unknown key" in p for p in out), out


def test_unknown_environment(raw_registry):
    raw_registry["projects"]["workb"]["environments"]["qa"] = {"port": 4600, "domains": ["qa.workb.net"], "tag": "1"}
    assert any("unknown environment 'qa'" in p for p in problems(raw_registry))


def test_unknown_host_group(raw_registry):
    raw_registry["projects"]["workb"]["environments"]["production"]["group"] = "web"
    assert any("unknown host group 'web'" in p for p in problems(raw_registry))


@pytest.mark.parametrize("name", ["Workb", "work_b", "1workb", "workb-", "w", "a" * 25, "drop;table"])
def test_names_must_be_safe_everywhere(raw_registry, name):
    raw_registry["projects"][name] = raw_registry["projects"].pop("workb")
    assert any(f"project {name!r}: name must match" in p for p in problems(raw_registry))


def test_bad_tag_and_image(raw_registry):
    env = raw_registry["projects"]["workb"]["environments"]["production"]
    env["tag"] = "latest tag"
    env["image"] = "ghcr.io/x/y@sha256:abc"
    out = problems(raw_registry)
    assert any("field 'tag'" in p for p in out) and any("field 'image'" in p for p in out), out


def test_every_problem_is_reported_at_once(raw_registry):
    projects = raw_registry["projects"]
    projects["workb"]["environments"]["production"]["port"] = 9000
    projects["videopick"]["environments"]["staging"]["domains"] = ["bad_domain"]
    projects["codeb-dashboard"]["colour"] = "blue"
    assert len(problems(raw_registry)) == 3


def test_unreadable_document():
    with pytest.raises(registry.RegistryError):
        registry.validate({"project": {}})


CONTROL = ["\n", "\r", "\t", "\x00", "\x1b", "\u2028"]


@pytest.mark.parametrize("ch", CONTROL, ids=repr)
@pytest.mark.parametrize("field", ["name", "domain", "image", "tag", "description"])
def test_control_characters_are_refused_in_every_field(raw_registry, field, ch):
    """`$` matches before a trailing newline: every pattern must be a full match, so a project
    `foo\\n`, a domain `www\\n.example.kr` or a tag `1.0\\n` never reaches pg_hba, Caddy or Quadlet."""
    projects = raw_registry["projects"]
    env = projects["workb"]["environments"]["production"]
    if field == "name":
        projects["workb" + ch] = projects.pop("workb")
        expect = "name must match"
    elif field == "domain":
        env["domains"] = ["www" + ch + ".workb.net"] if ch != "\n" else ["workb.net\n"]
        expect = "malformed domain"
    elif field == "image":
        env["image"] = "ghcr.io/codeb-kr/workb" + ch
        expect = "field 'image'"
    elif field == "tag":
        env["tag"] = "1.0" + ch
        expect = "field 'tag'"
    else:
        projects["workb"]["description"] = "the CMS" + ch + "more"
        expect = "field 'description'"
    out = problems(raw_registry)
    assert any(expect in p for p in out), out


def test_trailing_newlines_the_issue_named_are_refused(raw_registry):
    env = raw_registry["projects"]["workb"]["environments"]["production"]
    env["domains"] = ["www\n.example.kr"]
    env["tag"] = "1.0\n"
    raw_registry["projects"]["foo\n"] = raw_registry["projects"].pop("videopick")
    out = problems(raw_registry)
    assert any("malformed domain" in p for p in out) and any("field 'tag'" in p for p in out)
    assert any("'foo\\n'" in p and "name must match" in p for p in out), out


# --- rate_limit -----------------------------------------------------------------------------


def test_a_project_rate_limit_reaches_every_instance_and_defaults_to_none(raw_registry):
    raw_registry["projects"]["workb"]["rate_limit"] = {"requests": 300, "window": "1m"}
    reg = registry.validate(raw_registry)
    for inst in reg.instances:
        if inst.project == "workb":
            assert inst.rate_limit == registry.RateLimit(requests=300, window="1m")
        elif "rate_limit" not in raw_registry["projects"][inst.project]:
            assert inst.rate_limit is None


@pytest.mark.parametrize("value,field", [
    ("100/m", "'rate_limit'"),
    ({"requests": 100}, "'rate_limit.window'"),
    ({"window": "1m"}, "'rate_limit.requests'"),
    ({"requests": 0, "window": "1m"}, "'rate_limit.requests'"),
    ({"requests": True, "window": "1m"}, "'rate_limit.requests'"),
    ({"requests": "100", "window": "1m"}, "'rate_limit.requests'"),
    ({"requests": 100, "window": "1 minute"}, "'rate_limit.window'"),
    ({"requests": 100, "window": "0s"}, "'rate_limit.window'"),
    ({"requests": 100, "window": "1m\n"}, "'rate_limit.window'"),
    ({"requests": 100, "window": 60}, "'rate_limit.window'"),
    ({"requests": 100, "window": "1m", "burst": 5}, "'rate_limit.burst'"),
])
def test_a_bad_rate_limit_is_one_line_naming_the_field(raw_registry, value, field):
    raw_registry["projects"]["workb"]["rate_limit"] = value
    out = problems(raw_registry)
    mine = [p for p in out if "rate_limit" in p]
    assert len(mine) == 1 and "project 'workb'" in mine[0] and field in mine[0], out
    assert "\n" not in mine[0]
