#!/usr/bin/env bash
# Cross-builds the kernels crate for aarch64 and runs all its tests under qemu twice:
#   1. `-cpu max`        : has dotprod, so dispatch::best() must be `neon-dotprod`;
#   2. `-cpu cortex-a53` : Armv8.0 without dotprod, so best() must be `neon` (vmull path).
# Exits non-zero if any test fails or the wrong kernel set was picked.
#
# Uses Debian's Rust toolchain (rustup has no aarch64 std here) and installs it when missing:
#   rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu qemu-user-static
#
# Environment:
#   CARGO_TARGET_DIR  build directory (default: <workspace>/target)
#   PROPTEST_CASES    cases per property test (default here: 32; proptest is slow under qemu)
#   QEMU_CPUS         CPUs to run on (default: "max cortex-a53")
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/.." && pwd)"
target=aarch64-unknown-linux-gnu

# --- 1. Toolchain (idempotent; apt-get update only when something is missing) -------------
std_dir() { echo "$(/usr/bin/rustc --print sysroot 2>/dev/null)/lib/rustlib/$target/lib"; }
have_toolchain() {
    [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] && [ -x /usr/bin/rustdoc ] \
        && command -v aarch64-linux-gnu-gcc >/dev/null \
        && command -v qemu-aarch64-static >/dev/null \
        && [ -d "$(std_dir)" ]
}
if ! have_toolchain; then
    echo "== installing the aarch64 cross toolchain (Debian packages)"
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        $sudo dpkg --add-architecture arm64
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu qemu-user-static \
        >/dev/null
    have_toolchain || { echo "error: toolchain still incomplete after install" >&2; exit 1; }
fi

# --- 2. Build once ------------------------------------------------------------------------
export RUSTC=/usr/bin/rustc
export RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$workspace/target}"
export PROPTEST_CASES="${PROPTEST_CASES:-32}"
# Never let OPENWEIGHT_KERNELS=scalar from the caller's shell hide the NEON kernels.
unset OPENWEIGHT_KERNELS
cargo=(/usr/bin/cargo test --locked -p openweight-kernels --target "$target" --release)

cd "$workspace"
echo "== building kernels tests for $target (target dir $CARGO_TARGET_DIR)"
"${cargo[@]}" --no-run --quiet

# --- 3. Run under qemu, once per CPU --------------------------------------------------------
expected_set() {
    case "$1" in
        max) echo neon-dotprod ;;
        cortex-a53) echo neon ;;
        *) echo "" ;; # unknown CPU model: report the set, do not check it
    esac
}

status=0
for cpu in ${QEMU_CPUS:-max cortex-a53}; do
    # Do not add `-L /usr/aarch64-linux-gnu`: thread creation hangs with that libc; the
    # arm64 libc from the std package (/lib/ld-linux-aarch64.so.1) works, rayon included.
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -cpu $cpu"
    echo "== qemu -cpu $cpu: kernels tests (PROPTEST_CASES=$PROPTEST_CASES)"
    start=$SECONDS
    if ! "${cargo[@]}" --quiet; then
        echo "FAILED: kernels tests under qemu -cpu $cpu" >&2
        status=1
    fi
    set_line="$("${cargo[@]}" --quiet --test simd_matches_scalar \
        best_is_the_simd_set_when_the_cpu_supports_it -- --nocapture 2>&1 \
        | grep -o 'dispatch::best() = [a-z0-9-]*' | head -n1 || true)"
    name="${set_line#dispatch::best() = }"
    echo "== qemu -cpu $cpu: kernel set ran: ${name:-<unknown>} ($((SECONDS - start)) s)"
    want="$(expected_set "$cpu")"
    if [ -n "$want" ] && [ "$name" != "$want" ]; then
        echo "FAILED: expected kernel set '$want' under -cpu $cpu, got '${name:-<none>}'" >&2
        status=1
    fi
done

if [ "$status" = 0 ]; then
    echo "== aarch64: all kernels tests passed on every CPU"
fi
exit "$status"
