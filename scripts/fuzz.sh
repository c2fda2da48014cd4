#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers (docs/fuzzing.md): builds the cargo-fuzz targets of
# fuzz/ on the stable toolchain (RUSTC_BOOTSTRAP=1) with overflow checks and debug assertions,
# runs each for a number of executions, one job at a time at nice 19, and prints one summary
# line per target. Installs cargo-fuzz when it is missing.
#
#   scripts/fuzz.sh [--runs N] [--seed] [--update] [TARGET...]
#
#   --runs N   executions per target (default 10000000)
#   --seed     also start from the raw seeds of fuzz/make_seeds.py (fuzz/seeds/, made if absent)
#   --update   afterwards, minimise what the run found into fuzz/corpus/<target>/ (cargo fuzz
#              cmin over edge coverage, -use_counters=0, which keeps the committed corpora
#              small); inputs named crash-* (kept regressions) stay in any case
#
# Environment: FUZZ_SANITIZER (none, the default, or address: the fuzzed code is safe Rust,
# and AddressSanitizer costs 3x the executions; switching rebuilds everything),
# FUZZ_TIMEOUT (seconds per input, default 10), FUZZ_LOG_DIR (default fuzz/target/logs).
# Exits non-zero when a target crashed; the input is in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=10000000
seed=0
update=0
targets=()
while [ $# -gt 0 ]; do
    case $1 in
        --runs) runs=$2; shift 2 ;;
        --seed) seed=1; shift ;;
        --update) update=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
all=(mpd sidx clear_lead pssh license cenc audio_object api_json)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

# Inputs larger than any real one of its kind only slow the search down.
max_len() {
    case $1 in
        mpd) echo 16384 ;;
        clear_lead) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
sanitizer=${FUZZ_SANITIZER:-none}
# GStreamer's initialisation (api_json makes tags) keeps 16 KiB to the end of the process: not
# a leak of ours, but LeakSanitizer's exit check would call it a crash.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
timeout=${FUZZ_TIMEOUT:-10}
logs=${FUZZ_LOG_DIR:-fuzz/target/logs}
mkdir -p "$logs"
logs=$(cd "$logs" && pwd)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if [ $seed = 1 ] && [ ! -d fuzz/seeds ]; then
    python3 fuzz/make_seeds.py --out fuzz/seeds
fi

cd fuzz
# -a: debug assertions and overflow checks in the optimised build.
for t in "${targets[@]}"; do
    nice -n 10 cargo fuzz build -a -s "$sanitizer" "$t" >"$logs/build.log" 2>&1 \
        || { cat "$logs/build.log" >&2; exit 1; }
done

failed=0
printf '%-13s %12s %9s %8s %8s %8s %7s %s\n' target executions exec/s wall_s cov ft corpus result
for t in "${targets[@]}"; do
    work=target/work/$t
    rm -rf "$work"
    mkdir -p "$work" "corpus/$t" "artifacts/$t"
    cp corpus/"$t"/* "$work"/ 2>/dev/null || true
    if [ $seed = 1 ] && [ -d "seeds/$t" ]; then cp seeds/"$t"/* "$work"/; fi
    log=$logs/$t.log
    start=$(date +%s)
    set +e
    nice -n 19 cargo fuzz run -a -s "$sanitizer" "$t" "$work" -- \
        -runs="$runs" -max_len="$(max_len "$t")" -timeout="$timeout" \
        -rss_limit_mb=1024 -malloc_limit_mb=256 -detect_leaks=0 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    wall=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
    if [ $rc = 0 ]; then
        result="no crash"
    else
        result="CRASH (exit $rc): $(grep -o 'artifacts/[^ ]*' "$log" | tail -n 1)"
        failed=1
    fi
    printf '%-13s %12s %9s %8s %8s %8s %7s %s\n' "$t" "${execs:-?}" "${rate:-?}" "$wall" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
    if [ $update = 1 ] && [ $rc = 0 ]; then
        keep=$(mktemp -d)
        cp corpus/"$t"/crash-* "$keep"/ 2>/dev/null || true
        nice -n 19 cargo fuzz cmin -a -s "$sanitizer" "$t" "$work" -- \
            -max_len="$(max_len "$t")" -use_counters=0 >"$logs/$t.cmin.log" 2>&1
        rm -rf "corpus/$t"
        mkdir -p "corpus/$t"
        cp "$work"/* "corpus/$t"/
        cp "$keep"/* "corpus/$t"/ 2>/dev/null || true
        rm -rf "$keep"
        echo "    corpus/$t: $(ls "corpus/$t" | wc -l) inputs, $(cat "corpus/$t"/* | wc -c) bytes"
    fi
done
exit $failed
