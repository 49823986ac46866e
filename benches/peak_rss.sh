#!/usr/bin/env bash
# Peak resident memory while generating up to a given context length, against the budget
# "model file size + KV cache at that context + 64 MiB" (issue: faster than the reference).
#
# Usage: benches/peak_rss.sh [-c CTX] [-t THREADS] MODEL
#   -c 2048, -t 2 by default.
#
# The prompt (about half the context, random common English words) is processed as one
# batch, then `openweight run --ignore-eos` samples tokens until the context is full, under
# `/usr/bin/time -v`. The KV cache size comes from `openweight bench --json`
# (`kv_bytes_per_token`). Prints one line of numbers and exits 1 if the peak is over budget.
# Takes about a minute for the 0.5B model on 2 quiet cores.
set -euo pipefail

ctx=2048 threads=2
while [ $# -gt 1 ]; do
  case "$1" in
    -c) ctx="$2"; shift 2 ;;
    -t) threads="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -eq 1 ] || { echo "usage: benches/peak_rss.sh [-c CTX] [-t THREADS] MODEL" >&2; exit 2; }
model="$1"
[ -x /usr/bin/time ] || { echo "peak_rss.sh needs GNU time (apt-get install time)" >&2; exit 2; }

root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin openweight
bin="$root/target/release/openweight"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 - "$ctx" > "$work/prompt.txt" <<'EOF'
import random, sys
words = ("the of and to in is was for on that with as by at from his her an which or be are "
         "this had not but were have they one all their there been has more when who will "
         "would no if out so said what up its about into than them can only other new some "
         "could time these two may then do first any my now such like our over man me even "
         "most made after also did many before must through back years where much your way "
         "well down should because each just those people").split()
random.seed(1)
print(" ".join(random.choice(words) for _ in range(int(sys.argv[1]) // 2 - 8)))
EOF

n_prompt=$("$bin" tokenize -m "$model" -f "$work/prompt.txt" |
  python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
n_gen=$((ctx - n_prompt))
[ "$n_gen" -gt 0 ] || { echo "prompt of $n_prompt tokens does not fit $ctx" >&2; exit 2; }
kv_per_token=$("$bin" bench -m "$model" -p 0 -n 1 -r 1 -t "$threads" --json 2>/dev/null |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["kv_bytes_per_token"])')

/usr/bin/time -v "$bin" run -m "$model" -f "$work/prompt.txt" -n "$n_gen" --ignore-eos \
  --temp 0.7 --seed 3 -t "$threads" > /dev/null 2> "$work/time.txt" ||
  { cat "$work/time.txt" >&2; exit 1; }

peak_kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
file_bytes=$(stat -c %s "$model")
python3 - "$peak_kib" "$file_bytes" "$kv_per_token" "$ctx" "$n_prompt" "$n_gen" <<'EOF'
import sys
peak_kib, file_bytes, kv_per_token, ctx, n_prompt, n_gen = map(int, sys.argv[1:])
mib = 1 << 20
peak = peak_kib * 1024
kv = kv_per_token * ctx
budget = file_bytes + kv + 64 * mib
print(f"context {ctx} ({n_prompt} prompt + {n_gen} generated): peak RSS {peak / mib:.1f} MiB; "
      f"budget {budget / mib:.1f} MiB = file {file_bytes / mib:.1f} + KV {kv / mib:.1f} + 64 "
      f"-> {'within' if peak <= budget else 'OVER'} budget ({peak / budget:.2f} of it)")
sys.exit(0 if peak <= budget else 1)
EOF
