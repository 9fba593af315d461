"""Garage, the S3 server, on the running topology, with real clients: boto3 and Node's
`@aws-sdk/client-s3` v3, each run in the app host's network namespace (the network sees
them as the app host: its private address, its mesh interface), with the app's own key.
Also the advisories that retired MinIO, replayed: forged signatures, the unsigned-trailer
path and a presigned PUT with an added `x-amz-copy-source` are all refused."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from codeb import registry, shared
from tests.topology.conftest import REPO, connect, first, group_data, private
from tests.topology.s3_clients import config, in_app_netns, python_client

DATA = group_data()
REG = registry.load()
NODE_DIR = REPO / "tests" / "topology" / "s3_node"
BUCKETS = [i for i in REG.instances if "bucket" in i.needs]


def storage_host() -> str:
    return first("storage")


@pytest.fixture(scope="module")
def node_client():
    """The SDK, installed from the lock file (`npm ci`) once per run."""
    npm = shutil.which("npm")
    assert npm, "npm is missing: `make deps` installs it"
    if not (NODE_DIR / "node_modules" / "@aws-sdk" / "client-s3").exists():
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return lambda cfg: in_app_netns(["node", str(NODE_DIR / "s3.mjs")], cfg)


@pytest.fixture(scope="module")
def n3():
    return connect(storage_host())


def test_garage_runs_hardened_under_its_own_user(n3):
    assert n3.service("garage").is_running and n3.service("garage").is_enabled
    user = n3.check_output("ps -o user= -C garage").split()
    assert user and set(user) == {"garage"}
    props = n3.check_output("systemctl show garage -p NoNewPrivileges -p ProtectSystem -p CapabilityBoundingSet "
                            "-p MemoryDenyWriteExecute")
    assert "NoNewPrivileges=yes" in props and "ProtectSystem=strict" in props
    assert "MemoryDenyWriteExecute=yes" in props and "CapabilityBoundingSet=\n" in props + "\n"
    conf = n3.file("/etc/garage.toml")
    assert conf.user == "garage" and conf.mode == 0o600
    assert n3.file("/etc/garage/desired.json").mode == 0o600


def test_garage_listens_on_the_private_address_only(n3):
    out = n3.check_output("ss -Htlnp | grep garage")
    ports = {line.split()[3] for line in out.splitlines()}
    ip = private(storage_host())
    assert ports == {f"{ip}:{DATA['s3_port']}", f"{ip}:{DATA['garage_rpc_port']}", f"{ip}:{DATA['garage_admin_port']}"}


def test_cluster_is_healthy_with_this_node_in_the_layout(n3):
    status = n3.check_output("garage -c /etc/garage.toml status")
    assert "HEALTHY NODES" in status and DATA["garage_zone"] in status
    n3.check_output(f"curl -fsS -o /dev/null http://{private(storage_host())}:{DATA['garage_admin_port']}/health")


def test_codeb_garage_is_in_sync_after_the_apply(n3):
    assert n3.check_output("codeb-garage plan") == ""


def test_boto3_own_bucket_only(n3):
    a, b = BUCKETS[:2]
    out = python_client("boto", config(a, b))
    assert out["own_roundtrip"] and out["own_list"]
    assert out["buckets_listed"] == [shared.bucket_name(a)]  # no other project revealed
    assert out["other_put"] == "AccessDenied" and out["other_get"] == "AccessDenied"
    assert out["create_bucket"] == "AccessDenied" and out["delete_bucket"] == "AccessDenied"
    assert out["wrong_secret"] in ("SignatureDoesNotMatch", "AccessDenied", "403")
    assert out["deleted"] in ("404", "NoSuchKey")


def test_node_sdk_with_default_checksums(node_client):
    a, b = BUCKETS[:2]
    out = node_client(config(a, b))
    assert "error" not in out, out
    # The default checksum path for a stream: aws-chunked, unsigned payload with a CRC32 trailer.
    assert out["stream_request"]["sha"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER", out["stream_request"]
    assert out["stream_request"]["trailer"] == "x-amz-checksum-crc32"
    assert out["stream_roundtrip"]
    assert out["multipart_parts"] == 3 and out["multipart_etag_parts"] == 3 and out["multipart_roundtrip"]
    assert out["deleted"] == 7 and out["delete_errors"] == 0 and out["left_after_delete"] == 0
    assert out["other_bucket"] == "AccessDenied"
    assert out["presigned_put"] == 200, out["presigned_put_body"]
    assert out["presigned_get"] == 200 and out["presigned_roundtrip"]
    assert not out["presigned_put_url_has_secret"]


def test_the_advisories_requests_are_refused():
    a, b = BUCKETS[:2]
    out = python_client("advisories", config(a, b))
    assert out["forged_signature"] == 403
    assert out["unsigned_trailer_forged"] == 403 and out["unsigned_trailer_anonymous"] == 403
    assert out["trailer_objects_written"] == 0
    assert out["presigned_copy_source"] in (400, 403), out
    assert "should be signed" in out["presigned_copy_source_text"]
    assert not out["copy_happened"]


def test_admin_api_refuses_without_the_token(n3):
    url = f"http://{private(storage_host())}:{DATA['garage_admin_port']}"
    assert n3.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {url}/v2/ListKeys") in ("401", "403")
    assert n3.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {url}/metrics") in ("401", "403")


def test_a_removed_project_loses_its_key_and_keeps_its_data(n3):
    """codeb-garage against the real server: a desired file without one instance revokes its key
    (the app's own client is refused) and keeps its bucket and objects; the real desired file
    brings the same key back."""
    inst, other = BUCKETS[-1], BUCKETS[0]
    cfg = config(inst, other)
    assert python_client("access", cfg) == {"list": "ok", "put": "ok"}
    bucket = shared.bucket_name(inst)
    without = ("set -e; d=$(mktemp); trap 'rm -f $d' EXIT; python3 -c \"import json,sys; "
               "x=json.load(open('/etc/garage/desired.json')); "
               f"x['buckets']=[b for b in x['buckets'] if b['bucket']!='{bucket}']; "
               "json.dump(x,open(sys.argv[1],'w'))\" $d; CODEB_GARAGE_DESIRED=$d codeb-garage apply")
    try:
        assert f"revoke key {inst.name}" in n3.check_output(f"bash -c {shlex.quote(without)}")
        assert python_client("access", cfg) == {"list": "AccessDenied", "put": "AccessDenied"}
        info = n3.check_output(f"garage -c /etc/garage.toml bucket info {bucket}")
        assert "Objects:" in info and "Objects: 0" not in info  # kept, with what the app wrote
    finally:
        n3.check_output("codeb-garage apply")
    assert n3.check_output("codeb-garage plan") == ""
    assert python_client("access", cfg) == {"list": "ok", "put": "ok"}
