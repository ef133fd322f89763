#!/usr/bin/env bash
# One device call for the issue-3 speed work. Runs from the repository root of the device's copy; inputs in .gpu-cuda/
# (frugal.jar, test-classes, the JUnit console jar, this script, gpt2_torch.py, ncu_step.py; frugal-before.jar for
# "before"), the Java runtime in .gpu-jre/.
#   bash .gpu-cuda/device-run.sh [sections...]
# sections, run in the order given (default: tests attention bench before torch ncu):
#   tests      the CUDA test package (TEST_SELECT: other JUnit selectors), then the attention test again on the two-pass backward and on unpipelined kernels
#              (TEST_VARIANTS, empty: not)
#   gemm       CudaOpsBench --gemm: bf16 GEMMs of the GPT-2 step, candidates timed (8) and the heuristic's first (1)
#   attention  CudaOpsBench --attention, one-pass and two-pass backward
#   bench      frugal bench, GPT-2 124M, batch 16 × 1024, vocab 50304 (graph replay, per-op table, GEMM candidate log)
#   bench-alt  the same step once per setting in ALT_ENVS (default FRUGAL_CUDA_FLASH_FUSED=0: the two-pass attention
#              backward), e.g. ALT_ENVS="FRUGAL_CUDA_FLASH_WGMMA=0 FRUGAL_CUDA_DGELU_EPILOGUE=0"
#   before     the same step with frugal-before.jar (the build before this work)
#   torch      bench/gpt2_torch.py eager and torch.compile, same shapes (TORCH_ARGS adds options)
#   ncu-flash  Nsight Compute sections (speed of light, occupancy, warp states) of one forward and one backward kernel
#              (NCU_KERNELS, NCU_BENCH: other kernels of another CudaOpsBench mode)
#   ncu        per-kernel GPU time of one step (ncu_step.py); NCU_ARGS adds bench options (e.g. a stash config)
#   stash-gemm CudaOpsBench --stash-gemm: stash_gemm.cu's quantizing products against cuBLASLt's and quantize
#   stash-gelu CudaOpsBench --stash-gelu: the MLP's GELU path with a quantized stash, split (plain product, then GELU and
#              quantize in one kernel; backward's GELU and bias gradient from the packed pre-activation) against the epilogues
#   quant      CudaOpsBench --quant: quantize/dequantize of bf16 16384x3072 and 16384x768, fast kernels against the
#              general ones (same bytes checked on the GPU first), ms and GB/s
#   dsq-bench  frugal bench of the same step per stash setting (keep dsq-stash dsq bfp8 bfp4; DSQ_SETTINGS), each with
#              the largest batch whose step fits in FIT_GIB (default 8.6: keep at batch 16 needs 8.54; 0: not probed),
#              under each environment setting of DSQ_ENV (space-separated, e.g. FRUGAL_CUDA_STASH_FUSED=0: quantization
#              after the producers)
#   dsq-train  DsqExperiment: GPT-2 124M on the JDK-sources tokens ($G/data/jdk-8mb-gpt2.tokens.xz), batch 8 × 1024,
#              DSQ_STEPS steps (400), seeds DSQ_SEEDS (1337,1338), settings keep,dsq,dsq-stash,bfp8,bfp4; the report
#              files (table, jsonl, plots) come back as $OUT/dsq.tgz
# Each section has a time cap and is skipped when the call's budget (BUDGET seconds, default 470) would run out.
# At most 8 files come back from $OUT: one log per section.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
BUDGET=${BUDGET:-470}
G=.gpu-cuda
JAVA=(.gpu-jre/bin/java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-UseProfiledLoopPredicate -Xmx16g)
JUNIT=(-jar $G/junit-platform-console-standalone-1.11.4.jar execute --disable-banner --details=summary -cp $G/frugal.jar:$G/test-classes:src/test/resources)
BENCH=(bench --device cuda --batch 16 --seq 1024 --vocab 50304)
sections=${*:-tests attention bench before torch ncu}
export FRUGAL_CACHE_DIR=/tmp/frugal-cache
TMP=/tmp/device-run
mkdir -p $TMP

