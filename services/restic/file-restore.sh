#!/bin/bash
# Managed by the platform deploy (services/restic): installed as codeb-file-restore.
# codeb-file-restore [--config FILE] HOST PATH [SNAPSHOT] [TARGET]
#   Restore one file (or directory) of HOST's weekly file backup, from SNAPSHOT (default:
#   latest), under TARGET (default RESTORE_DIR/HOST), and print where it is.
#   Example: codeb-file-restore n3 /var/lib/garage/meta/snapshots
# FILE (default /etc/codeb/restic/file-restore.conf) sets RESTORE_DIR, REPO_ROOT (one
# repository per host below it) and PASSWORD_DIR (<host>.password).
set -euo pipefail
config=/etc/codeb/restic/file-restore.conf
if [ "${1:-}" = --config ]; then
    config=${2:?usage: codeb-file-restore [--config FILE] HOST PATH [SNAPSHOT] [TARGET]}; shift 2
fi
. "$config" || { echo "$0: cannot read $config" >&2; exit 2; }
host=${1:?usage: codeb-file-restore HOST PATH [SNAPSHOT] [TARGET]}
path=${2:?usage: codeb-file-restore HOST PATH [SNAPSHOT] [TARGET]}
snapshot=${3:-latest}
target=${4:-$RESTORE_DIR/$host}
repo=$REPO_ROOT/$host
[ -f "$repo/config" ] || { echo "no file backup repository for $host" >&2; exit 2; }
export RESTIC_PASSWORD_FILE=$PASSWORD_DIR/$host.password
install -d -m 700 "$target"
restic -r "$repo" --no-cache --no-lock restore "$snapshot" --host "$host" --include "$path" --target "$target" >&2
echo "$target$path"
