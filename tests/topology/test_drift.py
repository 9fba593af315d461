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
