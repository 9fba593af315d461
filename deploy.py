"""The whole converge: `pyinfra inventory/<env>.py deploy.py`.

Every host gets the common baseline; then the service roles run by group in the
order storage -> backup -> streaming -> app, so that what a later group needs
(databases, Redis users, the backup repository, the realtime endpoint) exists
by the time it is configured.
"""

from pyinfra import host

from roles.app import app
from roles.backup import backup
from roles.common import common
from roles.storage import storage
from roles.streaming import remove_legacy_centrifugo, streaming

if host.data.get("render_only"):
    raise SystemExit("error: CODEB_RENDER_ONLY is set: this inventory has placeholder secrets; unset it to apply")

common()
remove_legacy_centrifugo()  # app hosts only: the incident's second Centrifugo goes

# One call per line, in this order: pyinfra orders operations by the line that
# defines them, so every storage operation runs before any backup operation,
# and so on, across all hosts.
if "storage" in host.groups:
    storage()
backup()  # every host: weekly file backup; storage: WAL archiving; backup host: repository, monitoring
if "streaming" in host.groups:
    streaming()
if "app" in host.groups:
    app()
