#!/usr/bin/env bash
# Compares openweight's speed with the reference runtime's (llama.cpp's llama-bench) on the
# same models, same thread count, same test sizes, and prints two markdown tables.
#
# Usage: benches/compare.sh [-t THREADS] [-p N_PROMPT] [-n N_GEN] [-r REPS] [--rounds K] MODEL...
#   -t 2, -p 512, -n 128, -r 3 and --rounds 2 by default.
#
# For each model the two programs run alternately (ours, reference, ours, reference, ...),
# K rounds each, so that slow drift of the machine (other load, heat) hits both alike. Every
# run is one full llama-bench style measurement (warm-up + R repetitions); the first table
# shows, per program, the mean over its rounds of the per-run mean tokens/s, and the ratio
# ours / reference (above 1: we are faster).
#
# Our runs also pass `--bandwidth`: after its tests, each openweight run measures the memory
# read bandwidth with the same threads (sum of a 1 GiB buffer, best of 3). A second table
# shows, per model, the weights read per generated token, our decode weight traffic
# (tg t/s x weight bytes), the probe and the fraction traffic / probe: means over the
# rounds, the fraction the mean of each run's own fraction (probe from the same run).
#
# The reference is built once by ../shared/tools/reference.sh (cached). Set LLAMA_BENCH to
# the path of a llama-bench executable to use that one instead.
set -euo pipefail

threads=2 n_prompt=512 n_gen=128 reps=3 rounds=2
models=()
while [ $# -gt 0 ]; do
  case "$1" in
    -t) threads="$2"; shift 2 ;;
    -p) n_prompt="$2"; shift 2 ;;
    -n) n_gen="$2"; shift 2 ;;
    -r) reps="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
