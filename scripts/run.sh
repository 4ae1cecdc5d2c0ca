#!/usr/bin/env bash
# Sets everything up, then runs the main job: the all-in-one difs cluster on
# loopback (`difs up`). Extra arguments go to `difs up`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/difs up "$@"
