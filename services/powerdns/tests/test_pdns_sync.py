"""pdns-sync (services/powerdns/pdns_sync.py), the program that converges PowerDNS's zones
through its HTTP API on the storage host.

The server's side is recorded PowerDNS 4.9 answers (tests/recorded/: GET
/api/v1/servers/localhost/zones and GET .../zones/<zone> of each zone), fed to the program
by replacing its HTTP call function; one test runs the installed form of the program
against a local HTTP server that serves the same answers. The apply against a real
PowerDNS is exercised by the topology tests.
"""

from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.powerdns import SYNC_SOURCE
from services.powerdns import pdns_sync as sync

RECORDED = Path(__file__).with_name("recorded")
ACCOUNT = "codeb"
NS = ["n3.codeb.test."]

# What the deploy writes to /etc/powerdns/codeb-zones.json, in sync with the recorded answers.
DESIRED = {"zones": [
    {"name": "codeb.test.", "ttl": 300, "nameservers": NS, "rrsets": [
        ["api.codeb.test.", "A", ["10.77.0.11"]],
        ["db.codeb.test.", "A", ["10.77.0.13"]],
        ["n1.codeb.test.", "A", ["10.77.0.11"]],
        ["n2.codeb.test.", "A", ["10.77.0.12"]],
        ["n3.codeb.test.", "A", ["10.77.0.13"]],
        ["n4.codeb.test.", "A", ["10.77.0.14"]],
        ["ws.codeb.test.", "A", ["10.77.0.12"]],
    ]},
    {"name": "workb.net.", "ttl": 300, "nameservers": NS, "rrsets": [
        ["workb.net.", "A", ["10.77.0.11", "10.77.0.21"]],
        ["www.workb.net.", "A", ["10.77.0.11", "10.77.0.21"]],
    ]},
]}


def recorded(name: str):
    return json.loads((RECORDED / name).read_text())


class RecordedPowerDNS:
    """The API as the recorded answers describe it, in memory: GETs answer from the
    recordings; POST/PATCH/DELETE change that state the way PowerDNS does (a new zone gets
    its SOA and the NS records of `nameservers`, TTL default-ttl 300)."""

    def __init__(self):
        self.listing = recorded("zones.json")
        self.zones = {z["name"]: recorded(f"zone-{z['name'][:-1]}.json")
                      for z in self.listing if (RECORDED / f"zone-{z['name'][:-1]}.json").exists()}
        self.requests = []
        self.ignore_writes = False

    def __call__(self, method, path, body=None):
        self.requests.append((method, path, copy.deepcopy(body)))
        if method == "GET" and path == "/zones":
            return copy.deepcopy(self.listing)
        name = path.removeprefix("/zones/")
        if method == "GET":
            return copy.deepcopy(self.zones[name])
        if self.ignore_writes:
            return None
        if method == "POST":
            meta = {"account": body["account"], "id": body["name"], "kind": body["kind"], "name": body["name"]}
            self.listing.append(meta)
            soa = f"{NS[0]} hostmaster.{body['name']} 1 10800 3600 604800 3600"
            self.zones[body["name"]] = dict(meta, rrsets=[
                {"name": body["name"], "type": "SOA", "ttl": 300, "records": [{"content": soa, "disabled": False}]},
                {"name": body["name"], "type": "NS", "ttl": 300,
                 "records": [{"content": ns, "disabled": False} for ns in body["nameservers"]]},
            ])
            return meta
        if method == "PATCH":
            rrsets = self.zones[name]["rrsets"]
            for change in body["rrsets"]:
                rrsets[:] = [r for r in rrsets if (r["name"], r["type"]) != (change["name"], change["type"])]
                if change["changetype"] == "REPLACE":
                    rrsets.append({"comments": [], "name": change["name"], "type": change["type"],
                                   "ttl": change["ttl"], "records": change["records"]})
            return None
        if method == "DELETE":
            self.listing = [z for z in self.listing if z["name"] != name]
            del self.zones[name]
            return None
        raise AssertionError(f"unexpected request {method} {path}")

    def rrset(self, zone, name, rtype):
        return next(r for r in self.zones[zone]["rrsets"] if (r["name"], r["type"]) == (name, rtype))

    def writes(self):
        return [r for r in self.requests if r[0] != "GET"]


def lines(changes):
    return [line for change in changes for line in sync.describe(*change).splitlines()]


def plan_lines(api, desired=DESIRED):
    return lines(sync.plan(desired, *sync.fetch(api, desired), ACCOUNT))


@pytest.fixture
def api():
    return RecordedPowerDNS()


