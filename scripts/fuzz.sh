#!/usr/bin/env bash
# Coverage-guided fuzzing (atheris/libFuzzer) of the parsers that read hostile input: the tar
# codec, the file helper's codecs and the login grammar. Not part of CI: the hypothesis property
# tests in tests/unit/test_fuzz_*.py cover the same properties there.
#
#   ./scripts/fuzz.sh                 # every harness, 60 s each
#   ./scripts/fuzz.sh 300 tar shell   # 300 s each, only these harnesses
#
# A venv of its own (.fuzz-venv, atheris only); corpora kept in .fuzz-corpus/NAME; a crash is
# written to .fuzz-corpus/crash-NAME-* and ends the run with a non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-60}"
shift || true
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(tar shell routing)
PYTHON="${PYTHON:-python3}"
if [ ! -x .fuzz-venv/bin/python ] || ! .fuzz-venv/bin/python -c 'import atheris' 2>/dev/null; then
    "$PYTHON" -m venv .fuzz-venv
    .fuzz-venv/bin/pip install -q atheris || { echo "fuzz.sh: cannot install atheris" >&2; exit 1; }
fi
rc=0
for name in "${NAMES[@]}"; do
    harness="fuzz/fuzz_${name}.py"
    [ -f "$harness" ] || { echo "fuzz.sh: no harness $harness" >&2; exit 2; }
    corpus=".fuzz-corpus/$name"
    mkdir -p "$corpus"
    echo "==> $name: ${SECONDS_EACH}s"
    if ! (cd fuzz && ../.fuzz-venv/bin/python "fuzz_${name}.py" "../$corpus" \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="../.fuzz-corpus/crash-${name}-" -print_final_stats=1 2>&1 |
        grep -v '^WARNING' | grep -E '^(stat::|==[0-9]+==|.*(Error|Exception|crash))'); then
        :
    fi
    if ls ".fuzz-corpus/crash-${name}-"* >/dev/null 2>&1; then
        echo "fuzz.sh: $name found a crash: $(ls .fuzz-corpus/crash-"${name}"-*)" >&2
        rc=1
    fi
done
exit $rc
