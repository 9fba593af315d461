"""The whole converge: `pyinfra inventory/<env>.py deploy.py`.

Which services each host group gets, and in what order. Every host gets the baseline;
then the groups follow storage -> backup -> streaming -> app (-> storage again, for what
must wait until the apps have moved: revoking old S3 keys, removing MinIO), so that what
a later group needs (databases, Redis users, the backup repository, the realtime
endpoint) exists by the time it is configured. Each service is one folder of services/.
"""

from pyinfra import host

from codeb.barrier import barrier
from services import app, baseline, centrifugo, garage, pgbackrest, postgresql, powerdns, prometheus, redis, restic

if host.data.get("render_only"):
    raise SystemExit("error: CODEB_RENDER_ONLY is set: this inventory has placeholder secrets; unset it to apply")

groups = host.groups

# A storage host that still runs MinIO moves to Garage in this apply; MinIO's port stays
# open until the apps have switched (docs/migrate-minio-to-garage.md).
baseline.common(minio_migration="storage" in groups and garage.minio_present())
centrifugo.remove_legacy_centrifugo()  # app hosts only: the incident's second Centrifugo goes

# Cross-host order: each barrier() is one operation shared by all hosts, so every
# operation above it has finished on every host before any below it starts.
if "storage" in groups:
    postgresql.postgresql()
    redis.redis()
    garage.garage()
    powerdns.powerdns()     # after PostgreSQL: its backend database lives there
    pgbackrest.archiving()  # WAL archiving and the pgBackRest server on the database host
barrier("storage ready")
if "backup" in groups:
    pgbackrest.repository()  # stanza-create/check reach the database host's pgBackRest server
    restic.server()
    prometheus.prometheus()
barrier("backup repository ready")
restic.client()  # every host pushes its weekly file backup to the repository host
if "streaming" in groups:
    centrifugo.streaming()
barrier("streaming ready")
if "app" in groups:
    app.app()
barrier("apps ready")
if "storage" in groups:
    garage.revoke_unwanted_keys()  # keys of projects that left, or rotated: only now the apps have new ones
    if garage.finish_minio_migration():
        baseline.close_minio_port()