@pytest.fixture
def run(api, tmp_path, monkeypatch, capsys):
    """Run pdns-sync's main with a config file in tmp_path, its HTTP calls answered by `api`."""
    checked = []
    monkeypatch.setattr(sync, "call", lambda config, method, path, body=None: api(method, path, body))
    monkeypatch.setattr(sync, "check_all_zones", lambda: checked.append(True))

    def run(command, desired=DESIRED):
        checked.clear()
        (tmp_path / "zones.json").write_text(json.dumps(desired))
        config = tmp_path / "sync.json"
        config.write_text(json.dumps({"api_url": "http://127.0.0.1:8081", "key_file": str(tmp_path / "key"),
                                      "desired": str(tmp_path / "zones.json"), "account": ACCOUNT}))
        sync.main(["--config", str(config), command])
        return capsys.readouterr().out.splitlines(), bool(checked)

    return run


def without(desired, zone=None, rrset=None):
    out = copy.deepcopy(desired)
    if zone:
        out["zones"] = [z for z in out["zones"] if z["name"] != zone]
    if rrset:
        for z in out["zones"]:
            z["rrsets"] = [r for r in z["rrsets"] if (r[0], r[1]) != rrset]
    return out


# --- plan: the recorded answers against the wanted zones ----------------------------------


def test_in_sync_plans_nothing_and_prints_no_line(api, run):
    assert sync.plan(DESIRED, *sync.fetch(api, DESIRED), ACCOUNT) == []
    assert run("plan") == ([], False)


def test_plan_reads_the_zone_list_and_only_the_wanted_zones_the_server_has(api):
    sync.fetch(api, DESIRED)
    assert [r[:2] for r in api.requests] == [("GET", "/zones"), ("GET", "/zones/codeb.test."),
                                             ("GET", "/zones/workb.net.")]


def test_missing_record_is_replaced(api):
    rrsets = api.zones["codeb.test."]["rrsets"]
    rrsets[:] = [r for r in rrsets if r["name"] != "ws.codeb.test."]
    changes = sync.plan(DESIRED, *sync.fetch(api, DESIRED), ACCOUNT)
    assert lines(changes) == ["replace ws.codeb.test. A"]
    assert changes[0][2] == [{"name": "ws.codeb.test.", "type": "A", "ttl": 300, "changetype": "REPLACE",
                              "records": [{"content": "10.77.0.12", "disabled": False}]}]


def test_record_with_other_addresses_ttl_or_disabled_entries_is_replaced(api):
    api.rrset("codeb.test.", "api.codeb.test.", "A")["records"][0]["content"] = "10.77.0.99"
    api.rrset("codeb.test.", "db.codeb.test.", "A")["ttl"] = 3600
    api.rrset("workb.net.", "www.workb.net.", "A")["records"][1]["disabled"] = True
    assert plan_lines(api) == ["replace api.codeb.test. A", "replace db.codeb.test. A", "replace www.workb.net. A"]


def test_extra_managed_record_is_deleted_other_types_are_left_alone(api):
    api.zones["codeb.test."]["rrsets"] += [
        {"comments": [], "name": "old.codeb.test.", "type": "A", "ttl": 300,
         "records": [{"content": "10.77.0.50", "disabled": False}]},
        {"comments": [], "name": "old.codeb.test.", "type": "AAAA", "ttl": 300,
         "records": [{"content": "fd00::50", "disabled": False}]},
        {"comments": [], "name": "mail.codeb.test.", "type": "MX", "ttl": 300,
         "records": [{"content": "10 mx.example.org.", "disabled": False}]},
    ]
    changes = sync.plan(DESIRED, *sync.fetch(api, DESIRED), ACCOUNT)
    assert lines(changes) == ["delete old.codeb.test. A", "delete old.codeb.test. AAAA"]
    assert changes[0][2][0] == {"name": "old.codeb.test.", "type": "A", "changetype": "DELETE"}


def test_record_that_left_the_registry_is_deleted(api):
    assert plan_lines(api, without(DESIRED, rrset=("n4.codeb.test.", "A"))) == ["delete n4.codeb.test. A"]


def test_zone_no_longer_wanted_is_deleted_only_when_it_carries_our_account(api):
    """workb.net (account codeb) goes; example.org (made by hand, no account) stays."""
    desired = without(DESIRED, zone="workb.net.")
    assert plan_lines(api, desired) == ["delete zone workb.net."]


def test_new_zone_is_created(api):
    desired = copy.deepcopy(DESIRED)
    desired["zones"].append({"name": "videopick.kr.", "ttl": 300, "nameservers": NS,
                             "rrsets": [["videopick.kr.", "A", ["10.77.0.11"]]]})
    changes = sync.plan(desired, *sync.fetch(api, desired), ACCOUNT)
    assert lines(changes) == ["create zone videopick.kr."]
    assert ("GET", "/zones/videopick.kr.", None) not in api.requests  # it does not exist yet


def test_nameservers_are_a_managed_record_set(api):
    desired = copy.deepcopy(DESIRED)
    desired["zones"][0]["nameservers"] = ["n3.codeb.test.", "n5.codeb.test."]
    assert plan_lines(api, desired) == ["replace codeb.test. NS"]


