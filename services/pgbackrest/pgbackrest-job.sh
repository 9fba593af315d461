#!/bin/bash
# Managed by the platform deploy (services/pgbackrest): installed as codeb-pgbackrest-job.
# codeb-pgbackrest-job [--config FILE] full|incr|diff|verify: one pgBackRest job on the
# repository host, serialised with the other jobs; pgBackRest expires old backups
# (retention in pgbackrest.conf) after each backup. Results go to the node-exporter
# textfile collector.
# FILE (default /etc/codeb/pgbackrest/job.conf) sets STANZA, LOCK (shared with the restore
# drill), TEXTFILE_DIR, PROM_WRITE (the textfile library), METRICS and METRICS_CONFIG (the
# backup metrics program, run after the job).
set -uo pipefail
config=/etc/codeb/pgbackrest/job.conf
if [ "${1:-}" = --config ]; then config=${2:?usage: $0 [--config FILE] full|incr|diff|verify}; shift 2; fi
. "$config" || { echo "$0: cannot read $config" >&2; exit 2; }
. "$PROM_WRITE" || { echo "$0: cannot read $PROM_WRITE" >&2; exit 2; }
job=${1:-}
case "$job" in
    full|incr|diff) args=(--type="$job" backup) ;;
    verify) args=(verify) ;;
    *) echo "usage: $0 [--config FILE] full|incr|diff|verify" >&2; exit 2 ;;
esac
exec 9>"$LOCK"
flock 9
start=$(date +%s)
runuser -u postgres -- pgbackrest "--stanza=$STANZA" "${args[@]}"
rc=$?
end=$(date +%s)
prom_write "codeb_pgbackrest_job_$job" <<PROM
# HELP codeb_pgbackrest_job_last_run_timestamp_seconds When the job last finished.
# TYPE codeb_pgbackrest_job_last_run_timestamp_seconds gauge
codeb_pgbackrest_job_last_run_timestamp_seconds{job="$job"} $end
# HELP codeb_pgbackrest_job_last_exit_code Exit code of the job's last run (0: success).
# TYPE codeb_pgbackrest_job_last_exit_code gauge
codeb_pgbackrest_job_last_exit_code{job="$job"} $rc
# HELP codeb_pgbackrest_job_duration_seconds Duration of the job's last run.
# TYPE codeb_pgbackrest_job_duration_seconds gauge
codeb_pgbackrest_job_duration_seconds{job="$job"} $((end - start))
PROM
if [ "$rc" = 0 ]; then
    prom_write "codeb_pgbackrest_job_${job}_success" <<PROM
# HELP codeb_pgbackrest_job_last_success_timestamp_seconds When the job last succeeded.
# TYPE codeb_pgbackrest_job_last_success_timestamp_seconds gauge
codeb_pgbackrest_job_last_success_timestamp_seconds{job="$job"} $end
PROM
fi
"$METRICS" --config "$METRICS_CONFIG" --once || true
exit "$rc"
