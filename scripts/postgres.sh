#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests on 127.0.0.1:$PG_PORT (default 55432) and prints
# its DATABASE_URL on stdout. Installs Debian's postgresql package first when it is missing (as root).
# Idempotent: a server already running from an earlier call is reused. `scripts/postgres.sh stop`
# stops it. Its data lives in /tmp (tests only: fsync off, trust auth on loopback).
set -euo pipefail

PG_PORT=${PG_PORT:-55432}
PG_DIR=${PG_DIR:-/tmp/stripe-worker-pg-$PG_PORT}
DB_NAME=worker_test

pg_bin() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$found" ] && echo "$found"
}

BIN=$(pg_bin || true)
if [ -z "$BIN" ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "postgres.sh: PostgreSQL is not installed; install Debian's postgresql package" >&2
        exit 1
    fi
    echo "postgres.sh: installing Debian's postgresql package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    BIN=$(pg_bin)
fi

# initdb and postgres refuse to run as root: run them as the package's postgres user.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if [ "${1:-}" = "stop" ]; then
    [ -f "$PG_DIR/data/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null
    exit 0
fi

if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    mkdir -p "$PG_DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$PG_DIR"
    if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
        as_owner "$BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    as_owner "$BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start -o \
        "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=200" >/dev/null
fi
if ! "$BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB_NAME'" \
        | grep -q 1; then
    "$BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$DB_NAME"
fi
echo "postgresql://postgres@127.0.0.1:$PG_PORT/$DB_NAME"
