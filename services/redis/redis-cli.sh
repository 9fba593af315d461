#!/bin/sh
# codeb-redis-cli [--config FILE] <redis-cli arguments>: redis-cli as the admin user, the
# password read from a root-only file (REDISCLI_AUTH), never from the command line.
# FILE (default /etc/redis/codeb-cli.conf) is sourced: KEY=value lines
#   env_file  the root-only file that sets REDISCLI_AUTH
#   user      the ACL user          port  the port on 127.0.0.1
# Installed by the platform deploy (services/redis) as /usr/local/sbin/codeb-redis-cli.
set -eu
config=/etc/redis/codeb-cli.conf
if [ "${1:-}" = --config ]; then
    [ "$#" -ge 2 ] || { echo "usage: $0 [--config FILE] <redis-cli arguments>" >&2; exit 2; }
    config=$2
    shift 2
fi
case $config in
    */*) ;;
    *) config=./$config ;;  # `.` would search PATH for a bare name
esac
. "$config"
: "${env_file:?missing in $config}" "${user:?missing in $config}" "${port:?missing in $config}"
set -a
. "$env_file"
set +a
exec redis-cli --no-auth-warning --user "$user" -h 127.0.0.1 -p "$port" "$@"