if [ ${#models[@]} -eq 0 ]; then
  echo "usage: benches/compare.sh [-t T] [-p P] [-n N] [-r R] [--rounds K] MODEL..." >&2
  exit 2
fi
for v in "$threads" "$n_prompt" "$n_gen" "$reps" "$rounds"; do
  case "$v" in ''|*[!0-9]*) echo "compare.sh: '$v' is not a non-negative integer" >&2; exit 2 ;; esac
done
if [ "$rounds" -lt 1 ] || [ "$reps" -lt 1 ]; then
  echo "compare.sh: --rounds and -r must be at least 1" >&2; exit 2
fi
for m in "${models[@]}"; do
  [ -f "$m" ] || { echo "compare.sh: no such model file: $m" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "compare.sh: python3 is needed to read JSON" >&2; exit 2; }

root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
if [ -n "${LLAMA_BENCH:-}" ]; then
  llama_bench="$LLAMA_BENCH"
else
  echo "compare.sh: building (or finding) the reference; the first build takes ~20 min" >&2
  ref_dir="$("$root/../shared/tools/reference.sh" | tail -n 1)"
  llama_bench="$ref_dir/llama-bench"
fi
[ -x "$llama_bench" ] || { echo "compare.sh: no llama-bench at $llama_bench" >&2; exit 2; }

echo "compare.sh: building openweight (release)" >&2
(cd "$root" && cargo build --release --bin openweight >&2)
target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
ours="$target_dir/release/openweight"
[ -x "$ours" ] || { echo "compare.sh: no binary at $ours" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Results, one line per run: "<model index> <ours|ref> <pp t/s> <tg t/s>".
results="$work/results"
: > "$results"
# Our --bandwidth figures, one line per run: "<model index> <weight bytes> <tg weight GB/s>
# <probe GB/s>".
bandwidth="$work/bandwidth"
: > "$bandwidth"

# Reads llama-bench's `-o json` output (an array with one object per test) on stdin and prints
# "<pp t/s> <tg t/s>" (0 for a test that was not run).
parse_ref() {
  python3 -c '
import json, sys
pp = tg = 0.0
for t in json.load(sys.stdin):
    if t.get("n_prompt", 0) > 0 and t.get("n_gen", 0) == 0:
        pp = float(t["avg_ts"])
    elif t.get("n_gen", 0) > 0 and t.get("n_prompt", 0) == 0:
        tg = float(t["avg_ts"])
print(pp, tg)'
}

# Reads `openweight bench --json` output on stdin and prints "<pp t/s> <tg t/s>".
parse_ours() {
  python3 -c '
import json, sys
lines = [l for l in sys.stdin.read().splitlines() if l.strip()]
o = json.loads(lines[-1])
print(float(o["pp_tps"]), float(o["tg_tps"]))'
}

# Reads `openweight bench --bandwidth --json` output on stdin and prints "<weight bytes>
# <tg weight GB/s> <probe GB/s>" (tg weight GB/s is 0 when tg was not run).
parse_ours_bandwidth() {
  python3 -c '
import json, sys
lines = [l for l in sys.stdin.read().splitlines() if l.strip()]
o = json.loads(lines[-1])
print(int(o["decode_bytes_per_token"]), float(o["tg_weight_gbs"] or 0), float(o["bandwidth_gbs"]))'
}

for i in "${!models[@]}"; do
  m="${models[$i]}"
  for round in $(seq 1 "$rounds"); do
    echo "compare.sh: $(basename "$m") round $round/$rounds: openweight" >&2
    "$ours" bench -m "$m" -t "$threads" -p "$n_prompt" -n "$n_gen" -r "$reps" --json \
      --bandwidth 2>"$work/ours.err" > "$work/ours.json" \
      || { cat "$work/ours.err" >&2; echo "compare.sh: openweight bench failed on $m" >&2; exit 1; }
    echo "$i ours $(parse_ours < "$work/ours.json")" >> "$results"
    echo "$i $(parse_ours_bandwidth < "$work/ours.json")" >> "$bandwidth"

    echo "compare.sh: $(basename "$m") round $round/$rounds: reference" >&2
    "$llama_bench" -m "$m" -t "$threads" -p "$n_prompt" -n "$n_gen" -r "$reps" -o json \
      2>"$work/ref.err" > "$work/ref.json" \
      || { cat "$work/ref.err" >&2; echo "compare.sh: llama-bench failed on $m" >&2; exit 1; }
    echo "$i ref $(parse_ref < "$work/ref.json")" >> "$results"
    tail -n 2 "$results" | sed 's/^/compare.sh:   /' >&2
  done
done

cpu="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)"
rev="$(git -C "$root" rev-parse --short HEAD)"
echo "Speed, tokens/s: mean over $rounds alternating round(s) of $reps repetition(s) each; $threads thread(s)."
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- CPU: ${cpu:-unknown} ($(nproc) logical cores visible)"
echo "- openweight: $rev; reference: $llama_bench"
echo
names="$work/names"
for m in "${models[@]}"; do basename "$m"; done > "$names"
python3 - "$results" "$names" "$n_prompt" "$n_gen" "$bandwidth" "$threads" <<'EOF'
import sys
results, names, n_prompt, n_gen = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
bandwidth, threads = sys.argv[5], sys.argv[6]
names = open(names).read().splitlines()
runs = {}
for line in open(results):
    i, who, pp, tg = line.split()
    runs.setdefault((int(i), who), []).append((float(pp), float(tg)))

def mean(xs):
    return sum(xs) / len(xs) if xs else 0.0

def ratio(ours, ref):
    return f"{ours / ref:.2f}" if ref > 0 and ours > 0 else "n/a"

pp, tg = f"pp{n_prompt}", f"tg{n_gen}"
print(f"| model | ref {pp} | ours {pp} | ratio | ref {tg} | ours {tg} | ratio |")
print("|---|---:|---:|---:|---:|---:|---:|")
for i, name in enumerate(names):
    o = runs.get((i, "ours"), [])
    r = runs.get((i, "ref"), [])
    o_pp, o_tg = mean([x[0] for x in o]), mean([x[1] for x in o])
    r_pp, r_tg = mean([x[0] for x in r]), mean([x[1] for x in r])
    print(f"| {name} | {r_pp:.2f} | {o_pp:.2f} | {ratio(o_pp, r_pp)} "
          f"| {r_tg:.2f} | {o_tg:.2f} | {ratio(o_tg, r_tg)} |")

bw = {}
for line in open(bandwidth):
    i, decode_bytes, tg_gbs, probe_gbs = line.split()
    bw.setdefault(int(i), []).append((int(decode_bytes), float(tg_gbs), float(probe_gbs)))

print()
print(f"Decode weight traffic against the {threads}-thread read probe of the same openweight run, "
      "GB/s: mean over the rounds.")
print()
print("| model | weights per token (MB) | ours tg GB/s | probe GB/s | fraction |")
print("|---|---:|---:|---:|---:|")
for i, name in enumerate(names):
    b = bw.get(i, [])
    mb = mean([x[0] for x in b]) / 1e6
    tg_gbs, probe_gbs = mean([x[1] for x in b]), mean([x[2] for x in b])
    fractions = [x[1] / x[2] for x in b if x[1] > 0 and x[2] > 0]
    fraction = f"{mean(fractions):.2f}" if fractions else "n/a"
    print(f"| {name} | {mb:.1f} | {tg_gbs:.2f} | {probe_gbs:.2f} | {fraction} |")
EOF