section() { # name cap command... (output appended to $OUT/name.log)
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 20 ]; then echo "== $name: skipped ($left s left)"; return 1; fi
  [ "$cap" -gt "$left" ] && cap=$left
  echo "== $name (cap $cap s, $SECONDS s used)"
  timeout "$cap" "$@" >> "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $SECONDS s"
  return $rc
}

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader
for s in $sections; do
  case $s in
    tests)
      section tests 150 "${JAVA[@]}" "${JUNIT[@]}" ${TEST_SELECT:---select-package frugal.backend.cuda}
      for v in ${TEST_VARIANTS-FRUGAL_CUDA_FLASH_FUSED=0 FRUGAL_CUDA_FLASH_PIPE=0 FRUGAL_CUDA_FLASH_WGMMA=0 FRUGAL_CUDA_FLASH_WG2=0}; do
        echo "# $v" >> "$OUT/tests.log"
        section tests 40 env $v "${JAVA[@]}" "${JUNIT[@]}" --select-method frugal.backend.cuda.CudaBf16OpsTest#attention
      done
      grep -E "FAIL|tests (successful|failed|skipped)|multi-tensor|crossEntropy V=50304|attention B1 T1024|Forward C=768|Backward dx" "$OUT/tests.log" | head -40 ;;
    gemm)
      section gemm 70 env FRUGAL_CUDA_GEMM_LOG=1 "${JAVA[@]}" -cp $G/frugal.jar frugal.backend.cuda.CudaOpsBench --gemm
      section gemm 50 env FRUGAL_CUDA_GEMM_CANDIDATES=1 "${JAVA[@]}" -cp $G/frugal.jar frugal.backend.cuda.CudaOpsBench --gemm
      grep -A40 "^---- " "$OUT/gemm.log" ;;
    attention)
      for v in FRUGAL_CUDA_FLASH_FUSED=1 FRUGAL_CUDA_FLASH_FUSED=0 FRUGAL_CUDA_FLASH_WGMMA=0 FRUGAL_CUDA_FLASH_WG2=0; do
        echo "# $v" >> "$OUT/attention.log"
        section attention 40 env "$v" "${JAVA[@]}" -cp $G/frugal.jar frugal.backend.cuda.CudaOpsBench --attention
      done
      grep -E "^# |^attention" "$OUT/attention.log" ;;
    bench)
      section bench 100 env FRUGAL_CUDA_GEMM_LOG=1 "${JAVA[@]}" -cp $G/frugal.jar frugal.cli.Main "${BENCH[@]}" --steps 20 --warmup 3
      grep -E "^step|^model|^device" "$OUT/bench.log"; sed -n '/^| op/,/sum of ops/p' "$OUT/bench.log" | head -30 ;;
    bench-alt)
      for v in ${ALT_ENVS:-FRUGAL_CUDA_FLASH_FUSED=0}; do
        echo "# $v" >> "$OUT/bench-alt.log"
        section bench-alt 60 env $v "${JAVA[@]}" -cp $G/frugal.jar frugal.cli.Main "${BENCH[@]}" --steps 20 --warmup 3 --profile-steps 0
      done
      grep -E "^# |^step" "$OUT/bench-alt.log" ;;
    before)
      [ -f $G/frugal-before.jar ] && section before 70 "${JAVA[@]}" -cp $G/frugal-before.jar:$G/frugal.jar frugal.cli.Main \
        "${BENCH[@]}" --steps 20 --warmup 3 --profile-steps 0
      grep -E "^step" "$OUT/before.log" ;;
    torch)
      section torch 220 env PYTHONUNBUFFERED=1 python3 $G/gpt2_torch.py --vocab 50304 --steps 20 ${TORCH_ARGS:-}
      grep -E "^torch|^ " "$OUT/torch.log" | head -60 ;;
    ncu-flash)
      for k in ${NCU_KERNELS:-flash_forward flash_backward_fused}; do
        section ncu-flash 45 ncu --section SpeedOfLight --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis \
          --section MemoryWorkloadAnalysis -k "regex:$k" --launch-skip 3 --launch-count 1 \
          "${JAVA[@]}" -cp $G/frugal.jar frugal.backend.cuda.CudaOpsBench ${NCU_BENCH:---attention}
      done
      grep -E "^  [a-z_]+.*\(|Duration|Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Warp Cycles Per Issued|Issue Slots Busy|Executed Ipc A|Stall|Block Limit" "$OUT/ncu-flash.log" | head -60 ;;
    ncu)
      section ncu 170 ncu -o $TMP/step -f --metrics gpu__time_duration.sum --clock-control none --cache-control none \
        --target-processes all "${JAVA[@]}" -cp $G/frugal.jar frugal.cli.Main "${BENCH[@]}" --no-graph --warmup 1 --steps 1 --profile-steps 0 ${NCU_ARGS:-}
      ncu -i $TMP/step.ncu-rep --csv --page raw --metrics gpu__time_duration.sum > $TMP/step.csv 2>>"$OUT/ncu.log" \
        && python3 $G/ncu_step.py $TMP/step.csv >> "$OUT/ncu.log" && sed -n '/^one step/,$p' "$OUT/ncu.log" | head -50 ;;
    dsq-bench)
      for e in ${DSQ_ENV:-FRUGAL_CUDA_STASH_FUSED=1}; do
        for st in ${DSQ_SETTINGS:-keep dsq-stash dsq bfp8 bfp4}; do
          echo "# stash $st $e" >> "$OUT/dsq-bench.log"
          if [ "${st#dsq-}" != "$st" ]; then arg=(--stash-config docs/experiments/$st.conf); else arg=(--stash $st); fi
          [ "${FIT_GIB:-8.6}" != 0 ] && arg+=(--fit-memory ${FIT_GIB:-8.6})
          section dsq-bench 90 env $e "${JAVA[@]}" -cp $G/frugal.jar frugal.cli.Main "${BENCH[@]}" \
            --steps 20 --warmup 3 --profile-steps 0 "${arg[@]}"
        done
      done
      grep -E "^# stash|^step|^device|^stash \(|^largest|^memory traffic|rror" "$OUT/dsq-bench.log" ;;
    stash-gemm)
      section stash-gemm 90 "${JAVA[@]}" -cp $G/frugal.jar frugal.backend.cuda.CudaOpsBench --stash-gemm
      sed -n '/^---- /,$p' "$OUT/stash-gemm.log" ;;
    stash-gelu)
      section stash-gelu 90 "${JAVA[@]}" -cp $G/frugal.jar frugal.backend.cuda.CudaOpsBench --stash-gelu
      sed -n '/^---- /,$p' "$OUT/stash-gelu.log" ;;
    quant)
      section quant 120 "${JAVA[@]}" -cp $G/frugal.jar frugal.backend.cuda.CudaOpsBench --quant
      sed -n '/^---- /,$p' "$OUT/quant.log" ;;
    dsq-train)
      mkdir -p $TMP/dsq
      [ -f $TMP/jdk-8mb-gpt2.tokens ] || python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        $G/data/jdk-8mb-gpt2.tokens.xz $TMP/jdk-8mb-gpt2.tokens
      section dsq-train ${DSQ_CAP:-300} "${JAVA[@]}" -cp $G/frugal.jar frugal.bench.DsqExperiment $TMP/runs $TMP/dsq ${DSQ_STEPS:-400} \
        --device cuda --preset gpt2-124m --batch 8 --seq 1024 --data $TMP/jdk-8mb-gpt2.tokens \
        --seeds ${DSQ_SEEDS:-1337,1338} --settings ${DSQ_TRAIN_SETTINGS:-keep,dsq,dsq-stash,bfp8,bfp4}
      tar czf "$OUT/dsq.tgz" -C $TMP dsq
      grep -E "^\||rror|^step .*: stash" "$OUT/dsq-train.log" | head -40 ;;
  esac
done
echo "== done after $SECONDS s"
