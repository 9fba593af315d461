"""Binaries that Debian does not package, built from pinned Go module or crate versions.

    python -m codeb.artifacts build [ENV]   # `make artifacts`: build every pin, before pyinfra runs
    python -m codeb.artifacts list [ENV]    # what is pinned, and whether this control node has it

The build runs on the control node, before pyinfra starts, with the pinned Go
toolchain (`go_toolchain` in group_data/all.py, fetched through the module proxy
when the local `go` is another release). Each result must match the SHA-256
recorded next to its pin, or the build fails naming the pin. Results are cached
per (name, version, build settings, toolchain).

Deploy code never builds: `lookup()` returns the cached binary or raises a
one-line error naming the pin and `make artifacts`; the inventory's preflight
checks every pin the same way before any host is contacted. Nothing here holds a
lock: pyinfra loads each host's deploy in a gevent greenlet, and a blocking lock
held across a subprocess (which yields to the other greenlets) deadlocks the whole
process. Concurrent builds of one artifact each build in a private directory and
publish it with one atomic rename; the first to finish wins.

A spec is a mapping, for a Go module:
    module:   Go module path, e.g. github.com/centrifugal/centrifugo/v6
    version:  exact version or pseudo-version (the pin)
    sha256:   expected SHA-256 of the linux/amd64 binary built with the pinned toolchain
    package:  main package to build (default: the module)
    binary:   installed file name
    ldflags:  extra -ldflags (e.g. -X ...Version=...)
    replace:  {module: "module version"} overrides, when the pinned version's own
              requirements cannot be fetched (recorded with the pin, with the reason)
    edits:    {file in the module: [[old, new], ...]} exact text substitutions made to a
              copy of the pinned module's source before building, when a replaced
              requirement changed an API the pin calls (recorded with the pin, with the
              reason); each `old` must occur, or the build fails
    require:  {module: version} further modules at exact versions, for a `main` (below):
              the build fails if Go's minimal version selection picks any other version
    main:     a main package generated for the pin instead of one the module ships, for a
              program assembled from modules (Caddy with plugins):
                  {"call": "<package>.<Func>",      # what main() runs, e.g. caddycmd's Main
                   "imports": [<package>, ...]}     # imported for their side effects (plugins)
              `module`/`version` and `require` are the generated go.mod's requirements;
              `package` does not apply. Go writes the go.sum at build time from the module
              proxy, each module checked against the checksum database, and it is kept next
              to the binary in the cache (`<binary>.go.sum`); the pinned digest of the
              binary covers the whole build. The generated main.go is a pure function of
              the spec (`main_source`), so two builds give the same binary.
or, for a Rust crate from crates.io (built with `cargo install --locked`, so the crate's
own lock file decides every dependency, with the pinned Rust toolchain `rust_toolchain`):
    crate:    crate name, e.g. garage
    version:  exact version
    sha256, binary: as above
    features: optional list of cargo features (default features otherwise)
Build paths are remapped (Rust and C alike), so the digest does not depend on where the
cache or the cargo home is.
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CODEB_ARTIFACT_CACHE", Path.home() / ".cache" / "codeb" / "artifacts"))
GOOS, GOARCH = "linux", "amd64"


class ArtifactError(Exception):
    """One line: which pin, what is wrong, what to run."""


@dataclass(frozen=True)
class Artifact:
    name: str
    path: Path
    sha256: str


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- the pins ---------------------------------------------------------------------------------


def _group_data(name: str) -> dict:
    path = REPO / "group_data" / f"{name}.py"
    return runpy.run_path(str(path)) if path.exists() else {}


def toolchain(spec: dict | None = None) -> str:
    """The pinned toolchain for `spec`: Go's by default, Rust's for a crate."""
    data = _group_data("all")
    if spec is not None and "crate" in spec:
        return f"rust{data['rust_toolchain']}"
    return data["go_toolchain"]


def source(spec: dict) -> str:
    """`module@version` or `crate@version`, for messages."""
    return f"{spec.get('module') or spec['crate']}@{spec['version']}"


def pins(env: str | None = None) -> dict[str, dict]:
    """Every deployed pin (group_data/all.py `artifacts`, overridden per name by the
    environment's file, plus its userspace WireGuard when it has one), keyed by name."""
    merged = dict(_group_data("all").get("artifacts") or {})
    if env:
        data = _group_data(env)
        merged.update(data.get("artifacts") or {})
        if data.get("wireguard_userspace"):
            merged["wireguard-go"] = data["wireguard_userspace"]
    return merged


def tool_pins() -> dict[str, dict]:
    """Control-node tools built the same way (group_data/all.py `tool_artifacts`)."""
    return dict(_group_data("all").get("tool_artifacts") or {})


def _where(name: str) -> str:
    return f"pin artifacts[{name!r}]"


def _key(spec: dict, go: str) -> str:
    settings = {k: v for k, v in spec.items() if k != "sha256"}
    canon = json.dumps(dict(settings, goos=GOOS, goarch=GOARCH, toolchain=go), sort_keys=True).encode()
    return hashlib.sha256(canon).hexdigest()[:16]


def cache_dir(spec: dict, go: str | None = None) -> Path:
    go = toolchain(spec) if "crate" in spec else (go or toolchain())
    return CACHE / f"{spec['binary']}-{spec['version']}-{_key(spec, go)}"


# --- lookups (deploy code and preflight: no build, no lock, no subprocess) --------------------

_verified: dict[tuple, str] = {}


def _verify(binary: Path) -> str:
    st = binary.stat()
    key = (str(binary), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256_file(binary)
    return _verified[key]


def lookup(spec: dict, name: str | None = None, go: str | None = None) -> Artifact:
    """The cached, verified binary for `spec`; ArtifactError if `make artifacts` has not built it."""
    name = name or spec["binary"]
    where = f"{_where(name)} ({source(spec)})"
    if not spec.get("sha256"):
        raise ArtifactError(f"{where} has no 'sha256': record the expected digest next to the pin")
    binary = cache_dir(spec, go) / spec["binary"]
    if not binary.exists():
        raise ArtifactError(f"{where} is not built on this control node: run `make artifacts`")
    digest = _verify(binary)
    if digest != spec["sha256"]:
        raise ArtifactError(f"{where}: the cached binary's SHA-256 {digest} is not the pinned "
                            f"{spec['sha256']}: run `make artifacts`")
    return Artifact(name=spec["binary"], path=binary, sha256=digest)


def check(env: str) -> list[str]:
    """Problems with the pins an apply to `env` uploads (for the preflight)."""
    problems = []
    try:
        go = toolchain()
    except KeyError:
        return ["group_data/all.py: 'go_toolchain' is not set"]
    for name, spec in pins(env).items():
        try:
            lookup(spec, name, toolchain(spec) if "crate" in spec else go)
        except ArtifactError as exc:
            problems.append(f"artifacts: {exc}")
    return problems


# --- builds (control node, before pyinfra) -----------------------------------------------------

EDITED_SRC = "edited-src"


def _requires(spec: dict) -> dict[str, str]:
    """Every module the pin requires directly, at its exact version."""
    return {spec["module"]: spec["version"], **dict(spec.get("require") or {})}


def _go_mod(spec: dict) -> str:
    lines = ["module codeb.invalid/artifact", "", "go 1.24", ""]
    lines += [f"require {module} {version}" for module, version in _requires(spec).items()] + [""]
    replaces = dict(spec.get("replace") or {})
    if spec.get("edits"):
        replaces[spec["module"]] = f"./{EDITED_SRC}"
    for old, new in sorted(replaces.items()):
        lines.append(f"replace {old} => {new}")
    return "\n".join(lines) + "\n"


def main_source(spec: dict) -> str:
    """main.go of a `main` pin: blank imports of its plugins, and main() calling its entry point."""
    main = spec["main"]
    target, _, func = main.get("call", "").rpartition(".")
    if "/" not in target or not func.isidentifier():
        raise ArtifactError(f"main.call {main.get('call')!r} is not '<package path>.<Func>'")
    imports = sorted(set(main.get("imports") or ()) - {target})
    lines = ["// Code generated by codeb/artifacts.py from the pin; DO NOT EDIT.", "package main", "",
             "import (", f'\tentry "{target}"', ""]
    lines += [f'\t_ "{path}"' for path in imports]
    lines += [")", "", "func main() {", f"\tentry.{func}()", "}", ""]
    return "\n".join(lines)


def _check_selected(spec: dict, work: Path, env: dict, log) -> None:
    """Fail when minimal version selection built a required module at another version than its pin."""
    wanted = _requires(spec)
    out = _go(["list", "-m", "-f", "{{.Path}} {{.Version}}", *wanted], work, env, log)
    selected = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    wrong = [f"{m} {selected.get(m, 'missing')} (pinned {v})" for m, v in wanted.items() if selected.get(m) != v]
    if wrong:
        raise ArtifactError(f"the build selected {', '.join(wrong)}: pin the versions Go selects")


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


def _go(args: list[str], work: Path, env: dict, log) -> str:
    proc = subprocess.run(["go", *args], cwd=work, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    if proc.returncode:
        raise ArtifactError(f"`go {' '.join(args[:2])}` failed (exit {proc.returncode})")
    return proc.stdout


def _edited_source(spec: dict, work: Path, env: dict, log) -> None:
    """Copy the pinned module's source (from the module cache) into work/edited-src and edit it."""
    out = _go(["mod", "download", "-json", f"{spec['module']}@{spec['version']}"], work, env, log)
    dest = work / EDITED_SRC
    shutil.copytree(json.loads(out)["Dir"], dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)  # the module cache is read-only
    apply_edits(dest, spec["edits"])


def _compile_go(spec: dict, stage: Path, go: str, log) -> None:
    work = stage / "work"
    work.mkdir()
    # -buildvcs=false: the generated main module is never stamped with a repository the cache
    # happens to be in (not recorded in the binary otherwise).
    env = dict(os.environ, CGO_ENABLED="0", GOOS=GOOS, GOARCH=GOARCH, GOFLAGS="-mod=mod -buildvcs=false",
               GOTOOLCHAIN=go)
    if spec.get("edits"):
        _edited_source(spec, work, env, log)
    (work / "go.mod").write_text(_go_mod(spec))
    if "main" in spec:
        (work / "main.go").write_text(main_source(spec))
    ldflags = " ".join(["-s", "-w", *([spec["ldflags"]] if spec.get("ldflags") else [])])
    package = "." if "main" in spec else spec.get("package", spec["module"])
    _go(["build", "-trimpath", "-ldflags", ldflags, "-o", str(stage / spec["binary"]), package], work, env, log)
    if spec.get("require"):
        _check_selected(spec, work, env, log)
    if (work / "go.sum").exists():
        shutil.copyfile(work / "go.sum", stage / f"{spec['binary']}.go.sum")


def cargo_home() -> Path:
    return Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))


def cargo_command(spec: dict, stage: Path) -> tuple[list[str], dict]:
    """`cargo install --locked` of the pinned crate into `stage`, with every build path
    (the stage, the cargo home) remapped in Rust and C output and symbols stripped."""
    home = cargo_home()
    maps = [(str(stage), "/build"), (str(home), "/cargo")]
    rustflags = " ".join(f"--remap-path-prefix={a}={b}" for a, b in maps)
    cflags = " ".join(f"-ffile-prefix-map={a}={b}" for a, b in maps)
    env = dict(os.environ, RUSTUP_TOOLCHAIN=toolchain(spec).removeprefix("rust"), CARGO_HOME=str(home),
               CARGO_TARGET_DIR=str(stage / "target"), RUSTFLAGS=rustflags, CFLAGS=cflags, CXXFLAGS=cflags,
               CARGO_PROFILE_RELEASE_STRIP="symbols", CARGO_PROFILE_RELEASE_DEBUG="0",
               CARGO_INCREMENTAL="0", SOURCE_DATE_EPOCH="0", CARGO_TERM_COLOR="never")
    env.pop("RUSTC_WRAPPER", None)
    cmd = ["cargo", "install", "--locked", "--force", "--root", str(stage / "root"),
           f"{spec['crate']}@{spec['version']}", "--bin", spec["binary"]]
    if spec.get("features"):
        cmd += ["--no-default-features", "--features", ",".join(spec["features"])]
    return cmd, env


def _compile_crate(spec: dict, stage: Path, log) -> None:
    cmd, env = cargo_command(spec, stage)
    proc = subprocess.run(cmd, cwd=stage, env=env, stdout=log, stderr=log)
    if proc.returncode:
        raise ArtifactError(f"`cargo install {spec['crate']}@{spec['version']}` failed (exit {proc.returncode})")
    (stage / "root" / "bin" / spec["binary"]).rename(stage / spec["binary"])
    for leftover in ("target", "root"):
        shutil.rmtree(stage / leftover, ignore_errors=True)


def build(spec: dict, name: str | None = None, go: str | None = None) -> tuple[Artifact, bool]:
    """Return (artifact, built): the cached binary for `spec`, built first if missing.

    Safe to call from several greenlets or processes at once: no lock; each build
    happens in its own directory and is published by an atomic rename.
    """
    name = name or spec["binary"]
    crate = "crate" in spec
    go = toolchain(spec) if crate else (go or toolchain())
    where = f"{_where(name)} ({source(spec)})"
    if spec.get("sha256"):
        try:
            return lookup(spec, name, go), False
        except ArtifactError:
            pass
    tool = "cargo" if crate else "go"
    if shutil.which(tool) is None:
        hint = (f"install rustup with the {go} toolchain" if crate else
                f"install Go 1.21 or later (the pinned {go} is then fetched through the module proxy)")
        raise ArtifactError(f"{where}: no `{tool}` on PATH; {hint}")
    out_dir = cache_dir(spec, go)
    CACHE.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=CACHE))
    try:
        with open(stage / "build.log", "w") as log:
            try:
                if crate:
                    _compile_crate(spec, stage, log)
                else:
                    _compile_go(spec, stage, go, log)
            except ArtifactError as exc:
                log.flush()
                tail = (stage / "build.log").read_text().splitlines()[-15:]
                sys.stderr.write("".join(f"    {line}\n" for line in tail))
                raise ArtifactError(f"{where}: {exc}") from None
        digest = sha256_file(stage / spec["binary"])
        if not spec.get("sha256"):
            raise ArtifactError(f"{where} has no 'sha256': this build with {go} gave {digest}; "
                                "record it next to the pin")
        if digest != spec["sha256"]:
            raise ArtifactError(f"{where}: built with {go}, SHA-256 {digest} is not the pinned {spec['sha256']}; "
                                "check the toolchain and the pin before changing the digest")
        shutil.rmtree(stage / "work", ignore_errors=True)
        (stage / f"{spec['binary']}.sha256").write_text(digest + "\n")
        try:
            return lookup(spec, name, go), True  # another builder published the same pin first
        except ArtifactError:
            shutil.rmtree(out_dir, ignore_errors=True)  # absent, or a copy that no longer matches its pin
        try:
            stage.rename(out_dir)
        except OSError:
            pass  # published meanwhile by another builder: the lookup below verifies it
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return lookup(spec, name, go), True


