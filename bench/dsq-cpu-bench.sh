#!/usr/bin/env bash
# The CPU step time, memory and largest batch of the DSQ settings (docs/experiments/dsq.md), in one run so that keep
# is the baseline measured alongside: frugal bench of the tiny model for each setting, one after another, in ROUNDS
# rounds (the first also fits the largest batch in the budget), since a step on a shared 2-core machine varies by a
# third from step to step and drifts between runs: compare settings within a round, and the rounds' medians.
#   [ROUNDS=3] [DSQ_SETTINGS="keep dsq …"] bench/dsq-cpu-bench.sh [output file] [GiB budget]
#   (defaults: bench/dsq-cpu-bench.txt, 0.25)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/dsq-cpu-bench.txt}
budget=${2:-0.25}
settings=${DSQ_SETTINGS:-keep dsq-stash-qkv8 dsq-stash dsq bfp8 bfp4}
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  for round in $(seq 1 "${ROUNDS:-3}"); do
    fit=(); [ "$round" = 1 ] && fit=(--fit-memory "$budget")
    for s in $settings; do
      if [ -f "docs/experiments/$s.conf" ]; then stash=(--stash-config "docs/experiments/$s.conf"); else stash=(--stash "$s"); fi
      echo "## round $round: $s"
      ./frugal bench --preset tiny -b 8 -t 64 -n 20 --warmup 20 "${stash[@]}" "${fit[@]}" 2>&1 \
        | grep -e '^bench:' -e '^step:' -e 'memory:' -e '^stash (' -e '^largest batch' -e '^per-op' -e '^| quantize' -e '^| dequantize'
    done
  done
} | tee "$out"
