#!/usr/bin/env bash
# The whole test suite, twice: once on SQLite (the embedded default) and once on PostgreSQL.
# Lint first; then unit tests (StubBroker, respx) and integration tests (real redis-server, receiver
# and dramatiq worker processes, started and stopped by the tests). PostgreSQL is installed if needed
# and started by scripts/postgres.sh on 127.0.0.1, and stopped again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
./scripts/browser.sh
.venv/bin/ruff check .

echo "=== test suite on SQLite ==="
.venv/bin/python -m pytest "$@"

echo "=== test suite on PostgreSQL ==="
database_url=$(./scripts/postgres.sh)
trap './scripts/postgres.sh stop' EXIT
TEST_DATABASE_URL="$database_url" .venv/bin/python -m pytest "$@"
