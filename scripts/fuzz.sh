#!/usr/bin/env bash
# Runs one coverage-guided fuzz target (tests/fuzz/<TARGET>.py) under atheris for a while.
#
#   scripts/fuzz.sh TARGET [SECONDS] [libFuzzer flags...]    (TARGET "all": each in turn)
#   scripts/fuzz.sh list
#
# New interesting inputs go to $FUZZ_DIR/TARGET/corpus (default .fuzz/, not in git; the seeds
# in tests/fuzz/corpus/TARGET are read, never written); a crashing input is saved as
# $FUZZ_DIR/TARGET/crashes/crash-<sha1> and the run stops with its traceback. Reproduce one with
#   PYTHONPATH=tests:src .venv/bin/python -m fuzz replay TARGET FILE
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="tests:src${PYTHONPATH:+:$PYTHONPATH}"
targets=$("$PY" -c 'from fuzz import TARGETS; print(" ".join(TARGETS))')
target=${1:-}
seconds=${2:-300}
shift $(( $# > 2 ? 2 : $# ))

if [ -z "$target" ] || [ "$target" = "list" ]; then
    echo "targets: $targets"
    exit 0
fi
if [ "$target" = "all" ]; then
    for t in $targets; do "$0" "$t" "$seconds" "$@"; done
    exit 0
fi
case " $targets " in
    *" $target "*) ;;
    *) echo "fuzz: unknown target $target (known: $targets)" >&2; exit 2 ;;
esac
if ! "$PY" -c 'import atheris' 2>/dev/null; then
    echo "fuzz: atheris is not installed in $PY (pip install -e '.[test]')" >&2
    exit 2
fi

work=${FUZZ_DIR:-.fuzz}/$target
mkdir -p "$work/corpus" "$work/crashes"
echo "fuzz: $target for ${seconds}s (corpus $work/corpus, crashes $work/crashes)"
exec "$PY" -m fuzz "$target" "$work/corpus" "tests/fuzz/corpus/$target" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$work/crashes/" -print_final_stats=1 "$@"
