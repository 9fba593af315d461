#!/bin/sh
# codeb-pg-reload CONFIG: check a PostgreSQL cluster's configuration files as PostgreSQL
# itself reads them, then reload; restart only if a changed setting needs it
# (pending_restart). Installed by the platform deploy (services/postgresql) as
# /usr/local/sbin/codeb-pg-reload.
#  - `postgres -C` parses postgresql.conf and conf.d and validates every value;
#  - pg_file_settings / pg_hba_file_rules re-read the files at query time
#    ("setting could not be applied" only means the setting waits for a restart).
# CONFIG is sourced: KEY=value lines naming the cluster's
#   service  its systemd unit (postgresql@17-main)   bindir   the server's binaries
#   datadir  its data directory                       confdir  where postgresql.conf is
set -eu
if [ "$#" -ne 1 ]; then
    echo "usage: $0 CONFIG  (KEY=value lines: service, bindir, datadir, confdir)" >&2
    exit 2
fi
case $1 in
    */*) config=$1 ;;
    *) config=./$1 ;;  # `.` would search PATH for a bare name
esac
. "$config"
: "${service:?missing in $1}" "${bindir:?missing in $1}" "${datadir:?missing in $1}" "${confdir:?missing in $1}"
runuser -u postgres -- "$bindir/postgres" -D "$datadir" -c config_file="$confdir/postgresql.conf" \
    -C listen_addresses >/dev/null
q() { runuser -u postgres -- psql -XAtq -d postgres -c "$1"; }
errors=$(q "SELECT sourcefile || ':' || sourceline || ': ' || error FROM pg_file_settings
             WHERE error IS NOT NULL AND error <> 'setting could not be applied'
            UNION ALL
            SELECT file_name || ':' || line_number || ': ' || error FROM pg_hba_file_rules WHERE error IS NOT NULL")
if [ -n "$errors" ]; then
    echo "PostgreSQL configuration rejected, not reloaded:" >&2
    echo "$errors" >&2
    exit 1
fi
q "SELECT pg_reload_conf()" >/dev/null
sleep 1
if [ "$(q "SELECT count(*) FROM pg_settings WHERE pending_restart")" != 0 ]; then
    echo "restarting $service: $(q "SELECT string_agg(name, ', ') FROM pg_settings WHERE pending_restart")"
    systemctl restart "$service"
fi
runuser -u postgres -- pg_isready -q -t 30
