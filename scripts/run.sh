#!/usr/bin/env bash
# The main job on the embedded defaults: web + worker + clock, SQLite in var/, a local Redis.
# `exec`: `python -m worker run` takes this shell's place, so Ctrl-C and SIGTERM reach it directly; it
# stops its children in order (web and worker, then the clock, Redis last) and leaves none behind.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/python -m worker run "$@"
