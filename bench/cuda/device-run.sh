#!/usr/bin/env bash
# One device call for the issue-3 speed work: GPU tests, the bf16 GEMM table, the GPT-2 124M step (this build and,
# when .gpu-cuda/frugal-before.jar is there, the build before), PyTorch eager/compile in the same call, and a per-kernel
# ncu breakdown of one step. Runs from the repository root of the device's copy; inputs in .gpu-cuda/ (frugal.jar,
# test-classes, the JUnit console jar, this script, gpt2_torch.py, ncu_step.py), the Java runtime in .gpu-jre/.
#   bash .gpu-cuda/device-run.sh [sections...]   sections: tests bench before gemm torch ncu (default: all, in this order)
# TORCH_ARGS adds options to gpt2_torch.py (--modes compile --profile, say).
# Each section has a time cap and is skipped when the call's budget (BUDGET seconds, default 470) would run out.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
BUDGET=${BUDGET:-470}
G=.gpu-cuda
JAVA=(.gpu-jre/bin/java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -Xmx16g)
BENCH=(bench --device cuda --batch 16 --seq 1024 --vocab 50304)
sections=${*:-tests bench before gemm torch ncu}
export FRUGAL_CACHE_DIR=/tmp/frugal-cache

section() { # name cap command...
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 20 ]; then echo "== $name: skipped ($left s left)"; return; fi
  [ "$cap" -gt "$left" ] && cap=$left
  echo "== $name (cap $cap s, $SECONDS s used)"
  timeout "$cap" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: exit $? after $SECONDS s"
}

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader
for s in $sections; do
  case $s in
    tests) section tests 150 "${JAVA[@]}" -jar $G/junit-platform-console-standalone-1.11.4.jar execute --disable-banner \
             --details=summary -cp $G/frugal.jar:$G/test-classes --select-package frugal.backend.cuda
           grep -E "FAIL|tests (successful|failed|skipped)|multi-tensor|crossEntropy V=50304|biasBackward|layerNormBackward dx" "$OUT/tests.log" | head -40 ;;
    gemm) section gemm 70 env FRUGAL_CUDA_GEMM_LOG=1 "${JAVA[@]}" -cp $G/frugal.jar frugal.backend.cuda.CudaOpsBench --gemm
          section gemm-untuned 50 env FRUGAL_CUDA_GEMM_CANDIDATES=1 "${JAVA[@]}" -cp $G/frugal.jar frugal.backend.cuda.CudaOpsBench --gemm
          sed -n '/^---- /,$p' "$OUT/gemm.log" "$OUT/gemm-untuned.log" ;;
    bench) section bench 100 "${JAVA[@]}" -cp $G/frugal.jar frugal.cli.Main "${BENCH[@]}" --steps 20 --warmup 3
           grep -E "^step|^model|^device" "$OUT/bench.log"; sed -n '/^| op/,/sum of ops/p' "$OUT/bench.log" | head -30 ;;
    before) [ -f $G/frugal-before.jar ] && section before 90 "${JAVA[@]}" -cp $G/frugal-before.jar:$G/frugal.jar frugal.cli.Main \
              "${BENCH[@]}" --steps 20 --warmup 3 --profile-steps 0 && grep -E "^step" "$OUT/before.log" ;;
    torch) section torch 220 env PYTHONUNBUFFERED=1 python3 $G/gpt2_torch.py --vocab 50304 --steps 20 ${TORCH_ARGS:-}
           grep -E "^torch|^ " "$OUT/torch.log" | head -60 ;;
    ncu) section ncu 170 ncu -o "$OUT/step" -f --metrics gpu__time_duration.sum --clock-control none --cache-control none \
           --target-processes all "${JAVA[@]}" -cp $G/frugal.jar frugal.cli.Main "${BENCH[@]}" --no-graph --warmup 1 --steps 1 --profile-steps 0
         ncu -i "$OUT/step.ncu-rep" --csv --page raw --metrics gpu__time_duration.sum > "$OUT/step.csv" 2>"$OUT/ncu-import.log" \
           && python3 $G/ncu_step.py "$OUT/step.csv" | tee "$OUT/ncu-step.md" | head -70
         rm -f "$OUT/step.ncu-rep" ;;
  esac
done
echo "== done after $SECONDS s"
