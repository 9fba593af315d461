#!/usr/bin/env python3
"""Build the demo app's OCI image from scratch and push it to the topology's registry.

    python -m demo.build [--force]

No registry on the internet is reachable, so there is no base image to pull: the
root filesystem is a copy of the harness's cached debootstrap of Debian trixie
(never modified), plus Debian packages installed through the apt proxy, plus the
app and the Centrifugo JavaScript client from npm (pinned by version and
integrity). It becomes a one-layer OCI image, pushed over the registry's HTTP
API under several tags that differ only in their configuration:

    <registry>/codeb/demo:1        DEMO_VERSION=1   (what the local topology runs)
    <registry>/codeb/demo:2        DEMO_VERSION=2   (what the release test deploys)
    <registry>/codeb/demo:broken   /api/health always 503 (the aborted-release test)

A build is skipped when the registry already holds the tags for the same inputs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from codeb.artifacts import sha256_file as file_digest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo"
CACHE = Path(os.environ.get("CODEB_LAB_CACHE", "/var/cache/codeb-lab"))
BASE = CACHE / "trixie-base-v1"
WORK = CACHE / "demo-build"
REPOSITORY = "codeb/demo"
PACKAGES = ["python3-psycopg", "python3-redis", "python3-boto3", "curl"]
# The official Centrifugo JavaScript client, from npm: version and integrity pinned.
CENTRIFUGE_JS = {
    "package": "centrifuge",
    "version": "5.8.0",
    "integrity": "sha512-ENH1jz6VeRuGb3yHNhgB0V0SqRKX+iYdtM9Du/E59m484epjNPfsgJw4UbmOmjgSXGEita1UoOXlZ6Ba1ooT1g==",
    "file": "package/dist/centrifuge.js",
}
VARIANTS = {
    "1": {"DEMO_VERSION": "1"},
    "2": {"DEMO_VERSION": "2"},
    "broken": {"DEMO_VERSION": "broken", "DEMO_FAIL_HEALTH": "1"},
}
KEY_LABEL = "org.codeb.demo.inputs"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def local_data() -> dict:
    return runpy.run_path(str(REPO / "group_data" / "local.py"))


def inputs_key() -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"packages": PACKAGES, "js": CENTRIFUGE_JS, "base": BASE.name, "v": 1}).encode())
    h.update((DEMO / "app.py").read_bytes())
    return h.hexdigest()[:16]


# --- registry client (Docker Registry HTTP API v2, plain HTTP on the bridge) -----------


class Registry:
    def __init__(self, address: str):
        self.base = f"http://{address}/v2"

    def _req(self, method: str, url: str, data: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(url if url.startswith("http") else self.base + url, data=data,
                                     method=method, headers=headers or {})
        return urllib.request.urlopen(req, timeout=120)

    def has_blob(self, digest: str) -> bool:
        try:
            self._req("HEAD", f"/{REPOSITORY}/blobs/{digest}").close()
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise

    def push_blob(self, digest: str, path: Path | None = None, data: bytes | None = None) -> None:
        if self.has_blob(digest):
            return
        with self._req("POST", f"/{REPOSITORY}/blobs/uploads/", data=b"") as resp:
            location = resp.headers["Location"]
        if location.startswith("/"):
            location = self.base.rsplit("/v2", 1)[0] + location
        sep = "&" if "?" in location else "?"
        body = data if data is not None else path.read_bytes()
        self._req("PUT", f"{location}{sep}digest={digest}", data=body,
                  headers={"Content-Type": "application/octet-stream"}).close()

    def manifest(self, tag: str) -> dict | None:
        try:
            with self._req("GET", f"/{REPOSITORY}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def put_manifest(self, tag: str, body: bytes) -> str:
        with self._req("PUT", f"/{REPOSITORY}/manifests/{tag}", data=body,
                       headers={"Content-Type": OCI_MANIFEST}) as resp:
            return resp.headers.get("Docker-Content-Digest", "")


# --- root filesystem --------------------------------------------------------------------


def fetch_centrifuge_js(dest: Path) -> None:
    spec = CENTRIFUGE_JS
    with tempfile.TemporaryDirectory(prefix="codeb-npm-") as tmp:
        subprocess.run(["npm", "pack", "--silent", f"{spec['package']}@{spec['version']}"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        tgz = next(Path(tmp).glob("*.tgz"))
        algo, want = spec["integrity"].split("-", 1)
        got = base64.b64encode(hashlib.new(algo, tgz.read_bytes()).digest()).decode()
        if got != want:
            raise SystemExit(f"[demo] {tgz.name}: integrity mismatch (pinned {spec['integrity']})")
        with tarfile.open(tgz) as tar:
            member = tar.extractfile(spec["file"])
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(member.read())


def build_rootfs(rootfs: Path, apt_proxy: str) -> None:
    if not (BASE / ".complete").exists():
        raise SystemExit(f"[demo] {BASE} is missing: the harness creates it (make up)")
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    log(f"copy {BASE} (the cache stays untouched)")
    subprocess.run(["cp", "-a", "--reflink=auto", str(BASE), str(rootfs)], check=True)
    (rootfs / ".complete").unlink(missing_ok=True)
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    apt = ["chroot", str(rootfs), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q",
           "-o", f"Acquire::http::Proxy={apt_proxy}", "-o", "APT::Sandbox::User=root"]
    log(f"apt-get install {' '.join(PACKAGES)} (through {apt_proxy})")
    subprocess.run([*apt, "update"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*apt, "install", "-y", "--no-install-recommends", *PACKAGES], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*apt, "clean"], check=True)
    policy.unlink()
    for junk in ("var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info", "var/log"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)
        (rootfs / junk).mkdir(parents=True, exist_ok=True)
    for path in ("etc/machine-id", "etc/hostname"):
        (rootfs / path).unlink(missing_ok=True)
    app_dir = rootfs / "srv/demo"
    app_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEMO / "app.py", app_dir / "app.py")
    fetch_centrifuge_js(app_dir / "static" / "centrifuge.js")


def layer(rootfs: Path, out: Path) -> tuple[str, str]:
    """gzip'd tar of the root filesystem: (compressed digest, uncompressed diff_id)."""
    log("pack the layer")
    tar = subprocess.Popen(["tar", "--numeric-owner", "--sort=name", "--xattrs", "-C", str(rootfs),
                            "--exclude=./proc/*", "--exclude=./sys/*", "--exclude=./dev/*", "--exclude=./run/*",
                            "--exclude=./tmp/*", "-cf", "-", "."], stdout=subprocess.PIPE)
    raw = hashlib.sha256()
    gz = subprocess.Popen(["gzip", "-n", "-6"], stdin=subprocess.PIPE, stdout=open(out, "wb"))
    for chunk in iter(lambda: tar.stdout.read(1 << 20), b""):
        raw.update(chunk)
        gz.stdin.write(chunk)
    gz.stdin.close()
    if tar.wait() or gz.wait():
        raise SystemExit("[demo] packing the layer failed")
    return f"sha256:{file_digest(out)}", f"sha256:{raw.hexdigest()}"


