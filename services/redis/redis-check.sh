#!/bin/sh
# codeb-redis-check [REDIS_CONF]: check a Redis configuration (and the ACL file it names)
# by starting a throwaway server on it, without TCP, persistence or the real data
# directory. A rejected file makes redis-server exit at once; one still running after
# 3 seconds was accepted. REDIS_CONF defaults to /etc/redis/redis.conf.
# Installed by the platform deploy (services/redis) as /usr/local/sbin/codeb-redis-check.
set -eu
conf=${1:-/etc/redis/redis.conf}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chown redis:redis "$tmp"
set +e
timeout 3 runuser -u redis -- redis-server "$conf" --port 0 --unixsocket "$tmp/check.sock" --dir "$tmp" \
    --appendonly no --save "" --supervised no --daemonize no --pidfile "$tmp/pid" --logfile "" \
    >"$tmp/out" 2>&1
rc=$?
set -e
if [ "$rc" -ne 124 ]; then
    echo "redis rejected $conf:" >&2
    grep -E "FATAL|Error|error|Bad directive|wrong" "$tmp/out" >&2 || cat "$tmp/out" >&2
    exit 1
fi
