#!/usr/bin/python3
"""pdns-sync: converge PowerDNS to the zones of a JSON file through its HTTP API.

Installed by the platform deploy (services/powerdns) as /usr/local/lib/codeb/pdns-sync.

    pdns-sync --config FILE plan    print one line per change needed (nothing when in sync)
    pdns-sync --config FILE apply   make them, then `pdnsutil check-all-zones`

FILE is JSON: {"api_url": "http://<address>:<port>", "key_file": <file holding the API
key>, "desired": <file of the wanted zones>, "account": <account of the zones it manages>}.

Zones this tool creates carry that account; such a zone that is no longer wanted is
deleted, and in wanted zones every A/AAAA/NS/CNAME record set not wanted is removed, so
records that leave the registry leave DNS. The SOA is PowerDNS's own (serial bumped by
SOA-EDIT-API on every change).
"""

import argparse
import json
import subprocess
import sys
import urllib.error
import urllib.request

API_PATH = "/api/v1/servers/localhost"
MANAGED_TYPES = ("A", "AAAA", "NS", "CNAME")
CONFIG_KEYS = ("api_url", "key_file", "desired", "account")


def load_config(path):
    with open(path) as fh:
        config = json.load(fh)
    missing = [k for k in CONFIG_KEYS if not config.get(k)]
    if missing:
        sys.exit(f"pdns-sync: {path} lacks {', '.join(missing)}")
    return config


def call(config, method, path, body=None):
    """One request to the API; its JSON answer (None when empty). Exits on an HTTP error."""
    with open(config["key_file"]) as fh:
        key = fh.read().strip()
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(config["api_url"] + API_PATH + path, data=data, method=method,
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        sys.exit(f"pdns-sync: {method} {path}: HTTP {exc.code}: {exc.read().decode()[:300]}")
    return json.loads(text) if text else None


def wanted_rrsets(zone):
    out = {}
    for name, rtype, contents in zone["rrsets"]:
        out[(name, rtype)] = sorted(contents)
    out[(zone["name"], "NS")] = sorted(zone["nameservers"])
    return out


def fetch(api, desired):
    """The API answers plan() needs: GET /zones, and GET /zones/<name> of every wanted zone
    the server has ({name: answer}). `api(method, path, body=None)` makes one request."""
    listing = api("GET", "/zones")
    wanted = {z["name"] for z in desired["zones"]}
    existing = {z["name"] for z in listing}
    zones = {name: api("GET", f"/zones/{name}") for name in sorted(wanted & existing)}
    return listing, zones


def plan(desired, listing, zones, account):
    """The changes from the server's state to `desired`, as [(kind, zone, payload)]:
    ("create", zone, wanted zone), ("patch", zone, rrsets to send), ("delete", zone, None).

    `listing` is the answer of GET /zones, `zones` the answers of GET /zones/<name> of the
    wanted zones that exist; nothing here talks to the server."""
    wanted = {z["name"]: z for z in desired["zones"]}
    existing = {z["name"]: z for z in listing}
    changes = []
    for name, z in sorted(wanted.items()):
        want = wanted_rrsets(z)
        if name not in existing:
            changes.append(("create", name, z))
            continue
        have = {}
        for rr in zones[name]["rrsets"]:
            if rr["type"] in MANAGED_TYPES:
                have[(rr["name"], rr["type"])] = (rr["ttl"], sorted(r["content"] for r in rr["records"]
                                                                    if not r.get("disabled")))
        rrsets = []
        for key, contents in sorted(want.items()):
            if have.get(key) != (z["ttl"], contents):
                rrsets.append({"name": key[0], "type": key[1], "ttl": z["ttl"], "changetype": "REPLACE",
                               "records": [{"content": c, "disabled": False} for c in contents]})
        for key in sorted(set(have) - set(want)):
            rrsets.append({"name": key[0], "type": key[1], "changetype": "DELETE"})
        if rrsets:
            changes.append(("patch", name, rrsets))
    for name, z in sorted(existing.items()):
        if name not in wanted and z.get("account") == account:
            changes.append(("delete", name, None))
    return changes


def describe(kind, zone, payload):
    if kind == "patch":
        return "\n".join(f"{r['changetype'].lower()} {r['name']} {r['type']}" for r in payload)
    return f"{kind} zone {zone}"


def check_all_zones():
    subprocess.run(["pdnsutil", "check-all-zones"], check=True, stdout=subprocess.DEVNULL)


def apply(api, changes, account):
    """Make `changes` through `api`, printing each, then check every zone."""
    for kind, zone, payload in changes:
        if kind == "create":
            rrsets = [{"name": n, "type": t, "ttl": payload["ttl"], "changetype": "REPLACE",
                       "records": [{"content": c, "disabled": False} for c in cs]}
                      for (n, t), cs in sorted(wanted_rrsets(payload).items()) if t != "NS"]
            api("POST", "/zones", {"name": zone, "kind": "Native", "account": account,
                                   "nameservers": payload["nameservers"], "soa_edit_api": "DEFAULT"})
            if rrsets:
                api("PATCH", f"/zones/{zone}", {"rrsets": rrsets})
        elif kind == "patch":
            api("PATCH", f"/zones/{zone}", {"rrsets": payload})
        elif kind == "delete":
            api("DELETE", f"/zones/{zone}")
        print(describe(kind, zone, payload))
    check_all_zones()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pdns-sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="JSON: api_url, key_file, desired, account")
    parser.add_argument("command", choices=("plan", "apply"))
    args = parser.parse_args(argv)
    config = load_config(args.config)
    account = config["account"]

    def api(method, path, body=None):
        return call(config, method, path, body)

    with open(config["desired"]) as fh:
        desired = json.load(fh)
    changes = plan(desired, *fetch(api, desired), account)
    if args.command == "plan":
        for change in changes:
            print(describe(*change))
        return
    apply(api, changes, account)
    left = plan(desired, *fetch(api, desired), account)
    if left:
        sys.exit("pdns-sync: still out of sync after apply: " + "; ".join(describe(*c) for c in left))


if __name__ == "__main__":
    main()
