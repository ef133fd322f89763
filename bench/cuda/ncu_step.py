"""Per-kernel GPU time of one Frugal training step, from an Nsight Compute report of `frugal bench --no-graph`.

    ncu -o step --metrics gpu__time_duration.sum --clock-control none --cache-control none --target-processes all \\
        java ... frugal.cli.Main bench --device cuda --no-graph --warmup 1 --steps 1 --profile-steps 0 ...
    ncu -i step.ncu-rep --csv --page raw --metrics gpu__time_duration.sum > step.csv
    python3 bench/cuda/ncu_step.py step.csv

A step begins at the gradient zeroing kernel (zero_chunks_f32); the last complete step is reported: kernels by total
time (each timed alone by ncu, so launch gaps are not included), then every kernel of the step in order (to tell
which matrix product is which)."""
import csv
import sys
from collections import defaultdict

STEP_START = "zero_chunks_f32"


def kernels(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
    cols = rows[head]
    name, time = cols.index("Kernel Name"), cols.index("gpu__time_duration.sum")
    unit_row = rows[head + 1]
    scale = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0}.get(unit_row[time], None)
    out = []
    for r in rows[head + (2 if scale is not None else 1):]:
        if len(r) > time and r[time]:
            out.append((r[name], float(r[time].replace(",", "")) * (scale or 1e-6)))
    return out


def main():
    ks = kernels(sys.argv[1])
    starts = [i for i, (n, _) in enumerate(ks) if n.startswith(STEP_START)]
    if not starts:
        sys.exit("no " + STEP_START + " kernel: is this a step of the multi-tensor build?")
    step = ks[starts[-1]:]
    total = sum(t for _, t in step)
    by = defaultdict(lambda: [0.0, 0])
    for n, t in step:
        by[n][0] += t
        by[n][1] += 1
    print(f"one step: {len(step)} kernels, {total:.2f} ms of kernel time")
    print("| kernel | calls | ms | share |")
    print("|---|---:|---:|---:|")
    for n, (t, c) in sorted(by.items(), key=lambda kv: -kv[1][0]):
        print(f"| {n[:110]} | {c} | {t:.3f} | {100 * t / total:.1f}% |")
    print("\nfirst kernels of the step, in order:")
    for n, t in step:
        print(f"  {t * 1e3:9.1f} us  {n[:140]}")


if __name__ == "__main__":
    main()
