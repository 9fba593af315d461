"""The control plane stops instead of doing half a change: a failed host stops every host."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from lab.topology import guest_exec
from services.garage import CONFIG as GARAGE_CONFIG
from services.garage import STATE as GARAGE_STATE
from services.garage import UNIT as GARAGE_UNIT
from tests.topology.conftest import REPO, connect, hosts_in, lab_secrets

JOURNALD = "/etc/systemd/journald.conf.d/10-platform.conf"  # written by the baseline, before storage


@pytest.mark.destructive
def test_a_failed_storage_phase_stops_every_later_operation_on_every_host(apply):
    app, storage = connect(hosts_in("app")[0]), connect(hosts_in("storage")[0])
    site = sorted(app.check_output("ls /etc/caddy/sites").split())[0]
    site = f"/etc/caddy/sites/{site}"
    site_before, journald_before = app.file(site).content_string, app.file(JOURNALD).content_string
    # Drift on the app host in two phases: the baseline (before storage) and the app phase (after).
    app.run_expect([0], f"echo '# drift-before-storage' >> {JOURNALD}")
    app.run_expect([0], f"echo '# drift-after-storage' >> {site}")
    # The storage phase fails: PostgreSQL's state checks run through runuser on the storage host.
    storage.run_expect([0], "mv /usr/sbin/runuser /usr/sbin/runuser.codeb-test && "
                            "printf '#!/bin/sh\\necho injected failure >&2\\nexit 1\\n' > /usr/sbin/runuser && "
                            "chmod 755 /usr/sbin/runuser")
    try:
        failed = apply()
    finally:
        storage.run_expect([0], "mv /usr/sbin/runuser.codeb-test /usr/sbin/runuser")
    assert failed.returncode != 0, failed.stdout[-3000:]
    assert "Over 0% of hosts failed" in failed.stdout + failed.stderr, failed.stdout[-3000:]
    # The baseline ran on the app host (its drift is repaired); nothing after the failure did.
    assert app.file(JOURNALD).content_string == journald_before
    assert "# drift-after-storage" in app.file(site).content_string, "an app operation ran after storage failed"
    repaired = apply()
    assert repaired.returncode == 0, repaired.stdout[-3000:]
    assert app.file(site).content_string == site_before


# --- binaries are swapped, never copied over a running program ------------------------------------


def running_exe(h, unit: str) -> tuple[str, str]:
    """(main PID, SHA-256 of the file that PID runs) of a systemd service."""
    pid = h.check_output(f"systemctl show -p MainPID --value {unit}")
    return pid, h.check_output(f"sha256sum /proc/{pid}/exe").split()[0]


@pytest.mark.destructive
def test_pinned_binaries_are_swapped_under_running_services(apply):
    """The services run an on-disk binary that differs from the pin (as after a pin change):
    the apply installs the pinned one beside it, checks its digest, renames it into place and
    restarts the service on it. Copying over the running file would fail (text file busy)."""
    from codeb import artifacts, registry
    from services.centrifugo import model as centrifugo_model

    pins = artifacts.pins("local")
    node = centrifugo_model.unit(centrifugo_model.realtime_instances(registry.load().instances)[0])
    cases = [(connect(hosts_in("streaming")[0]), node, "/usr/local/bin/centrifugo", pins["centrifugo"]),
             (connect(hosts_in("storage")[0]), "garage", "/usr/local/bin/garage", pins["garage"])]
    for h, unit, path, pin in cases:
        # The running binary is now a different build of the program (one byte appended). Every
        # process running it stops first (every instance's Centrifugo shares the binary).
        pattern = "'centrifugo@*.service'" if unit.startswith("centrifugo@") else f"{unit}.service"
        h.run_expect([0], f"u=$(systemctl list-units --plain --no-legend --state=running {pattern} | cut -d' ' -f1) "
                          f"&& systemctl stop $u && printf '\\n' >> {path} && systemctl start $u")
        _, running = running_exe(h, unit)
        assert running == h.check_output(f"sha256sum {path}").split()[0] != pin["sha256"]
    # ... which the restart markers record as applied, as after the previous pin's apply: every
    # Centrifugo instance's and Garage's.
    streaming = cases[0][0]
    streaming.run_expect([0], "cd /var/lib/codeb/applied && for f in /etc/centrifugo/*.json; do "
                              "i=$(basename $f .json); sha256sum /usr/local/bin/centrifugo "
                              "/etc/systemd/system/centrifugo@.service $f > centrifugo@$i.service.restart; done")
    storage = cases[1][0]
    storage.run_expect([0], f"cd {GARAGE_STATE} && sha256sum /usr/local/bin/garage {GARAGE_UNIT} {GARAGE_CONFIG} "
                            "> server.applied")
    applied = apply()
    assert applied.returncode == 0, applied.stdout[-3000:]
    for h, unit, path, pin in cases:
        assert h.service(unit).is_running
        _, running = running_exe(h, unit)
        assert running == pin["sha256"], f"{unit} does not run the pinned binary"
        assert h.check_output(f"sha256sum {path}").split()[0] == pin["sha256"]
        assert not h.file(f"{path}.codeb-new").exists


# --- configuration is checked before it replaces the live file ------------------------------------


def test_a_broken_render_fails_the_apply_and_leaves_the_live_file_and_service_alone(apply):
    app = connect(hosts_in("app")[0])
    sites = sorted(app.check_output("ls /etc/caddy/sites").split())
    before = {s: app.check_output(f"sha256sum /etc/caddy/sites/{s}").split()[0] for s in sites}
    pid = app.check_output("systemctl show -p MainPID --value caddy")
    # Data that renders a site Caddy cannot parse (a duration of two words).
    proc = apply("--data", "app_lb_health_interval=2 weeks")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    lines = [line for line in out.splitlines() if "rejected the rendered /etc/caddy/sites/" in line]
    assert lines and "error: caddy rejected the rendered" in lines[0] and "the live file is unchanged" in lines[0], \
        out[-3000:]
    after = {s: app.check_output(f"sha256sum /etc/caddy/sites/{s}").split()[0] for s in sites}
    assert after == before
    assert not app.run("ls /etc/caddy/sites/*.codeb-new").stdout.strip()
    assert app.service("caddy").is_running and app.check_output("systemctl show -p MainPID --value caddy") == pid
    assert apply().returncode == 0


# --- secrets never pass through a place another user can read -------------------------------------

WATCH = "/run/codeb-watch"
PG_KEY = "/etc/postgresql/17/main/server.key"
REDIS_ACL = "/etc/redis/users.acl"


@pytest.mark.destructive
def test_an_unprivileged_user_never_reads_a_secret_during_an_apply_that_writes_secrets(apply):
    n3 = connect(hosts_in("storage")[0])
    key_before = n3.check_output(f"cat {PG_KEY}")
    # An apply that writes secrets: a drifted secret file, and a missing one (a new destination
    # in a directory everyone may enter).
    n3.run_expect([0], f"echo '# drift' >> {REDIS_ACL} && rm -f {PG_KEY}")
    watcher = (
        f"cd {WATCH}; n=0; while [ ! -e stop ]; do n=$((n+1)); "
        "for f in /tmp/* /tmp/.[!.]* /var/tmp/* /var/lib/codeb-upload/*/* "
        f"{PG_KEY} {PG_KEY}.codeb-new {REDIS_ACL} {REDIS_ACL}.codeb-new; do "
        "[ -f \"$f\" ] && [ -r \"$f\" ] && { echo \"== $f\"; cat \"$f\"; }; done >> seen 2>/dev/null; "
        "echo $n > rounds; done"
    )
    n3.run_expect([0], f"rm -rf {WATCH} && mkdir -m 1777 {WATCH} && "
                       f"(setsid runuser -u nobody -- sh -c {shlex.quote(watcher)} >/dev/null 2>&1 &)")
    try:
        applied = apply()
    finally:
        n3.run(f"touch {WATCH}/stop; sleep 1")
    assert applied.returncode == 0, applied.stdout[-3000:]
    rounds = int(n3.check_output(f"cat {WATCH}/rounds"))
    seen = n3.check_output(f"cat {WATCH}/seen || true")
    n3.run(f"rm -rf {WATCH}")
    assert rounds > 100, f"the watcher only polled {rounds} times"
    assert n3.check_output(f"cat {PG_KEY}") == key_before
    assert n3.file(PG_KEY).mode == 0o600 and "# drift" not in n3.file(REDIS_ACL).content_string
    body = [line for line in key_before.splitlines() if line and not line.startswith("-----")]
    values = list(lab_secrets().values()) + body
    leaked = [v for v in values if v in seen]
    del seen
    assert not leaked, f"an unprivileged user read {len(leaked)} secret value(s) during the apply"


# --- pinned host keys ---------------------------------------------------------------------------------


@pytest.mark.destructive
def test_a_changed_host_key_stops_the_apply_before_any_operation(tmp_path, apply):
    """The storage host answers with another host key (its key files replaced: sshd reads them
    for every connection). The apply stops before any operation, naming the host."""
    name = hosts_in("storage")[0]
    etc_ssh = REPO / ".lab" / "guests" / name / "etc" / "ssh"

    def restart_sshd():  # without SSH: the new key would (rightly) be refused
        proc = guest_exec(name, "systemctl", "restart", "ssh", timeout=60)
        assert proc.returncode == 0, proc.stderr

    saved = tmp_path / "hostkeys"
    saved.mkdir()
    keys = sorted(etc_ssh.glob("ssh_host_*"))
    for key in keys:
        shutil.copy2(key, saved / key.name)
    fresh = tmp_path / "fresh"
    (fresh / "etc" / "ssh").mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-A", "-f", str(fresh)], check=True, capture_output=True)
    try:
        for key in sorted((fresh / "etc" / "ssh").glob("ssh_host_*")):
            shutil.copy2(key, etc_ssh / key.name)
        restart_sshd()
        refused = apply()
    finally:
        for key in keys:
            shutil.copy2(saved / key.name, etc_ssh / key.name)
        restart_sshd()
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0, out[-3000:]
    assert "--> Starting operation" not in out, "an operation ran although a host key had changed"
    errors = [line for line in out.splitlines() if f"[{name}]" in line and "host key" in line.lower()]
    assert errors, out[-3000:]
    assert apply().returncode == 0


# --- the platform CA is the environment's, not a control node's -----------------------------------


def test_two_applies_from_two_clean_control_node_homes_issue_no_new_certificate(tmp_path, apply):
    """No certificate state lives in a home directory (a fresh CI runner has none): applies
    from two empty homes change nothing, so no certificate is reissued and nothing restarts."""
    from codeb import artifacts

    for home in ("home-a", "home-b"):
        (tmp_path / home).mkdir()
        proc = apply(env={"HOME": str(tmp_path / home), "CODEB_ARTIFACT_CACHE": str(artifacts.CACHE)})
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert "[converge]" in proc.stdout and ", 0 change(s), exit 0" in proc.stdout, proc.stdout[-3000:]
        assert not any((tmp_path / home).rglob("*.key")), "a key was written into the control node's home"
