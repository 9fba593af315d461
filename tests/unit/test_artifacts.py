"""The artifact mechanism: builds before pyinfra, lookups in deploy code, pinned digests.

Every test here uses its own empty cache and a stand-in `go` (a shell script on PATH),
so none depends on what this machine has built.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codeb import artifacts

REPO = Path(__file__).resolve().parents[2]

# The stand-in toolchain: `go build ... -o OUT PKG` takes a second, then writes a
# deterministic "binary" naming the package (and the toolchain it was asked for).
FAKE_GO = textwrap.dedent("""\
    #!/bin/sh
    [ "$1" = build ] || { echo "fake go: unexpected $*" >&2; exit 3; }
    out=""; prev=""
    for a in "$@"; do [ "$prev" = -o ] && out=$a; prev=$a; last=$a; done
    sleep 1
    printf 'binary of %s built by %s\\n' "$last" "$GOTOOLCHAIN" > "$out"
    """)
TOOLCHAIN = artifacts.toolchain()


def fake_digest(package: str, go: str = TOOLCHAIN) -> str:
    return hashlib.sha256(f"binary of {package} built by {go}\n".encode()).hexdigest()


def spec(name: str, **extra) -> dict:
    package = f"example.invalid/{name}"
    return {"module": package, "version": "v1.0.0", "binary": name, "sha256": fake_digest(package), **extra}


@pytest.fixture
def fake_go(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(FAKE_GO)
    go.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin", CODEB_ARTIFACT_CACHE=str(tmp_path / "cache"))
    return env


def run_python(code: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_two_greenlets_building_with_an_empty_cache_both_finish(fake_go):
    """pyinfra loads each host's deploy in a gevent greenlet (monkey-patched, so a subprocess
    yields to the next greenlet). Two greenlets that reach the build path at once with an
    empty cache must both finish, not deadlock on a lock one of them holds across the yield."""
    specs = [spec("one"), spec("two"), spec("one")]  # two artifacts, and the same one twice
    code = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import json, time, gevent
        from gevent.pool import Pool
        from codeb import artifacts
        specs = json.loads({json.dumps(json.dumps(specs))})
        pool = Pool()
        start = time.monotonic()
        jobs = [pool.spawn(artifacts.build, s) for s in specs]
        gevent.joinall(jobs, raise_error=True)
        print(json.dumps({{"seconds": time.monotonic() - start,
                          "digests": [j.value[0].sha256 for j in jobs]}}))
        """)
    try:
        proc = run_python(code, fake_go, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("two greenlets building artifacts did not finish within 20 s (deadlock)")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["digests"] == [s["sha256"] for s in specs]
    assert result["seconds"] < 10, result  # the builds overlap: about 1 s, not 3


def test_lookup_never_builds_and_names_the_pin_and_the_command(fake_go, monkeypatch, tmp_path):
    monkeypatch.setattr(artifacts, "CACHE", tmp_path / "empty")
    with pytest.raises(artifacts.ArtifactError) as exc:
        artifacts.lookup(spec("centrifugo"), "centrifugo")
    message = str(exc.value)
    assert "artifacts['centrifugo']" in message and "example.invalid/centrifugo@v1.0.0" in message
    assert "run `make artifacts`" in message and "\n" not in message
    assert not (tmp_path / "empty").exists()


def test_a_build_with_another_digest_fails_naming_the_pin(fake_go):
    wrong = spec("one", sha256="0" * 64)
    code = textwrap.dedent(f"""
        import json
        from codeb import artifacts
        try:
            artifacts.build(json.loads({json.dumps(json.dumps(wrong))}), "one")
        except artifacts.ArtifactError as exc:
            print(exc)
            raise SystemExit(2)
        """)
    proc = run_python(code, fake_go, timeout=20)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stdout.strip()
    assert "artifacts['one']" in line and f"SHA-256 {fake_digest('example.invalid/one')}" in line
    assert "0" * 64 in line and TOOLCHAIN in line
    # Nothing is cached from a build that did not match its pin.
    assert not list(Path(fake_go["CODEB_ARTIFACT_CACHE"]).glob("one-*"))


def test_the_build_uses_the_pinned_toolchain_and_then_serves_the_cache(fake_go):
    code = textwrap.dedent(f"""
        import json
        from codeb import artifacts
        s = json.loads({json.dumps(json.dumps(spec("one")))})
        first, built = artifacts.build(s, "one")
        again, rebuilt = artifacts.build(s, "one")
        print(json.dumps([built, rebuilt, first.path.read_text(), str(artifacts.lookup(s).path)]))
        """)
    proc = run_python(code, fake_go, timeout=20)
    assert proc.returncode == 0, proc.stderr
    built, rebuilt, content, looked_up = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (built, rebuilt) == (True, False)
    assert content.endswith(f"built by {TOOLCHAIN}\n")  # GOTOOLCHAIN is the pin, not the local default
    assert looked_up.startswith(fake_go["CODEB_ARTIFACT_CACHE"])


def test_every_pin_records_its_digest_and_the_toolchain_is_exact():
    assert TOOLCHAIN.startswith("go1.") and TOOLCHAIN.count(".") == 2  # a patch release, e.g. go1.26.8
    for name, pin in {**artifacts.pins("local"), **artifacts.tool_pins()}.items():
        assert len(pin.get("sha256", "")) == 64, f"artifacts[{name!r}] has no expected sha256"


# --- `main` pins: a main package generated from pinned modules (Caddy with plugins) ----------

# A stand-in `go` for main pins: `build` writes the generated go.mod and main.go into the
# "binary" (so its digest is theirs); `list -m` prints the selected versions, from go.mod's
# require lines unless FAKE_GO_SELECTED names another selection.
FAKE_GO_MAIN = textwrap.dedent("""\
    #!/bin/sh
    case "$1" in
    build)
        out=""; prev=""
        for a in "$@"; do [ "$prev" = -o ] && out=$a; prev=$a; done
        cat go.mod main.go > "$out"; printf 'sum\\n' > go.sum ;;
    list)
        if [ -n "$FAKE_GO_SELECTED" ]; then printf '%s\\n' "$FAKE_GO_SELECTED"
        else sed -n 's/^require \\([^ ]*\\) \\([^ ]*\\)$/\\1 \\2/p' go.mod; fi ;;
    *) echo "fake go: unexpected $*" >&2; exit 3 ;;
    esac
    """)

CADDY_LIKE = {
    "module": "example.invalid/server/v2",
    "version": "v2.11.9",
    "require": {"example.invalid/plugin": "v0.1.0"},
    "main": {"call": "example.invalid/server/v2/cmd.Main",
             "imports": ["example.invalid/server/v2/modules/standard", "example.invalid/plugin"]},
    "binary": "server",
}


def main_digest(spec: dict) -> str:
    text = artifacts._go_mod(spec) + artifacts.main_source(spec)
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def fake_go_main(fake_go):
    go = Path(fake_go["PATH"].split(":")[0]) / "go"
    go.write_text(FAKE_GO_MAIN)
    return fake_go


def test_a_main_pin_generates_its_main_package_and_requires_every_module_exactly():
    source = artifacts.main_source(CADDY_LIKE)
    assert source.startswith("// Code generated by codeb/artifacts.py")
    assert '\tentry "example.invalid/server/v2/cmd"\n' in source
    assert '\t_ "example.invalid/plugin"\n' in source and '\t_ "example.invalid/server/v2/modules/standard"\n' in source
    assert "func main() {\n\tentry.Main()\n}\n" in source
    # The same spec, in any order, gives the same source: the build is a function of the pin.
    shuffled = dict(CADDY_LIKE, main={**CADDY_LIKE["main"], "imports": CADDY_LIKE["main"]["imports"][::-1]})
    assert artifacts.main_source(shuffled) == source
    go_mod = artifacts._go_mod(CADDY_LIKE)
    assert "require example.invalid/server/v2 v2.11.9\n" in go_mod
    assert "require example.invalid/plugin v0.1.0\n" in go_mod


@pytest.mark.parametrize("call", ["Main", "example.invalid/cmd", "example.invalid/cmd.Main()", ""])
def test_a_main_pin_with_a_malformed_entry_point_is_refused(call):
    with pytest.raises(artifacts.ArtifactError, match="main.call"):
        artifacts.main_source(dict(CADDY_LIKE, main={"call": call}))


def build_in_subprocess(spec: dict, env: dict) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import json
        from codeb import artifacts
        s = json.loads({json.dumps(json.dumps(spec))})
        try:
            a, built = artifacts.build(s, "server")
        except artifacts.ArtifactError as exc:
            print(exc)
            raise SystemExit(2)
        print(json.dumps([str(a.path), a.sha256]))
        """)
    return run_python(code, env, timeout=20)


def test_a_main_pin_builds_the_generated_package_and_keeps_its_go_sum(fake_go_main):
    pin = dict(CADDY_LIKE, sha256=main_digest(CADDY_LIKE))
    proc = build_in_subprocess(pin, fake_go_main)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path, digest = json.loads(proc.stdout.strip().splitlines()[-1])
    assert digest == pin["sha256"]
    assert "import (" in Path(path).read_text()
    assert (Path(path).parent / "server.go.sum").read_text() == "sum\n"  # the sums the build used


def test_a_main_pin_fails_when_go_selects_another_version_of_a_required_module(fake_go_main):
    pin = dict(CADDY_LIKE, sha256=main_digest(CADDY_LIKE))
    env = dict(fake_go_main, FAKE_GO_SELECTED="example.invalid/server/v2 v2.11.9\nexample.invalid/plugin v0.2.0")
    proc = build_in_subprocess(pin, env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stdout.strip()
    assert "artifacts['server']" in line and "example.invalid/plugin v0.2.0 (pinned v0.1.0)" in line
    assert not list(Path(env["CODEB_ARTIFACT_CACHE"]).glob("server-*"))
