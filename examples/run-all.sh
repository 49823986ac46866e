#!/usr/bin/env bash
# Runs every example (optionally on the model file given as $1); fails if any example fails
# or prints nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
for name in generate chat embed shared_model; do
    echo "== example $name"
    out=$(cargo run --release --quiet --example "$name" -- "$@")
    printf '%s\n' "$out"
    if [ -z "$(printf '%s' "$out" | tr -d '[:space:]')" ]; then
        echo "example $name printed nothing" >&2
        exit 1
    fi
done
echo "all examples ran"
