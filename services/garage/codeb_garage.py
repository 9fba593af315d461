#!/usr/bin/python3
"""Converge Garage (the S3 server of the storage hosts) to the registry, through its admin API.

Installed on storage hosts as /usr/local/sbin/codeb-garage by services/garage; runs
as root and reads the admin token from Garage's own config, so the token never leaves the
host and never appears on a command line.

    codeb-garage wait              until the local node's admin API answers (at most 120 s)
    codeb-garage plan [--keep]     one line per change needed (nothing when in sync)
    codeb-garage apply [--keep]    make them, then plan again: exit 1 if anything is left
    codeb-garage mirror-minio --mc MC [--final]
                                   (MinIO migration) copy every bucket of MinIO (mc's `platform`
                                   alias, the MC wrapper) into Garage, then check that every
                                   MinIO object is there; `--final` (after the apps moved) copies
                                   only what is missing or older in Garage; exit 1 if any is left
    codeb-garage migration-key --remove
                                   delete the copy's temporary key (allowed on every bucket) and
                                   its mc alias file (the desired file's `migration_env`, 0600)

The wanted state is a JSON file (default /etc/garage/desired.json, root only):
    {"node": {"zone": "dc1", "capacity": "100G"},
     "buckets": [{"bucket": "b", "name": "inst", "key_id": "GK...", "secret": "..."}]}

Per entry: a bucket with that global alias; the key imported with exactly that id and
secret (Garage never forgets a key id, so a new secret needs a new id: `make secrets`
generates both); read and write on its bucket, never owner,
no bucket creation, and nothing on any other bucket. Keys that are not wanted (a project
that left the registry, a rotated key) lose every permission: revoked, while their
buckets and objects are kept, so a returning project gets its key back. `--keep` leaves
unwanted keys alone: an apply revokes them only once the apps run with their new keys.
This node gets a role in the cluster layout (zone, capacity) when it has none.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request

CONFIG = os.environ.get("GARAGE_CONFIG_FILE", "/etc/garage.toml")
DESIRED = "/etc/garage/desired.json"
MIGRATION_KEY = "codeb-minio-migration"
SIZE_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


class GarageError(Exception):
    pass


def parse_size(text: str) -> int:
    """'100G' -> 100_000_000_000 (Garage's layout capacities are in bytes)."""
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)B?", str(text).strip(), re.IGNORECASE)
    if not m:
        raise GarageError(f"capacity {text!r}: expected a number with an optional K, M, G or T")
    return int(m.group(1)) * SIZE_UNITS[m.group(2).upper()]


