#!/usr/bin/env bash
# The CPU figures of docs/BENCHMARKS.md in one run: the GPT-2 124M training step (frugal bench), CpuMatmul on the
# step's GEMM shapes, and numpy/OpenBLAS on the same shapes as the baseline measured alongside.
#   bench/cpu-bench.sh [output file]      (default: bench/cpu-bench.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/jdk25.sh
out=${1:-bench/cpu-bench.txt}
java="$JAVA_HOME/bin/java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-UseProfiledLoopPredicate"
[ -f target/frugal.jar ] || mvn -q -B package -DskipTests
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  echo "## frugal bench (GPT-2 124M, batch 4 x seq 64, fp32)"
  $java -jar target/frugal.jar bench --steps 10 --warmup 4 2>&1 | grep -v -e WARNING -e 'incubator'
  echo "## CpuMatmul on the step's GEMM shapes"
  $java -cp target/frugal.jar frugal.bench.MatmulBench 2>&1 | grep -v -e WARNING -e 'incubator'
  echo "## numpy (OpenBLAS) on the same shapes"
  python3 bench/blas_baseline.py
} | tee "$out"
