#!/bin/bash
# Managed by the platform deploy (services/pgbackrest): installed as codeb-restore-drill.
# codeb-restore-drill [--config FILE]: restore the latest backup (and all archived WAL after
# it) from the local repository into a scratch cluster, start it on port PORT (socket only,
# no archiving), check that every database is there, report the result and the time taken,
# publish them as metrics, and remove the scratch cluster.
# FILE (default /etc/codeb/pgbackrest/restore-drill.conf) sets SCRATCH, BIN (PostgreSQL's
# server binaries), PORT, MAX_CONNECTIONS, EXPECTED (array of databases), DRILL_CONF (the
# drill's pgbackrest.conf), STANZA, LOCK (shared with the backup jobs), TEXTFILE_DIR and
# PROM_WRITE (the textfile library).
set -uo pipefail
config=/etc/codeb/pgbackrest/restore-drill.conf
if [ "${1:-}" = --config ]; then config=${2:?usage: $0 [--config FILE]}; shift 2; fi
. "$config" || { echo "$0: cannot read $config" >&2; exit 2; }
. "$PROM_WRITE" || { echo "$0: cannot read $PROM_WRITE" >&2; exit 2; }
PGDATA=$SCRATCH/pgdata
exec 9>"$LOCK"
flock 9
start=$(date +%s.%N)
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
    [ -f "$PGDATA/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1
    rm -rf "$PGDATA" "$SCRATCH/run"
}
cleanup
install -d -o postgres -g postgres -m 700 "$PGDATA" "$SCRATCH/run"
result="failed"
detail=""
found=0
if as_pg pgbackrest "--config=$DRILL_CONF" "--stanza=$STANZA" --log-level-console=warn restore; then
    # Debian keeps the configuration outside the data directory: the scratch cluster gets its own.
    cat > "$PGDATA/postgresql.conf" <<CONF
listen_addresses = ''
port = $PORT
unix_socket_directories = '$SCRATCH/run'
max_connections = $MAX_CONNECTIONS
archive_mode = off
hot_standby = on
CONF
    echo "local all postgres peer" > "$PGDATA/pg_hba.conf"
    : > "$PGDATA/pg_ident.conf"
    chown postgres:postgres "$PGDATA"/postgresql.conf "$PGDATA"/pg_hba.conf "$PGDATA"/pg_ident.conf
    if as_pg "$BIN/pg_ctl" -D "$PGDATA" -l "$SCRATCH/postgresql.log" -w -t 900 start >/dev/null; then
        # Wait for the end of recovery (promotion) before the query.
        for _ in $(seq 1 600); do
            [ "$(as_pg psql -XAtq -h "$SCRATCH/run" -p "$PORT" -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] && break
            sleep 1
        done
        dbs=$(as_pg psql -XAtq -h "$SCRATCH/run" -p "$PORT" -d postgres \
              -c "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1" 2>&1)
        found=$(printf '%s\n' "$dbs" | grep -c . || true)
        missing=()
        for db in "${EXPECTED[@]}"; do printf '%s\n' "$dbs" | grep -qx "$db" || missing+=("$db"); done
        if [ "$(as_pg psql -XAtq -h "$SCRATCH/run" -p "$PORT" -d postgres -c 'SELECT pg_is_in_recovery()')" = f ] \
           && [ ${#missing[@]} -eq 0 ]; then
            result="ok"
            detail="$found databases, all ${#EXPECTED[@]} expected present"
        else
            detail="missing databases: ${missing[*]:-none}; recovery: $(as_pg psql -XAtq -h "$SCRATCH/run" -p "$PORT" -d postgres -c 'SELECT pg_is_in_recovery()' 2>&1)"
        fi
    else
        detail="the restored cluster did not start (see $SCRATCH/postgresql.log)"
        tail -20 "$SCRATCH/postgresql.log" >&2
    fi
else
    detail="pgbackrest restore failed"
fi
cleanup
end=$(date +%s.%N)
duration=$(printf '%.1f' "$(echo "$end - $start" | bc 2>/dev/null || python3 -c "print($end - $start)")")
success=0; [ "$result" = ok ] && success=1
prom_write codeb_restore_drill <<PROM
# HELP codeb_restore_drill_success 1 when the last restore drill restored, started and answered.
# TYPE codeb_restore_drill_success gauge
codeb_restore_drill_success $success
# HELP codeb_restore_drill_last_run_timestamp_seconds When the last drill finished.
# TYPE codeb_restore_drill_last_run_timestamp_seconds gauge
codeb_restore_drill_last_run_timestamp_seconds ${end%.*}
# HELP codeb_restore_drill_duration_seconds Restore, start and query of the last drill.
# TYPE codeb_restore_drill_duration_seconds gauge
codeb_restore_drill_duration_seconds $duration
# HELP codeb_restore_drill_databases Databases found in the restored cluster.
# TYPE codeb_restore_drill_databases gauge
codeb_restore_drill_databases $found
PROM
if [ $success = 1 ]; then
    prom_write codeb_restore_drill_success <<PROM
# HELP codeb_restore_drill_last_success_timestamp_seconds When a drill last succeeded.
# TYPE codeb_restore_drill_last_success_timestamp_seconds gauge
codeb_restore_drill_last_success_timestamp_seconds ${end%.*}
PROM
fi
echo "restore drill: $result in ${duration}s ($detail)"
[ $success = 1 ]