def test_plan_command_prints_one_line_per_change(api, run):
    api.rrset("codeb.test.", "api.codeb.test.", "A")["records"][0]["content"] = "10.77.0.99"
    desired = without(DESIRED, zone="workb.net.")
    assert run("plan", desired) == (["replace api.codeb.test. A", "delete zone workb.net."], False)
    assert api.writes() == []  # plan only reads


# --- apply ------------------------------------------------------------------------------


def test_apply_makes_every_change_then_checks_all_zones_and_leaves_nothing_to_do(api, run):
    desired = without(DESIRED, zone="workb.net.", rrset=("n4.codeb.test.", "A"))
    desired["zones"].append({"name": "videopick.kr.", "ttl": 300, "nameservers": NS,
                             "rrsets": [["videopick.kr.", "A", ["10.77.0.11"]],
                                        ["www.videopick.kr.", "A", ["10.77.0.11"]]]})
    api.rrset("codeb.test.", "api.codeb.test.", "A")["records"][0]["content"] = "10.77.0.99"
    out, checked = run("apply", desired)
    assert out == ["replace api.codeb.test. A", "delete n4.codeb.test. A", "create zone videopick.kr.",
                   "delete zone workb.net."]
    assert checked
    assert [w[:2] for w in api.writes()] == [("PATCH", "/zones/codeb.test."), ("POST", "/zones"),
                                            ("PATCH", "/zones/videopick.kr."), ("DELETE", "/zones/workb.net.")]
    post = api.writes()[1][2]
    assert post == {"name": "videopick.kr.", "kind": "Native", "account": ACCOUNT, "nameservers": NS,
                    "soa_edit_api": "DEFAULT"}
    # The new zone's records are sent after its creation; its NS records come from `nameservers`.
    assert [(r["name"], r["type"]) for r in api.writes()[2][2]["rrsets"]] == [
        ("videopick.kr.", "A"), ("www.videopick.kr.", "A")]
    assert plan_lines(api, desired) == []
    assert run("plan", desired) == ([], False)


def test_apply_in_sync_changes_nothing(api, run):
    assert run("apply") == ([], True)
    assert api.writes() == []


def test_apply_that_leaves_drift_fails(api, run):
    api.ignore_writes = True
    api.rrset("codeb.test.", "api.codeb.test.", "A")["ttl"] = 60
    with pytest.raises(SystemExit, match="still out of sync after apply: replace api.codeb.test. A"):
        run("apply")


# --- the program itself -------------------------------------------------------------------


def test_config_lacking_a_key_is_refused_naming_it(tmp_path):
    config = tmp_path / "sync.json"
    config.write_text(json.dumps({"api_url": "http://127.0.0.1:8081", "key_file": "/k", "desired": "/d"}))
    with pytest.raises(SystemExit, match="lacks account"):
        sync.load_config(str(config))


def test_program_without_config_or_command_is_refused():
    with pytest.raises(SystemExit):
        sync.main(["plan"])
    with pytest.raises(SystemExit):
        sync.main(["--config", "/nonexistent", "sync"])


def test_program_uses_only_the_standard_library():
    """Debian's python3 runs it with nothing else installed."""
    tree = ast.parse(SYNC_SOURCE.read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules and modules <= sys.stdlib_module_names
    assert SYNC_SOURCE.read_text().startswith("#!/usr/bin/python3\n")


class _Handler(BaseHTTPRequestHandler):
    key = "test-api-key"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.headers.get("X-API-Key") != self.key:
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b"Unauthorized")
            return
        prefix = "/api/v1/servers/localhost/zones"
        if self.path == prefix:
            body = (RECORDED / "zones.json").read_bytes()
        else:
            body = (RECORDED / f"zone-{self.path.removeprefix(prefix + '/')[:-1]}.json").read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _run_installed(tmp_path, api_url, key, desired, command="plan"):
    (tmp_path / "api-key").write_text(key + "\n")
    (tmp_path / "zones.json").write_text(json.dumps(desired))
    (tmp_path / "sync.json").write_text(json.dumps({
        "api_url": api_url, "key_file": str(tmp_path / "api-key"), "desired": str(tmp_path / "zones.json"),
        "account": ACCOUNT}))
    return subprocess.run([sys.executable, str(SYNC_SOURCE), "--config", str(tmp_path / "sync.json"), command],
                          capture_output=True, text=True, timeout=60)


def test_program_plans_over_http_with_the_key_from_its_key_file(tmp_path, http_api):
    in_sync = _run_installed(tmp_path, http_api, _Handler.key, DESIRED)
    assert (in_sync.returncode, in_sync.stdout, in_sync.stderr) == (0, "", "")
    drift = _run_installed(tmp_path, http_api, _Handler.key, without(DESIRED, zone="workb.net."))
    assert (drift.returncode, drift.stdout) == (0, "delete zone workb.net.\n")


def test_program_exits_with_the_http_error_of_a_refused_request(tmp_path, http_api):
    refused = _run_installed(tmp_path, http_api, "wrong-key", DESIRED)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip() == "pdns-sync: GET /zones: HTTP 401: Unauthorized"