def image_config(diff_id: str, env: dict, key: str) -> bytes:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONUNBUFFERED=1",
                    *[f"{k}={v}" for k, v in sorted(env.items())]],
            "Cmd": ["python3", "/srv/demo/app.py"],
            "WorkingDir": "/srv/demo",
            "User": "65534:65534",
            "StopSignal": "SIGTERM",
            "Labels": {KEY_LABEL: key, "org.opencontainers.image.title": "codeb demo app"},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "demo/build.py (debootstrap trixie + apt + app)"}],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def up_to_date(reg: Registry, key: str) -> bool:
    for tag in VARIANTS:
        manifest = reg.manifest(tag)
        if not manifest or manifest.get("annotations", {}).get(KEY_LABEL) != key:
            return False
    return True


def main(argv: list[str]) -> int:
    data = local_data()
    address = data["container_registry"]
    reg = Registry(address)
    key = inputs_key()
    if "--force" not in argv and up_to_date(reg, key):
        log(f"{address}/{REPOSITORY} is up to date (inputs {key})")
        return 0
    work = WORK / key
    layer_file = work / "layer.tar.gz"
    meta_file = work / "layer.json"
    if not meta_file.exists():
        build_rootfs(work / "rootfs", data["apt_proxy"])
        digest, diff_id = layer(work / "rootfs", layer_file)
        meta_file.write_text(json.dumps({"digest": digest, "diff_id": diff_id}))
        shutil.rmtree(work / "rootfs", ignore_errors=True)
    meta = json.loads(meta_file.read_text())
    log(f"push the layer ({layer_file.stat().st_size // (1 << 20)} MiB) to {address}")
    reg.push_blob(meta["digest"], path=layer_file)
    for tag, env in VARIANTS.items():
        config = image_config(meta["diff_id"], env, key)
        config_digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
        reg.push_blob(config_digest, data=config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": meta["digest"], "size": layer_file.stat().st_size}],
            "annotations": {KEY_LABEL: key},
        }
        pushed = reg.put_manifest(tag, json.dumps(manifest, sort_keys=True).encode())
        log(f"pushed {address}/{REPOSITORY}:{tag} {pushed}")
    # Older builds' working files are not needed once the registry has the image.
    for old in WORK.glob("*"):
        if old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
