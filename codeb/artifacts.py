"""Binaries that Debian does not package, built from pinned Go module versions.

Built once on the control node, cached per (name, version, build settings),
uploaded to hosts only when their copy differs, and checked by SHA-256 after
upload. The pins live in group_data/all.py (`artifacts`).

A spec is a mapping:
    module:   Go module path, e.g. github.com/minio/minio
    version:  exact version or pseudo-version (the pin)
    package:  main package to build (default: the module)
    binary:   installed file name
    ldflags:  extra -ldflags (e.g. -X ...Version=...)
    replace:  {module: "module version"} overrides, when the pinned version's own
              requirements cannot be fetched (recorded with the pin, with the reason)
    edits:    {file in the module: [[old, new], ...]} exact text substitutions made to a
              copy of the pinned module's source before building, when a replaced
              requirement changed an API the pin calls (recorded with the pin, with the
              reason); each `old` must occur, or the build fails
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("CODEB_ARTIFACT_CACHE", Path.home() / ".cache" / "codeb" / "artifacts"))


@dataclass(frozen=True)
class Artifact:
    name: str
    path: Path
    sha256: str


def _key(spec: dict) -> str:
    canon = json.dumps(spec, sort_keys=True).encode()
    return hashlib.sha256(canon).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


EDITED_SRC = "edited-src"


def _go_mod(spec: dict) -> str:
    lines = ["module codeb.invalid/artifact", "", "go 1.24", "", f"require {spec['module']} {spec['version']}", ""]
    replaces = dict(spec.get("replace") or {})
    if spec.get("edits"):
        replaces[spec["module"]] = f"./{EDITED_SRC}"
    for old, new in sorted(replaces.items()):
        lines.append(f"replace {old} => {new}")
    return "\n".join(lines) + "\n"


def apply_edits(root: Path, edits: dict) -> None:
    """Exact substitutions in a module's source tree; every `old` must be found."""
    for rel, pairs in sorted(edits.items()):
        path = root / rel
        text = path.read_text()
        for old, new in pairs:
            if old not in text:
                raise RuntimeError(f"artifact edit: {old!r} not found in {rel}; review the pin's `edits`")
            text = text.replace(old, new)
        path.write_text(text)


def _edited_source(spec: dict, work: Path, env: dict) -> None:
    """Copy the pinned module's source (from the module cache) into work/edited-src and edit it."""
    out = subprocess.run(["go", "mod", "download", "-json", f"{spec['module']}@{spec['version']}"],
                         cwd=work, env=env, check=True, capture_output=True, text=True).stdout
    src = Path(json.loads(out)["Dir"])
    dest = work / EDITED_SRC
    shutil.copytree(src, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)  # the module cache is read-only
    apply_edits(dest, spec["edits"])


def build(spec: dict, goos: str = "linux", goarch: str = "amd64") -> Artifact:
    """Return the cached binary for `spec`, building it with the Go toolchain if needed."""
    spec = dict(spec, goos=goos, goarch=goarch)
    name = spec["binary"]
    out_dir = CACHE / f"{name}-{spec['version']}-{_key(spec)}"
    binary = out_dir / name
    digest_file = out_dir / f"{name}.sha256"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (binary.exists() and digest_file.exists()):
            print(f"[artifacts] building {name} {spec['version']} (cached afterwards)", flush=True)
            with tempfile.TemporaryDirectory(prefix="codeb-build-") as work:
                env = dict(os.environ, CGO_ENABLED="0", GOOS=goos, GOARCH=goarch, GOFLAGS="-mod=mod",
                           GOTOOLCHAIN="local")
                if spec.get("edits"):
                    _edited_source(spec, Path(work), env)
                Path(work, "go.mod").write_text(_go_mod(spec))
                tmp_bin = Path(work) / name
                ldflags = " ".join(["-s", "-w", *([spec["ldflags"]] if spec.get("ldflags") else [])])
                subprocess.run(
                    ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp_bin),
                     spec.get("package", spec["module"])],
                    cwd=work, env=env, check=True,
                )
                out_dir.mkdir(parents=True, exist_ok=True)
                shutil.move(str(tmp_bin), binary)
                digest_file.write_text(sha256_file(binary) + "\n")
        digest = digest_file.read_text().strip()
    if sha256_file(binary) != digest:
        raise RuntimeError(f"artifact {binary} does not match its recorded SHA-256; delete {out_dir} to rebuild")
    return Artifact(name=name, path=binary, sha256=digest)


def install(artifact: Artifact, dest: str):
    """pyinfra operations: upload when different, then verify the checksum on the host."""
    from pyinfra.operations import files, server

    put = files.put(name=f"Install {artifact.name} ({artifact.sha256[:12]})", src=str(artifact.path), dest=dest,
                    user="root", group="root", mode="755")
    server.shell(name=f"Verify {artifact.name} checksum",
                 commands=[f"echo '{artifact.sha256}  {dest}' | sha256sum --check --quiet"], _if=put.did_change)
    return put
