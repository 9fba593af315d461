#!/bin/bash
# Managed by the platform deploy (services/restic): installed as codeb-file-prune.
# codeb-file-prune [--config FILE]: retention of every host's file backups, run here on the
# backup host (clients are append-only).
# FILE (default /etc/codeb/restic/file-prune.conf) sets HOSTS (array), REPO_ROOT (one
# repository per host below it), PASSWORD_DIR (<host>.password) and RETENTION (array of
# restic forget options, e.g. --keep-weekly 8).
set -uo pipefail
config=/etc/codeb/restic/file-prune.conf
if [ "${1:-}" = --config ]; then config=${2:?usage: $0 [--config FILE]}; shift 2; fi
. "$config" || { echo "$0: cannot read $config" >&2; exit 2; }
rc=0
for host in "${HOSTS[@]}"; do
    repo=$REPO_ROOT/$host
    [ -f "$repo/config" ] || continue
    owner=$(stat -c %U "$repo")
    # As the repository's owner, so rest-server can still read what prune rewrites.
    RESTIC_PASSWORD=$(cat "$PASSWORD_DIR/$host.password") \
        runuser -u "$owner" -- restic -r "$repo" --no-cache forget --host "$host" --prune \
        "${RETENTION[@]}" || rc=1
done
exit $rc
