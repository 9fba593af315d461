#!/bin/bash
# Managed by the platform deploy (services/pgbackrest): installed as codeb-pitr.
# codeb-pitr [--config FILE] '<timestamp with zone>': point-in-time restore of this host's
# PostgreSQL cluster from the pgBackRest repository. Run by `make restore` (which asks first).
#  1. archive what is committed so far (pgbackrest check: WAL switch, wait for the archive);
#  2. stop the services that use the cluster (DEPENDENTS), then PostgreSQL;
#  3. restore in place (--delta) to the target time, promote at the target;
#  4. start PostgreSQL, wait for the end of recovery, start the dependents again;
#  5. check that every expected database is there.
# Apps on other hosts reconnect by themselves (their pools retry).
# FILE (default /etc/codeb/pgbackrest/pitr.conf) sets SERVICE (PostgreSQL's unit), DEPENDENTS
# and EXPECTED (arrays: units stopped around the restore, databases it must bring back), STANZA.
set -euo pipefail
config=/etc/codeb/pgbackrest/pitr.conf
if [ "${1:-}" = --config ]; then config=${2:?usage: codeb-pitr [--config FILE] '<timestamp with zone>'}; shift 2; fi
. "$config" || { echo "$0: cannot read $config" >&2; exit 2; }
target=${1:?usage: codeb-pitr '<timestamp with zone>'}
as_pg() { runuser -u postgres -- "$@"; }
log() { echo "[restore] $*"; }
# The target must parse as a timestamp with a zone.
as_pg psql -XAtq -d postgres -c "SELECT '$(printf '%s' "$target" | sed "s/'/''/g")'::timestamptz" >/dev/null 2>&1 \
    || { log "target '$target' is not a timestamp PostgreSQL understands (or PostgreSQL is down); continuing" >&2; }
if systemctl is-active -q "$SERVICE"; then
    log "archiving the current WAL (pgbackrest check)"
    as_pg pgbackrest "--stanza=$STANZA" check || log "check failed: WAL after the last archived segment may be missing"
fi
for s in "${DEPENDENTS[@]}"; do
    if systemctl is-active -q "$s"; then log "stopping $s"; systemctl stop "$s"; fi
done
log "stopping $SERVICE"
systemctl stop "$SERVICE"
log "restoring to $target"
start=$(date +%s)
as_pg pgbackrest "--stanza=$STANZA" --delta --type=time "--target=$target" --target-action=promote \
    --log-level-console=warn restore
log "starting $SERVICE"
systemctl start "$SERVICE"
for _ in $(seq 1 900); do
    [ "$(as_pg psql -XAtq -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] && break
    sleep 1
done
[ "$(as_pg psql -XAtq -d postgres -c 'SELECT pg_is_in_recovery()')" = f ] || { log "still in recovery" >&2; exit 1; }
for s in "${DEPENDENTS[@]}"; do log "starting $s"; systemctl start "$s"; done
dbs=$(as_pg psql -XAtq -d postgres -c "SELECT datname FROM pg_database")
missing=()
for db in "${EXPECTED[@]}"; do printf '%s\n' "$dbs" | grep -qx "$db" || missing+=("$db"); done
if [ ${#missing[@]} -gt 0 ]; then
    log "missing databases after the restore: ${missing[*]} (re-apply the storage role to recreate them)" >&2
    exit 1
fi
log "done in $(( $(date +%s) - start ))s: timeline $(as_pg psql -XAtq -d postgres -c 'SELECT timeline_id FROM pg_control_checkpoint()'), ${#EXPECTED[@]} expected databases present"
