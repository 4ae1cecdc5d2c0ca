#!/usr/bin/env bash
# Sets everything up, then runs every test (unit, in-memory pairs, integration
# on loopback, interop with real libiscsi / QEMU / libnbd clients, PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
