#!/usr/bin/env bash
# Fuzz smoke run: builds every cargo-fuzz target and runs each for SECONDS (default 60),
# failing on any crash, timeout or out-of-memory. Called by .ci/run.
#
#   fuzz/smoke.sh [SECONDS]
#
# Needs a nightly toolchain (cargo-fuzz builds with -Zsanitizer=address); without one it prints
# a loud SKIP and exits 0. Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) if missing.
# Corpora are seeded from fixtures/ by fuzz/seed.py (git-ignored, kept between runs).
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

skip() {
    echo
    echo "************************************************************************"
    echo "*** FUZZ SMOKE SKIPPED: $1"
    echo "************************************************************************"
    echo
    exit 0
}

if ! cargo +nightly --version >/dev/null 2>&1; then
    skip "no nightly toolchain (install one with: rustup toolchain install nightly)"
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if command -v python3 >/dev/null 2>&1; then
    python3 fuzz/seed.py
else
    echo "*** fuzz/smoke.sh: python3 not found: running WITHOUT seed corpora ***"
fi

TARGETS=(gguf_reader tokenizer chat_template model_load)
# Per-target input size caps (model_load's input is a patch list, not a file).
declare -A MAX_LEN=([gguf_reader]=20000 [tokenizer]=4096 [chat_template]=4096 [model_load]=512)

cargo +nightly fuzz build

failed=()
for t in "${TARGETS[@]}"; do
    echo "=== fuzz smoke: $t for ${SECONDS_PER_TARGET}s"
    log="fuzz/artifacts/$t-smoke.log"
    mkdir -p "fuzz/artifacts/$t" "fuzz/corpus/$t"
    if cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len="${MAX_LEN[$t]}" -timeout=20 \
        -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        grep -E "^#[0-9]+ +DONE|^Done" "$log" | tail -n 2 || true
    else
        echo "*** fuzz smoke: $t FAILED (log: $log); last lines:"
        tail -n 40 "$log"
        failed+=("$t")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz smoke: crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/)"
    exit 1
fi
echo "fuzz smoke: all ${#TARGETS[@]} targets ran ${SECONDS_PER_TARGET}s without a crash"