class Admin:
    """Garage's admin API v2 (JSON over HTTP, bearer token)."""

    def __init__(self, endpoint: str, token: str, opener=urllib.request.urlopen):
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.opener = opener

    @classmethod
    def from_config(cls, path: str = CONFIG) -> Admin:
        with open(path, "rb") as fh:
            conf = tomllib.load(fh)
        admin = conf.get("admin") or {}
        token = admin.get("admin_token")
        if not token and admin.get("admin_token_file"):
            with open(admin["admin_token_file"]) as fh:
                token = fh.read().strip()
        if not token or not admin.get("api_bind_addr"):
            raise GarageError(f"{path}: [admin] needs api_bind_addr and admin_token")
        return cls(f"http://{admin['api_bind_addr']}", token)

    def call(self, method: str, name: str, query: dict | None = None, body=None, auth: bool = True):
        url = f"{self.endpoint}/{name}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self.opener(req, timeout=30) as resp:
                text = resp.read().decode()
                if "json" not in (resp.headers.get("Content-Type") or "json"):
                    return text  # /health answers in plain text
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise GarageError(f"{method} {name}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise GarageError(f"{method} {name}: {exc}") from None
        return json.loads(text) if text.strip() else None

    def get(self, name, **query):
        return self.call("GET", f"v2/{name}", query or None)

    def post(self, name, body=None, **query):
        return self.call("POST", f"v2/{name}", query or None, body if body is not None else {})


# --- the state -------------------------------------------------------------------------------


def read_state(api: Admin) -> dict:
    """Buckets by global alias, and every key with its permissions, as plain data."""
    buckets = {}
    for b in api.get("ListBuckets") or []:
        for alias in b.get("globalAliases") or []:
            buckets[alias] = b["id"]
    keys = {}
    for k in api.get("ListKeys") or []:
        info = api.get("GetKeyInfo", id=k["id"], showSecretKey="true")
        keys[k["id"]] = {
            "name": info.get("name", ""),
            "secret": info.get("secretAccessKey"),
            "create_bucket": bool((info.get("permissions") or {}).get("createBucket")),
            "buckets": {b["id"]: {p for p, on in (b.get("permissions") or {}).items() if on}
                        for b in info.get("buckets") or []},
        }
    return {"buckets": buckets, "keys": keys}


def plan(desired: dict, current: dict, node: dict | None = None, keep: bool = False) -> list[tuple]:
    """The changes, in order, as tuples (action, ...); pure, for the unit tests."""
    actions: list[tuple] = []
    if node is not None and node.get("role") is None:
        actions.append(("layout", node["id"]))
    buckets = current["buckets"]
    keys = current["keys"]
    wanted_ids = set()
    for entry in desired.get("buckets", []):
        bucket, key_id = entry["bucket"], entry["key_id"]
        wanted_ids.add(key_id)
        bucket_id = buckets.get(bucket)
        if bucket_id is None:
            actions.append(("create-bucket", bucket))
        key = keys.get(key_id)
        if key is not None and key["secret"] != entry["secret"]:
            raise GarageError(f"key {entry['name']} ({key_id}) exists with another secret; Garage cannot "
                              "change a key's secret: rotate the key id and secret together (docs/rotate-a-secret.md)")
        if key is None:
            actions.append(("import-key", entry["name"], key_id))
            key = {"name": entry["name"], "create_bucket": False, "buckets": {}}
        elif key["name"] != entry["name"] or key["create_bucket"]:
            actions.append(("update-key", entry["name"], key_id))
        perms = key["buckets"].get(bucket_id, set()) if bucket_id else set()
        if perms != {"read", "write"}:
            actions.append(("allow", entry["name"], key_id, bucket))
        for other, other_perms in sorted(key["buckets"].items()):
            if other != bucket_id and other_perms:
                actions.append(("deny", entry["name"], key_id, other))
    if not keep:
        for key_id, key in sorted(keys.items()):
            if key_id in wanted_ids or key["name"] == MIGRATION_KEY:
                continue
            if any(key["buckets"].values()) or key["create_bucket"]:
                actions.append(("revoke", key["name"], key_id))
    return actions


# One line per action (action[1:] are the fields), for `plan` and `apply`: never a secret.
DESCRIPTIONS = {
    "layout": "layout: give node {1:.16} a role",
    "create-bucket": "create bucket {1}",
    "import-key": "import key {1} ({2})",
    "update-key": "update key {1} (name, no bucket creation)",
    "allow": "allow key {1} read+write on {3}",
    "deny": "deny key {1} on bucket {3:.16}",
    "revoke": "revoke key {1} ({2})",
}


def describe(action: tuple) -> str:
    return DESCRIPTIONS[action[0]].format(*action)


def local_node(api: Admin, rpc_public_addr: str) -> dict:
    """This host's node in the cluster status: the one at its RPC address, else the one
    with its host name."""
    nodes = api.get("GetClusterStatus").get("nodes", [])
    for n in nodes:
        if n.get("addr") == rpc_public_addr:
            return n
    for n in nodes:
        if n.get("hostname") == socket.gethostname():
            return n
    raise GarageError(f"no node at {rpc_public_addr} in the cluster status")


def apply(api: Admin, desired: dict, actions: list[tuple]) -> None:
    entries = {e["key_id"]: e for e in desired.get("buckets", [])}
    node_conf = desired.get("node") or {}
    for action in actions:
        kind = action[0]
        if kind == "layout":
            layout = api.get("GetClusterLayout")
            api.post("UpdateClusterLayout", {"roles": [{
                "id": action[1], "zone": node_conf.get("zone", "dc1"),
                "capacity": parse_size(node_conf.get("capacity", "100G")), "tags": []}]})
            api.post("ApplyClusterLayout", {"version": layout["version"] + 1})
            wait(api, 60, healthy=True)
        elif kind == "create-bucket":
            api.post("CreateBucket", {"globalAlias": action[1]})
        elif kind == "import-key":
            e = entries[action[2]]
            api.post("ImportKey", {"accessKeyId": e["key_id"], "secretAccessKey": e["secret"], "name": e["name"]})
            api.post("UpdateKey", {"name": e["name"], "deny": {"createBucket": True}}, id=e["key_id"])
        elif kind == "update-key":
            api.post("UpdateKey", {"name": action[1], "deny": {"createBucket": True}}, id=action[2])
        elif kind == "allow":
            bucket_id = _bucket_id(api, action[3])
            api.post("DenyBucketKey", {"bucketId": bucket_id, "accessKeyId": action[2],
                                       "permissions": {"read": False, "write": False, "owner": True}})
            api.post("AllowBucketKey", {"bucketId": bucket_id, "accessKeyId": action[2],
                                        "permissions": {"read": True, "write": True, "owner": False}})
        elif kind == "deny":
            _deny_all(api, action[2], action[3])
        elif kind == "revoke":
            info = api.get("GetKeyInfo", id=action[2])
            for b in info.get("buckets") or []:
                _deny_all(api, action[2], b["id"])
            api.post("UpdateKey", {"deny": {"createBucket": True}}, id=action[2])
        print(describe(action), flush=True)


def _bucket_id(api: Admin, alias: str) -> str:
    return api.get("GetBucketInfo", globalAlias=alias)["id"]


def _deny_all(api: Admin, key_id: str, bucket_id: str) -> None:
    api.post("DenyBucketKey", {"bucketId": bucket_id, "accessKeyId": key_id,
                               "permissions": {"read": True, "write": True, "owner": True}})


# --- the MinIO migration's temporary key ------------------------------------------------------


def _write_private(path: str, text: str) -> None:
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


def migration_key(api: Admin, buckets: list[str], env_file: str, s3_endpoint: str) -> dict:
    """A key allowed read+write on `buckets`, written to `env_file` (0600) as mc's `garage`
    alias; made once (the file keeps it between runs). Returns that environment."""
    key = None
    if os.path.exists(env_file):
        m = re.search(r"//(GK[0-9a-f]{24}):([0-9a-f]{64})@", open(env_file).read())
        key = m and {"id": m.group(1), "secret": m.group(2)}
    known = {k["id"] for k in api.get("ListKeys") or []}
    if not key or key["id"] not in known:
        key = {"id": "GK" + secrets.token_hex(12), "secret": secrets.token_hex(32)}
        api.post("ImportKey", {"accessKeyId": key["id"], "secretAccessKey": key["secret"], "name": MIGRATION_KEY})
    for bucket in buckets:
        api.post("AllowBucketKey", {"bucketId": _bucket_id(api, bucket), "accessKeyId": key["id"],
                                    "permissions": {"read": True, "write": True, "owner": False}})
    host = s3_endpoint.split("://", 1)[-1]
    line = f"http://{key['id']}:{key['secret']}@{host}"
    _write_private(env_file, f"MC_HOST_garage={line}\n")
    return {"MC_HOST_garage": line}


def _mc(mc: str, args: list[str], env: dict) -> list[dict]:
    proc = subprocess.run([mc, "--json", *args], capture_output=True, text=True, env=env)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    errors = [r for r in rows if r.get("status") == "error"]
    if proc.returncode not in (0,) and not (args[0] == "diff" and rows and not errors):
        detail = (errors[0].get("error", {}).get("message") if errors else proc.stderr.strip()[-300:])
        raise GarageError(f"mc {args[0]} {' '.join(args[1:])}: {detail}")
    return rows


def _listing(mc: str, target: str, env: dict) -> dict[str, dict]:
    """{key: {"size", "modified"}} of every object under `target` (alias/bucket)."""
    out = {}
    for r in _mc(mc, ["ls", "--recursive", target], env):
        if r.get("type") == "file":
            out[r["key"]] = {"size": r.get("size"), "modified": r.get("lastModified", "")}
    return out


def stale_in_garage(minio: dict[str, dict], garage: dict[str, dict]) -> list[str]:
    """Keys whose MinIO object is missing from Garage, or differs and is newer than Garage's
    copy (Garage's newer copies are the apps' writes after their switch: they win)."""
    stale = []
    for key, m in sorted(minio.items()):
        g = garage.get(key)
        if g is None or (g["size"] != m["size"] and _when(g["modified"]) < _when(m["modified"])):
            stale.append(key)
    return stale


def _when(stamp: str) -> float:
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def mirror_minio(api: Admin, desired: dict, mc: str, final: bool = False) -> None:
    """Copy every MinIO bucket (wanted or not: a removed project's data is kept too).

    The first pass copies everything (`mc mirror --overwrite`: MinIO is the apps' store until
    they switch), best effort. The final pass, after the switch, when nothing writes MinIO,
    copies what is missing or older in Garage, object by object, so that nothing the apps
    wrote to Garage since is overwritten; then every MinIO object must be in Garage, and
    not older, or it fails (and MinIO stays)."""
    env = dict(os.environ)
    minio_buckets = sorted(r["key"].rstrip("/") for r in _mc(mc, ["ls", "platform"], env)
                           if r.get("type") == "folder")
    existing = set(read_state(api)["buckets"])
    for bucket in minio_buckets:
        if bucket not in existing:
            api.post("CreateBucket", {"globalAlias": bucket})
    env.update(migration_key(api, minio_buckets, desired["migration_env"], desired["s3_endpoint"]))
    total = 0
    for bucket in minio_buckets:
        minio = _listing(mc, f"platform/{bucket}", env)
        if not final:
            # Best effort while the apps still write MinIO: an object rewritten during its copy
            # fails it; the final pass (nothing writes MinIO then) copies what is still missing.
            for attempt in range(3):
                try:
                    _mc(mc, ["mirror", "--overwrite", f"platform/{bucket}", f"garage/{bucket}"], env)
                    break
                except GarageError as exc:
                    print(f"bucket {bucket}: copy attempt {attempt + 1}: {exc}", flush=True)
            missing = sorted(set(minio) - set(_listing(mc, f"garage/{bucket}", env)))
            print(f"bucket {bucket}: {len(minio) - len(missing)} of {len(minio)} MinIO object(s) copied"
                  + (" (the rest follow in the final pass)" if missing else ""), flush=True)
            total += len(minio) - len(missing)
            continue
        for key in stale_in_garage(minio, _listing(mc, f"garage/{bucket}", env)):
            _mc(mc, ["cp", f"platform/{bucket}/{key}", f"garage/{bucket}/{key}"], env)
        left = stale_in_garage(minio, _listing(mc, f"garage/{bucket}", env))
        if left:
            raise GarageError(f"bucket {bucket}: {len(left)} MinIO object(s) missing or older in Garage after "
                              f"the copy, e.g. {left[0]}")
        total += len(minio)
        print(f"bucket {bucket}: all {len(minio)} MinIO object(s) are in Garage", flush=True)
    print(f"copied {len(minio_buckets)} bucket(s), {total} object(s)", flush=True)


def remove_migration_key(api: Admin, env_file: str) -> None:
    for k in api.get("ListKeys") or []:
        if k.get("name") == MIGRATION_KEY:
            api.post("DeleteKey", id=k["id"])
    if os.path.exists(env_file):
        os.unlink(env_file)


# --- command line ----------------------------------------------------------------------------


def wait(api: Admin, seconds: float = 120, healthy: bool = False) -> None:
    """Until the admin API answers (`healthy`: until /health says 200, which needs a layout)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            api.call("GET", "health", auth=False)
            return
        except GarageError as exc:
            if not healthy and "HTTP " in str(exc):
                return  # it answers: unavailable until this node has a role in the layout
            if time.monotonic() > deadline:
                raise GarageError(f"Garage is not {'healthy' if healthy else 'answering'} after "
                                  f"{seconds:.0f} s: {exc}") from None
            time.sleep(1)


def current_plan(api: Admin, desired: dict, keep: bool) -> list[tuple]:
    """The plan; a node without a role first gets one (buckets and keys cannot be read before)."""
    node = local_node(api, desired["rpc_public_addr"])
    if node.get("role") is None:
        return [("layout", node["id"])]
    return plan(desired, read_state(api), node, keep=keep)


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    flags = {a for a in argv if a.startswith("--")}
    if not args or args[0] not in ("wait", "plan", "apply", "mirror-minio", "migration-key"):
        print(__doc__.split("\n\n")[2], file=sys.stderr)  # the usage lines
        return 2
    try:
        api = Admin.from_config()
        if args[0] == "wait":
            wait(api)
            return 0
        with open(os.environ.get("CODEB_GARAGE_DESIRED", DESIRED)) as fh:
            desired = json.load(fh)
        keep = "--keep" in flags
        if args[0] == "migration-key":
            if "--remove" not in flags:
                print("codeb-garage migration-key: only --remove (mirror-minio makes the key)", file=sys.stderr)
                return 2
            remove_migration_key(api, desired["migration_env"])
            return 0
        if args[0] == "mirror-minio":
            mc = argv[argv.index("--mc") + 1] if "--mc" in argv else "mc"
            mirror_minio(api, desired, mc, final="--final" in flags)
            return 0
        actions = current_plan(api, desired, keep)
        if args[0] == "plan":
            for action in actions:
                print(describe(action))
            return 0
        apply(api, desired, actions)
        if actions and actions[0][0] == "layout":
            apply(api, desired, current_plan(api, desired, keep))
        left = current_plan(api, desired, keep)
        if left:
            print("codeb-garage: still out of sync after apply: " + "; ".join(map(describe, left)), file=sys.stderr)
            return 1
        return 0
    except (GarageError, OSError, KeyError, ValueError) as exc:
        print(f"codeb-garage: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
