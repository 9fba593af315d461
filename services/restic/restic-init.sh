#!/bin/bash
# Managed by the platform deploy (services/restic): installed as codeb-restic-init.
# codeb-restic-init [--config FILE]: create the file backup repository of every host that has
# none yet (clients cannot: rest-server is append-only for them). Remote hosts' repositories
# belong to rest-server's user; this host's own is written locally by root.
# FILE (default /etc/codeb/restic/restic-init.conf) sets HOSTS (array), SELF_HOST (this
# host), REPO_ROOT, PASSWORD_DIR (<host>.password) and SERVER_USER (rest-server's user).
set -euo pipefail
config=/etc/codeb/restic/restic-init.conf
if [ "${1:-}" = --config ]; then config=${2:?usage: $0 [--config FILE]}; shift 2; fi
. "$config" || { echo "$0: cannot read $config" >&2; exit 2; }
for host in "${HOSTS[@]}"; do
    repo=$REPO_ROOT/$host
    [ -f "$repo/config" ] && continue
    if [ "$host" = "$SELF_HOST" ]; then user=root; else user=$SERVER_USER; fi
    install -d -o "$user" -g "$user" -m 750 "$repo"
    RESTIC_PASSWORD=$(cat "$PASSWORD_DIR/$host.password") runuser -u "$user" -- \
        restic -r "$repo" --no-cache init >/dev/null
    echo "initialised $repo"
done
