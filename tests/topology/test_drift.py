"""A managed file edited by hand: `make plan` reports the drift with a diff and exit 2; the next apply repairs it."""

from tests.topology.conftest import connect, first

DROPIN = "/etc/systemd/journald.conf.d/10-platform.conf"


def test_drift_is_reported_by_plan_and_repaired_by_apply(plan, apply):
    h = connect(first("streaming"))
    original = h.file(DROPIN).content_string
    h.run_expect([0], f"sed -i 's/^SystemMaxUse=.*/SystemMaxUse=1G/' {DROPIN}")
    try:
        planned = plan()
        assert planned.returncode == 2, planned.stdout[-3000:]
        assert f"Will modify {DROPIN}" in planned.stdout
        assert "SystemMaxUse=1G" in planned.stdout
        assert "would change: Common baseline | Render " + DROPIN in planned.stdout
        # A dry run changes nothing.
        assert "SystemMaxUse=1G" in h.file(DROPIN).content_string
    finally:
        applied = apply()
    assert applied.returncode == 0, applied.stdout[-3000:]
    assert h.file(DROPIN).content_string == original
    again = plan()
    assert again.returncode == 0, again.stdout[-3000:]
    assert "plan: no changes (no drift)" in again.stdout


def test_secret_file_drift_and_permission_drift_are_reported_without_contents_and_repaired(plan, apply):
    streaming, storage = first("streaming"), first("storage")
    n2, n3 = connect(streaming), connect(storage)
    from codeb import registry
    from services.centrifugo import model as centrifugo_model

    inst = centrifugo_model.realtime_instances(registry.load().instances)[0]
    acl, config = "/etc/redis/users.acl", centrifugo_model.config_path(inst)
    acl_before = n3.file(acl).content_string
    mode_before = n2.file(config).mode
    assert mode_before != 0o600, "the permission drift below must be a change"
    n3.run_expect([0], f"sed -i '1i # drift-marker' {acl}")
    n2.run_expect([0], f"chmod 600 {config}")
    try:
        planned = plan()
        assert planned.returncode == 2, planned.stdout[-3000:]
        assert f"Will write {acl} (contents hidden: it holds secrets)" in planned.stdout
        assert "drift-marker" not in planned.stdout  # no diff of a secret-bearing file
        assert (f"would change: Streaming host | Centrifugo | Render {config} (secret): 1 ({streaming})"
                in planned.stdout)
    finally:
        applied = apply()
    assert applied.returncode == 0, applied.stdout[-3000:]
    assert n3.file(acl).content_string == acl_before
    assert n2.file(config).mode == mode_before
    assert plan().returncode == 0
