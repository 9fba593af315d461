"""Garage, the S3 server of the storage hosts (pinned crate build from codeb/artifacts.py).

Its own system user, data and metadata under /var/lib/garage, a hardened systemd unit,
every listener on the private address (S3 3900 to the app and backup hosts, RPC 3901
between storage hosts, admin API and /metrics 3903 to the backup host: see the firewall).
Buckets and keys follow the registry through `codeb-garage` (services/garage/codeb_garage.py),
which runs on the host with the admin token from Garage's config: the token never leaves
the host.

A storage host that still runs MinIO (the previous S3 server) is migrated within the same
apply (docs/migrate-minio-to-garage.md): its buckets are copied into Garage while MinIO
keeps serving (`migrate`), the apps move to Garage through the release path (services/app),
and only then is the copy topped up and MinIO removed (`finish`).
"""

from __future__ import annotations

import json
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, server, systemd

from codeb import artifacts, shared
from codeb.files import put, put_secret
from codeb.ops import converge, restart_on_change
from codeb.render import templates

from . import model

render = templates(__file__)

BINARY = "/usr/local/bin/garage"
CONFIG = "/etc/garage.toml"
UNIT = "/etc/systemd/system/garage.service"
ETC = "/etc/garage"
DESIRED = f"{ETC}/desired.json"
MIGRATION_ENV = f"{ETC}/migration.env"
TOOL = "/usr/local/sbin/codeb-garage"
TOOL_SOURCE = Path(__file__).with_name("codeb_garage.py")
STATE = "/var/lib/codeb/garage"
HOME = "/var/lib/garage"
META = f"{HOME}/meta"
DATA = f"{HOME}/data"
USER = "garage"

# What the previous S3 server left on a storage host (removed once the apps have moved).
MINIO_BINARY = "/usr/local/bin/minio"
MINIO_MC = "/usr/local/sbin/codeb-mc"
MINIO_LEFTOVERS = ["/usr/local/bin/minio", "/usr/local/bin/mc", MINIO_MC, "/etc/systemd/system/minio.service",
                   "/etc/default/minio", "/etc/minio", "/var/lib/codeb/minio", "/usr/local/lib/codeb/minio-sync",
                   "/var/lib/minio"]


def desired(data, private_ip: str) -> dict:
    return {
        "node": {"zone": data.garage_zone, "capacity": data.garage_capacity},
        "rpc_public_addr": f"{private_ip}:{data.garage_rpc_port}",
        "s3_endpoint": shared.s3_endpoint(private_ip, data.s3_port),
        "migration_env": MIGRATION_ENV,
        "buckets": model.s3_desired(data.projects.instances, data.secrets),
    }


def rendered(data, private_ip: str) -> dict:
    return {
        "config": render("garage.toml.j2", meta_dir=META, data_dir=DATA, private_ip=private_ip,
                         replication_factor=data.garage_replication_factor,
                         consistency_mode=data.garage_consistency_mode, rpc_port=data.garage_rpc_port,
                         s3_port=data.s3_port, admin_port=data.garage_admin_port, region=data.s3_region,
                         rpc_secret=data.secrets[shared.SECRET_GARAGE_RPC],
                         admin_token=data.secrets["garage_admin_token"],
                         metrics_token=data.secrets["garage_metrics_token"]),
        "unit": render("garage.service.j2", binary=BINARY, user=USER, config=CONFIG, state_dir=HOME),
        "desired": json.dumps(desired(data, private_ip), indent=2, sort_keys=True) + "\n",
    }


def minio_present() -> bool:
    """Whether this host still has the previous S3 server (decided when the apply plans)."""
    return bool(host.get_fact(File, path=MINIO_BINARY))


@deploy("Garage (S3)")
def garage():
    data = host.data
    r = rendered(data, data.private_ip)

    server.group(name=f"Group {USER}", group=USER, system=True)
    server.user(name=f"System user {USER}", user=USER, group=USER, system=True, home=HOME,
                shell="/usr/sbin/nologin", create_home=False)
    for path in (HOME, META, DATA):
        files.directory(name=path, path=path, user=USER, group=USER, mode="700")
    files.directory(name=ETC, path=ETC, user="root", group="root", mode="700")
    files.directory(name=f"{STATE} (applied markers)", path=STATE, user="root", group="root", mode="700")

    artifacts.install(artifacts.lookup(data.artifacts["garage"], "garage"), BINARY)
    # Garage refuses secrets another user could read: the config is garage's own, 0600.
    put_secret(CONFIG, r["config"], "600", user=USER, group=USER)
    put(UNIT, r["unit"], "644")
    put(TOOL, TOOL_SOURCE.read_text(), "755")
    put_secret(DESIRED, r["desired"], "600")

    restart_on_change(
        "Restart Garage (binary, unit or config changed), wait for its admin API",
        [BINARY, UNIT, CONFIG],
        f"systemctl daemon-reload && systemctl enable garage.service && systemctl restart garage.service && {TOOL} wait",
        validate=f"systemd-analyze verify {UNIT}", marker=f"{STATE}/server.applied",
    )
    systemd.service(name="Garage running", service="garage.service", running=True, enabled=True)
    # Keys no longer wanted keep their permissions until the apps have their new keys
    # (`revoke_unwanted_keys`, after the app phase).
    converge(name="Layout, buckets and keys from the registry (unwanted keys kept for now)",
             state_command=f"{TOOL} plan --keep", apply_command=f"{TOOL} apply --keep")
    if minio_present():
        server.shell(name="MinIO migration: copy every MinIO bucket into Garage (MinIO keeps serving)",
                     commands=[f"{TOOL} mirror-minio --mc {MINIO_MC}"])


def revoke_unwanted_keys():
    """After the app phase: keys of projects that left, or that were rotated, lose every permission."""
    converge(name="Revoke S3 keys the registry no longer has", state_command=f"{TOOL} plan",
             apply_command=f"{TOOL} apply")


def finish_minio_migration():
    """After the app phase, on a host that had MinIO: top the copy up with what the apps wrote
    until they switched, check it, then remove MinIO, mc and their files and delete the copy's key. Returns
    whether it did: then deploy.py has the baseline close MinIO's port."""
    if not minio_present():
        return False
    server.shell(name="MinIO migration: final copy and check, then stop MinIO",
                 commands=[f"{TOOL} mirror-minio --mc {MINIO_MC} --final", "systemctl disable --now minio.service"])
    server.shell(name="Remove MinIO, mc and their files (binaries, unit, config, data)",
                 commands=[f"rm -rf {' '.join(MINIO_LEFTOVERS)}"])
    server.user(name="Remove the minio user (and its group)", user="minio", present=False)
    systemd.daemon_reload(name="systemd daemon-reload (MinIO unit gone)")
    server.shell(name="MinIO migration: delete the copy's temporary key",
                 commands=[f"{TOOL} migration-key --remove"])
    return True  # the baseline closes MinIO's port now (deploy.py)
