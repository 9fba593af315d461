"""The move from MinIO to Garage, as production will live it (docs/migrate-minio-to-garage.md).

The lab is put back on the last release that ran MinIO (a git worktree of PREVIOUS_RELEASE,
applied as it was, sharing the lab's hosts, keys and secrets), objects are written into
every bucket with each app's MinIO key, then this release is applied while every app's
/api/health (which writes and reads its bucket) is requested without pause through Caddy.
Checked afterwards: every object is in Garage with the same SHA-256, read with the app's
new key; the apps run with their new env files, reached through the release switch; no
request failed; MinIO, mc, their files and their user are gone; a second apply changes
nothing; the lab is left on this release, converged, for the modules after this one.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from codeb import registry, shared
from tests.topology.conftest import LAB, REPO, connect, first, group_data, private
from tests.topology.s3_clients import config, python_client
from tests.topology.test_app import Hammer, resolve, state

# The lab goes back a release (MinIO) and migrates to this one.
pytestmark = pytest.mark.destructive

# The last release that ran MinIO (the one before this release).
PREVIOUS_RELEASE = "a91323f820e2c77bc485998b4efb003fefc2de86"
DATA = group_data()
PY = str(REPO / ".venv" / "bin" / "python")
PYINFRA = str(REPO / ".venv" / "bin" / "pyinfra")
REG = registry.load()
BUCKETS = [i for i in REG.instances if "bucket" in i.needs]
APPS = [i for i in REG.instances if i.group == "app"]
# Extra data to move, in MiB (the runbook's per-GB figure): CODEB_MIGRATION_MB=1024.
BULK_MB = int(os.environ.get("CODEB_MIGRATION_MB", "0"))


def storage_host() -> str:
    return first("storage")


def app_host() -> str:
    return first("app")


def must_pass(cmd: list[str], cwd, timeout: int = 1500, **env) -> subprocess.CompletedProcess:
    """A control-node command in `cwd` (this tree or the previous release's); it must exit 0."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})
    assert proc.returncode == 0, f"{' '.join(cmd[:4])} failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc


def changes(output: str) -> str:
    m = re.search(r"^\s*Grand total\s+(\S+)\s+(\S+)", output, re.M)
    assert m, output[-2000:]
    return m.group(2)


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """A worktree of the previous release, using this lab (its .lab) and this venv."""
    where = tmp_path_factory.mktemp("previous") / "tree"
    must_pass(["git", "worktree", "add", "--detach", str(where), PREVIOUS_RELEASE], REPO, timeout=120)
    try:
        (where / ".lab").symlink_to(LAB)
        (where / ".venv").symlink_to(REPO / ".venv")
        # Its secrets (MinIO's root password, the MinIO-era S3 keys) join the lab's file, and its
        # pins are built (or found in the cache) as `make artifacts` would.
        must_pass([PY, "-m", "codeb.cli", "secrets", "local"], where)
        must_pass([PY, "-m", "codeb.artifacts", "build", "local"], where, timeout=1800)
        yield where
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=REPO, capture_output=True)


def env_digest(inst) -> str:
    """SHA-256 of the instance's env file on the app host."""
    return connect(app_host()).check_output(f"sha256sum /etc/platform/apps/{inst.name}.env").split()[0]


def minio_config(inst, other) -> dict:
    secrets = (LAB / "secrets" / "local.yml").read_text()
    import yaml

    values = yaml.safe_load(secrets)
    return {"endpoint": shared.s3_endpoint(private(storage_host()), 9000), "region": "us-east-1",
            "bucket": shared.bucket_name(inst), "other_bucket": shared.bucket_name(other),
            "key_id": inst.name, "secret": values[f"s3_secret_key.{inst.name}"]}


