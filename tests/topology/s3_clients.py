"""Running the S3 clients (s3_python.py, s3_node/) the way the app host would: in its network
namespace, with an instance's own key given on stdin."""

from __future__ import annotations

import json
import subprocess

from codeb import shared
from lab.topology import netns_prefix
from tests.topology.conftest import REPO, first, group_data, lab_secrets, private

DATA = group_data()
PY = REPO / ".venv" / "bin" / "python"


def storage_host() -> str:
    return first("storage")


def app_host() -> str:
    return first("app")


def config(inst, other) -> dict:
    secrets = lab_secrets()
    return {"endpoint": shared.s3_endpoint(private(storage_host()), DATA["s3_port"]), "region": DATA["s3_region"],
            "bucket": shared.bucket_name(inst), "other_bucket": shared.bucket_name(other),
            "key_id": secrets[shared.secret_s3_key_id(inst)], "secret": secrets[shared.secret_s3_key_secret(inst)]}


def in_app_netns(cmd: list[str], cfg: dict, timeout: int = 900) -> dict:
    proc = subprocess.run([*netns_prefix(app_host()), *cmd], input=json.dumps(cfg), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def python_client(scenario: str, cfg: dict) -> dict:
    return in_app_netns([str(PY), str(REPO / "tests" / "topology" / "s3_python.py"), scenario], cfg)
