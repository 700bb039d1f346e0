#!/usr/bin/env bash
# The main job on the embedded defaults: web + worker + clock, SQLite in var/, a local Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/python -m worker run "$@"
