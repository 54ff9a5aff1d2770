"""What one Taichi kernel launch costs from Python: a tiny kernel with 0, 1 and 4 tensor
arguments, timed over many calls (the work inside is negligible).

    python benchmarks/launch_overhead.py --device cpu --json benchmarks/results/launch_cpu.json
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.

import argparse
import json
import platform
import time
from pathlib import Path

import taichi as ti
import torch


def _kernels():
    @ti.kernel
    def scalars(n: ti.i32) -> ti.f32:
        s = 0.0
        for i in range(n):
            s += 1.0
        return s

    @ti.kernel
    def one(a: ti.types.ndarray()):
        for i in range(a.shape[0]):
            a[i] += 1.0

    @ti.kernel
    def four(a: ti.types.ndarray(), b: ti.types.ndarray(), c: ti.types.ndarray(),
             d: ti.types.ndarray()):
        for i in range(a.shape[0]):
            a[i] += b[i] + c[i] + d[i]

    return scalars, one, four


def measure(device: str, calls: int = 500) -> dict[str, float]:
    """Microseconds per launch of each case (Taichi already started for ``device``)."""
    scalars, one, four = _kernels()
    arrays = [torch.zeros(16, device=device) for _ in range(4)]
    cases = {"scalars_only": (scalars, (16,)), "one_tensor": (one, arrays[:1]),
             "four_tensors": (four, arrays)}
    out = {}
    for name, (kernel, kernel_args) in cases.items():
        for _ in range(20):  # compile, warm up
            kernel(*kernel_args)
        ti.sync()
        tic = time.perf_counter()
        for _ in range(calls):
            kernel(*kernel_args)
        ti.sync()
        out[name] = 1e6 * (time.perf_counter() - tic) / calls
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=1, help="Taichi CPU threads")
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.device == "cuda":
        ti.init(arch=ti.cuda)
    else:
        ti.init(arch=ti.cpu, cpu_max_num_threads=args.threads)
    result = {"benchmark": "launch_overhead", "device": args.device, "threads": args.threads,
              "machine": platform.processor() or platform.machine(),
              "us_per_call": measure(args.device, args.calls)}
    print(json.dumps(result["us_per_call"], indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
