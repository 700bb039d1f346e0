#!/usr/bin/env bash
# The whole test suite: lint, unit tests (StubBroker, in-memory SQLite, respx) and integration tests
# (real redis-server and dramatiq worker processes, started and stopped by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
