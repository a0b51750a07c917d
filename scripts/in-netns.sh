#!/usr/bin/env bash
# Run a command in a private network namespace where only loopback exists and is up, so tests
# and benchmarks can only talk to 127.0.0.1 / ::1 (and Ray binds loopback).
set -euo pipefail
if [ "${NSAI_IN_NETNS:-}" = "1" ]; then
    exec "$@"
fi
export NSAI_IN_NETNS=1
IP=$(command -v ip || echo /usr/sbin/ip)
if [ "$(id -u)" -eq 0 ]; then
    exec unshare --net -- sh -c "$IP link set lo up && exec \"\$@\"" sh "$@"
fi
exec unshare --net --map-root-user -- sh -c "$IP link set lo up && exec \"\$@\"" sh "$@"