def build_all(env: str | None) -> int:
    go = toolchain()
    specs = {**pins(env), **tool_pins()}
    failed = 0
    print(f"[artifacts] toolchain {go}; {len(specs)} pin(s); cache {CACHE}", flush=True)
    for name, spec in specs.items():
        start = time.monotonic()
        print(f"[artifacts] {name} {spec['version']}: ", end="", flush=True)
        try:
            artifact, built = build(spec, name, toolchain(spec) if "crate" in spec else go)
        except ArtifactError as exc:
            print("failed", flush=True)
            print(f"error: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        took = time.monotonic() - start
        print(f"{'built' if built else 'cached'} in {took:.1f} s (sha256 {artifact.sha256[:12]})", flush=True)
    return 2 if failed else 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("build", "list"):
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        return 2
    env = argv[1] if len(argv) > 1 else None
    if argv[0] == "build":
        return build_all(env)
    for name, spec in {**pins(env), **tool_pins()}.items():
        try:
            state = f"ok {lookup(spec, name).path}"
        except ArtifactError as exc:
            state = f"missing: {exc}"
        print(f"{name:12} {spec['version']:40} {state}")
    return 0


def install(artifact: Artifact, dest: str):
    """pyinfra operation: when the host's copy differs, upload next to `dest`, check the
    SHA-256 there, then rename over `dest` (codeb.files.put_binary): never a partial binary,
    never a copy over a running program."""
    from codeb.files import put_binary

    return put_binary(dest, artifact.path, artifact.sha256, artifact.name)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
