#!/bin/bash
# Managed by the platform deploy (services/restic): installed as codeb-file-backup.
# codeb-file-backup [--config FILE]: this host's weekly file backup with restic, to
# rest-server on the backup host (append-only: this host can add snapshots, never delete
# them), or, on the backup host itself, to its local repository.
# FILE (default /etc/codeb/backup/file-backup.conf) sets HOST, ENV_FILE (restic's settings
# and credentials, exported to restic), PATHS (array; those that exist are backed up),
# TEXTFILE_DIR and PROM_WRITE (the textfile library).
set -uo pipefail
config=/etc/codeb/backup/file-backup.conf
if [ "${1:-}" = --config ]; then config=${2:?usage: $0 [--config FILE]}; shift 2; fi
. "$config" || { echo "$0: cannot read $config" >&2; exit 2; }
. "$PROM_WRITE" || { echo "$0: cannot read $PROM_WRITE" >&2; exit 2; }
set -a
. "$ENV_FILE"
set +a
paths=()
for p in "${PATHS[@]}"; do [ -e "$p" ] && paths+=("$p"); done
start=$(date +%s)
restic backup --host "$HOST" --tag weekly --exclude-caches --one-file-system "${paths[@]}"
rc=$?
end=$(date +%s)
# restic: 0 ok, 3 some files unreadable (snapshot still written).
prom_write codeb_file_backup <<PROM
# HELP codeb_file_backup_last_exit_code Exit code of the last file backup (0 ok, 3 partial).
# TYPE codeb_file_backup_last_exit_code gauge
codeb_file_backup_last_exit_code $rc
# HELP codeb_file_backup_duration_seconds Duration of the last file backup.
# TYPE codeb_file_backup_duration_seconds gauge
codeb_file_backup_duration_seconds $((end - start))
PROM
if [ $rc = 0 ] || [ $rc = 3 ]; then
    prom_write codeb_file_backup_success <<PROM
# HELP codeb_file_backup_last_success_timestamp_seconds When a file backup last wrote a snapshot.
# TYPE codeb_file_backup_last_success_timestamp_seconds gauge
codeb_file_backup_last_success_timestamp_seconds $end
PROM
fi
exit $rc
