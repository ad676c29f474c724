#!/usr/bin/env bash
# Installs the named system packages (default: redis-server redis-sentinel nginx, what the local runtime and the
# tests run; redis-sentinel for REDIS_TOPOLOGY=sentinel; `make system-deps` adds prometheus, whose promtool the
# monitoring tests run; `make bench` adds wrk) from Debian's packages when they are missing; says what to do when
# it can't.
# The Docker runtime needs none of them.
set -euo pipefail
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(redis-server redis-sentinel nginx)
missing=()
for name in "${wanted[@]}"; do
    command -v "$name" >/dev/null 2>&1 || [ -x "/usr/bin/$name" ] || [ -x "/usr/sbin/$name" ] || missing+=("$name")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian's packages start their own services where an init system runs; ours start their own copies.
    service nginx stop >/dev/null 2>&1 || true
    service redis-server stop >/dev/null 2>&1 || true
    service redis-sentinel stop >/dev/null 2>&1 || true
    service prometheus stop >/dev/null 2>&1 || true
else
    echo "system-deps: missing ${missing[*]}: install them (Debian/Ubuntu: sudo apt-get install -y ${missing[*]})" >&2
    exit 1
fi