def test_minio_to_garage_with_every_object_and_no_failed_request(previous):
    storage = connect(storage_host())
    # 1. Back to the previous release: MinIO serves the apps.
    start = time.monotonic()
    must_pass([PYINFRA, "-y", "inventory/local.py", "deploy.py"], previous)
    print(f"previous release applied in {time.monotonic() - start:.0f} s")
    assert storage.service("minio").is_running

    # 2. Objects in every bucket, written with each app's MinIO key (some large: data blocks).
    written, in_minio = {}, {}
    for n, inst in enumerate(BUCKETS):
        cfg = minio_config(inst, BUCKETS[(n + 1) % len(BUCKETS)])
        blocks = [python_client("put_block", cfg) for _ in range(3)]
        written[inst.name] = {b["key"]: b["sha256"] for b in blocks}
        if n == 0 and BULK_MB:
            written[inst.name].update(python_client("put_bulk", dict(cfg, mb=BULK_MB)))
        in_minio[inst.name] = python_client("objects", cfg)
        assert set(written[inst.name]) <= set(in_minio[inst.name])
    size = storage.check_output("du -sb /var/lib/minio/data | cut -f1")

    # 3. This release, under load on every app's health (a write and a read of its bucket).
    # Connection resets during Caddy's reload (Debian's Caddy 2.6 may reset a connection it
    # was about to serve) are retried once, as clients do, and reported; any HTTP error fails.
    hammers = {i.name: Hammer(i.domains[0], resolve(i.domains[0]), limit=900, retry_resets=True) for i in APPS}
    before = {i.name: state(i)["active"] for i in APPS}
    env_before = {i.name: env_digest(i) for i in APPS}
    for h in hammers.values():
        h.start()
    start = time.monotonic()
    try:
        must_pass([PYINFRA, "-y", "inventory/local.py", "deploy.py"], REPO)
    finally:
        for h in hammers.values():
            h.stop.set()
        for h in hammers.values():
            h.join()
    took = time.monotonic() - start
    total = sum(len(h.results) for h in hammers.values())
    failed = {name: [r for r in h.results if r[0] != 200] for name, h in hammers.items()}
    retried = sum(len(h.retried) for h in hammers.values())
    print(f"migration apply: {took:.0f} s for {int(size) / 1e6:.1f} MB in MinIO; {total} requests, "
          f"{sum(map(len, failed.values()))} failed, {retried} retried after a connection reset")
    assert not any(failed.values()), {k: v[:3] for k, v in failed.items() if v}
    assert all(len(h.results) > 20 for h in hammers.values())

    # 4. Every object is in Garage, read with the app's new key; what the test wrote has the
    # same SHA-256 (the apps' own health objects were rewritten since, in Garage).
    for n, inst in enumerate(BUCKETS):
        now = python_client("objects", config(inst, BUCKETS[(n + 1) % len(BUCKETS)]))
        assert set(in_minio[inst.name]) <= set(now), (inst.name, sorted(set(in_minio[inst.name]) - set(now)))
        changed = {k for k, v in written[inst.name].items() if now.get(k) != v}
        assert not changed, (inst.name, sorted(changed))
    # The apps moved through the release switch and run with their Garage keys.
    app = connect(app_host())
    secrets = __import__("yaml").safe_load((LAB / "secrets" / "local.yml").read_text())
    for inst in APPS:
        after = state(inst)["active"]
        # An instance switches slots exactly when its env file changed: every one with a
        # bucket (new S3 keys), and those whose other settings differ between the releases
        # (realtime moved to per-instance Centrifugo after the MinIO release).
        if env_digest(inst) == env_before[inst.name]:
            assert "bucket" not in inst.needs and after == before[inst.name], inst.name
            continue
        assert after != before[inst.name], inst.name
        if "bucket" not in inst.needs:
            continue
        key = app.check_output(f"podman exec {inst.name}-{after} printenv S3_ACCESS_KEY_ID")
        assert key == secrets[shared.secret_s3_key_id(inst)]

    # 5. MinIO is gone: service, binaries, files, user, port.
    assert not storage.service("minio").is_running
    for path in ("/usr/local/bin/minio", "/usr/local/bin/mc", "/etc/minio", "/etc/default/minio", "/var/lib/minio",
                 "/etc/systemd/system/minio.service", "/usr/local/sbin/codeb-mc", "/etc/garage/migration.env"):
        assert not storage.file(path).exists, path
    assert storage.run("getent passwd minio").rc != 0
    assert "9000" not in storage.check_output("nft list ruleset")
    assert "migration" not in storage.check_output("garage -c /etc/garage.toml key list")

    # 6. Converged: the next apply changes nothing.
    again = must_pass([PYINFRA, "-y", "inventory/local.py", "deploy.py"], REPO)
    out = again.stdout + again.stderr
    assert changes(out) == "-", out[-3000:]
