"""A managed file edited by hand: `make plan` reports the drift with a diff and exit 2; the next apply repairs it."""

import subprocess
import sys

from tests.topology.conftest import REPO, connect

DROPIN = "/etc/systemd/journald.conf.d/10-platform.conf"


def run(*args):
    return subprocess.run([sys.executable, "-m", "codeb.run", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900)


def test_drift_is_reported_by_plan_and_repaired_by_apply():
    h = connect("n2")
    original = h.file(DROPIN).content_string
    h.run_expect([0], f"sed -i 's/^SystemMaxUse=.*/SystemMaxUse=1G/' {DROPIN}")
    try:
        plan = run("plan", "local")
        assert plan.returncode == 2, plan.stdout[-3000:]
        assert f"Will modify {DROPIN}" in plan.stdout
        assert "SystemMaxUse=1G" in plan.stdout and "would change: Common baseline | Render " + DROPIN in plan.stdout
        # A dry run changes nothing.
        assert "SystemMaxUse=1G" in h.file(DROPIN).content_string
    finally:
        apply = run("apply", "local")
    assert apply.returncode == 0, apply.stdout[-3000:]
    assert h.file(DROPIN).content_string == original
    again = run("plan", "local")
    assert again.returncode == 0, again.stdout[-3000:]
    assert "plan: no changes (no drift)" in again.stdout


def test_secret_file_drift_and_permission_drift_are_reported_without_contents_and_repaired():
    n2, n3 = connect("n2"), connect("n3")
    acl, config = "/etc/redis/users.acl", "/etc/centrifugo/config.json"
    acl_before = n3.file(acl).content_string
    mode_before = n2.file(config).mode
    assert mode_before != 0o600, "the permission drift below must be a change"
    n3.run_expect([0], f"sed -i '1i # drift-marker' {acl}")
    n2.run_expect([0], f"chmod 600 {config}")
    try:
        plan = run("plan", "local")
        assert plan.returncode == 2, plan.stdout[-3000:]
        assert f"Will write {acl} (contents hidden: it holds secrets)" in plan.stdout
        assert "drift-marker" not in plan.stdout  # no diff of a secret-bearing file
        assert f"would change: Streaming host | Centrifugo | Render {config} (secret): 1 (n2)" in plan.stdout
    finally:
        apply = run("apply", "local")
    assert apply.returncode == 0, apply.stdout[-3000:]
    assert n3.file(acl).content_string == acl_before
    assert n2.file(config).mode == mode_before
    assert run("plan", "local").returncode == 0
