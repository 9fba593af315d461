"""The whole converge: `pyinfra inventory/<env>.py deploy.py`.

Every host gets the common baseline; then the service roles run by group in the
order storage -> backup -> streaming -> app (-> storage again, for what must wait
until the apps have moved: revoking old S3 keys, removing MinIO), so that what a later group needs
(databases, Redis users, the backup repository, the realtime endpoint) exists
by the time it is configured.
"""

from pyinfra import host

from roles.app import app
from roles.backup import archiving, file_backups, monitoring, repository
from roles.barrier import barrier
from roles.common import common
from roles.storage import storage
from roles.storage.garage import finish_minio_migration, minio_present, revoke_unwanted_keys
from roles.streaming import remove_legacy_centrifugo, streaming

if host.data.get("render_only"):
    raise SystemExit("error: CODEB_RENDER_ONLY is set: this inventory has placeholder secrets; unset it to apply")

# A storage host that still runs MinIO moves to Garage in this apply; MinIO's port stays
# open until the apps have switched (docs/migrate-minio-to-garage.md).
common(minio_migration="storage" in host.groups and minio_present())
remove_legacy_centrifugo()  # app hosts only: the incident's second Centrifugo goes

# Cross-host order: each barrier() is one operation shared by all hosts, so every
# operation above it has finished on every host before any below it starts.
if "storage" in host.groups:
    storage()
    archiving()  # WAL archiving and the pgBackRest server on the database host
barrier("storage ready")
if "backup" in host.groups:
    repository()  # stanza-create/check reach the database host's pgBackRest server
    monitoring()
barrier("backup repository ready")
file_backups()  # every host pushes its weekly file backup to the repository host
if "streaming" in host.groups:
    streaming()
barrier("streaming ready")
if "app" in host.groups:
    app()
barrier("apps ready")
if "storage" in host.groups:
    revoke_unwanted_keys()  # keys of projects that left, or rotated: only now the apps have new ones
    finish_minio_migration()
