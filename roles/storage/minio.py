"""MinIO (pinned community build from codeb/artifacts.py): system user, data directory,
systemd unit (Type=notify), root credentials from the secrets, the S3 API on the private
address; one bucket, access key and bucket-limited policy per project that needs one,
converged with `mc` (also built from a pin)."""

from __future__ import annotations

import json

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd

from codeb import artifacts, derive
from codeb.render import render
from roles.files import put, put_secret

from .ops import apply_when_changed, converge

BINARY = "/usr/local/bin/minio"
MC = "/usr/local/bin/mc"
MC_WRAPPER = "/usr/local/sbin/codeb-mc"
UNIT = "/etc/systemd/system/minio.service"
ENV = "/etc/default/minio"
MC_ENV = "/etc/minio/mc.env"
DESIRED = "/etc/minio/desired.json"
SYNC = "/usr/local/lib/codeb/minio-sync"
STATE = "/var/lib/codeb/minio"
DATA = "/var/lib/minio"
USER = "minio"
ROOT_USER = "platform-root"


def rendered(data, private_ip: str) -> dict:
    root_password = data.secrets["minio_root_password"]
    desired = {
        "alias": "platform",
        "projects": derive.s3_desired(data.projects.instances, data.secrets),
    }
    return {
        "unit": render("storage/minio.service.j2", binary=BINARY, user=USER, env_file=ENV, data_dir=DATA),
        "env": render("storage/minio.env.j2", root_user=ROOT_USER, root_password=root_password, data_dir=DATA,
                      address=private_ip, port=data.minio_port, console_port=data.minio_console_port),
        "mc_env": render("storage/mc.env.j2", root_user=ROOT_USER, root_password=root_password,
                         port=data.minio_port),
        "mc": render("storage/mc.sh.j2", env_file=MC_ENV, mc=MC, config_dir=f"{STATE}/mc"),
        "desired": json.dumps(desired, indent=2, sort_keys=True) + "\n",
    }


@deploy("MinIO")
def minio():
    data = host.data
    r = rendered(data, data.private_ip)

    server.group(name=f"Group {USER}", group=USER, system=True)
    server.user(name=f"System user {USER}", user=USER, group=USER, system=True, home=DATA,
                shell="/usr/sbin/nologin", create_home=False)
    files.directory(name=DATA, path=DATA, user=USER, group=USER, mode="750")
    files.directory(name=f"{DATA}/data", path=f"{DATA}/data", user=USER, group=USER, mode="750")
    files.directory(name="/etc/minio", path="/etc/minio", user="root", group="root", mode="700")
    files.directory(name=f"{STATE} (applied markers, mc config)", path=STATE, user="root", group="root", mode="700")
    files.directory(name="codeb helpers directory", path="/usr/local/lib/codeb", user="root", group="root",
                    mode="755")

    artifacts.install(artifacts.lookup(data.artifacts["minio"], "minio"), BINARY)
    artifacts.install(artifacts.lookup(data.artifacts["mc"], "mc"), MC)

    put_secret(ENV, r["env"], "600")
    put(UNIT, r["unit"], "644")
    put_secret(MC_ENV, r["mc_env"], "600")
    put(MC_WRAPPER, r["mc"], "755")
    put(SYNC, render("storage/minio-sync.py.j2", mc=MC_WRAPPER, state_dir=STATE, desired=DESIRED), "755")
    put_secret(DESIRED, r["desired"], "600")

    # The unit is checked by systemd-analyze before systemd reads it; any change to the
    # binary, the unit or the credentials restarts MinIO, which must then be ready.
    apply_when_changed(
        "Check the MinIO unit, restart MinIO, wait until ready",
        [BINARY, UNIT, ENV], f"{STATE}/server.applied",
        f"systemd-analyze verify {UNIT} && systemctl daemon-reload && systemctl enable minio.service "
        f"&& systemctl restart minio.service && "
        f"for i in $(seq 1 60); do curl -fsS -o /dev/null http://127.0.0.1:{data.minio_port}/minio/health/ready "
        f"&& break; sleep 1; done && curl -fsS -o /dev/null http://127.0.0.1:{data.minio_port}/minio/health/ready",
    )
    systemd.service(name="MinIO running", service="minio.service", running=True, enabled=True)
    converge(
        name="Buckets, access keys and policies from the registry",
        state_command=f"{SYNC} plan",
        apply_command=f"{SYNC} apply",
    )
