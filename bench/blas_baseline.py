"""BLAS baseline for the GPT-2 124M matmul shapes (batch 4 x seq 64 = 256 rows), float32.

Same shapes, transposes and timing method as frugal.bench.MatmulBench: warm-up, then the median
of several timed runs per shape; GFLOP/s = 2*m*n*k / time; overall = total FLOPs / total median time.
Run: python3 bench/blas_baseline.py
"""
import os
import statistics
import time

import numpy as np

ROWS = 256
LAYERS = [(768, 2304), (768, 768), (768, 3072), (3072, 768), (768, 50257)]


def shapes():
    for (i, o) in LAYERS:
        yield (f"fwd  y=x.Wt    in={i} out={o}", ROWS, o, i, False, True, False)
        yield (f"bwd  dx=dy.W   in={i} out={o}", ROWS, i, o, False, False, False)
        yield (f"bwd  dW+=dyt.x in={i} out={o}", o, i, ROWS, True, False, True)


def main():
    rng = np.random.default_rng()
    total_flops = 0.0
    total_time = 0.0
    print(f"numpy {np.__version__}, threads env OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    for (name, m, n, k, ta, tb, acc) in shapes():
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        out = rng.standard_normal((m, n), dtype=np.float32)
        opa = a.T if ta else a
        opb = b.T if tb else b
        tmp = np.empty((m, n), dtype=np.float32)

        def once():
            if acc:
                np.matmul(opa, opb, out=tmp)
                np.add(out, tmp, out=out)  # accumulate (sgemm would fold this in with beta=1)
            else:
                np.matmul(opa, opb, out=out)

        flops = 2.0 * m * n * k
        reps = max(3, min(50, int(2e10 / flops)))
        for _ in range(max(3, reps // 2)):
            once()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            once()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        total_flops += flops
        total_time += med
        print(f"{name:36s} m={m:6d} n={n:6d} k={k:5d}  {med * 1e3:8.3f} ms  {flops / med / 1e9:7.1f} GFLOP/s")
    print(f"overall (FLOP-weighted) {total_flops / total_time / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
