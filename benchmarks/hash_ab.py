"""A/B of two versions of ``taichi_nerf/kernels/hash_grid.py`` in one process (CPU).

Loads each file as its own module (the rest of the package is shared), checks that both give
the same outputs and gradients, then times forward + backward of ``hash_encode`` at the CPU
preset's size (8 levels, T = 2^16, samples along 1024 rays x 16), with the positions needing a
gradient (a joint step) and without (fixed poses), the two versions interleaved so that machine
load falls on both alike. Compare the ratios, not the absolute times.

    git show <commit>:taichi_nerf/kernels/hash_grid.py > /tmp/hash_old.py
    python benchmarks/hash_ab.py /tmp/hash_old.py taichi_nerf/kernels/hash_grid.py \\
        --json benchmarks/results/hash_ab_cpu.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _inputs(torch, spec, seed: int):
    g = torch.Generator().manual_seed(seed)
    o = torch.rand(1024, 3, generator=g) * 0.4 + 0.3
    d = torch.nn.functional.normalize(torch.randn(1024, 3, generator=g), dim=-1)
    t = torch.linspace(0, 0.3, 16)
    x = (o[:, None] + t[None, :, None] * d[:, None]).reshape(-1, 3).clamp(0, 1).contiguous()
    table = (torch.rand(spec.table_size, spec.n_features, generator=g) * 2 - 1) * 1e-2
    return x, table, torch.randn(x.shape[0], spec.output_dim, generator=g)


def _run(torch, module, spec, x, table, v, need_x: bool):
    xx, tt = x.clone().requires_grad_(need_x), table.clone().requires_grad_()
    tic = time.perf_counter()
    out = module.hash_encode(xx, tt, spec)
    grads = torch.autograd.grad((out * v).sum(), [xx, tt] if need_x else [tt])
    return time.perf_counter() - tic, out.detach(), grads


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", type=Path, help="hash_grid.py of version A")
    p.add_argument("b", type=Path, help="hash_grid.py of version B")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--note", default="")
    args = p.parse_args()
    os.environ["TI_CPU_MAX_NUM_THREADS"] = str(args.threads)  # read by ti.init
    import torch

    from taichi_nerf import runtime
    from taichi_nerf.kernels.specs import HashGridSpec

    torch.set_num_threads(args.threads)
    runtime.init("cpu")
    versions = {"A": _load(args.a, "hash_ab_a"), "B": _load(args.b, "hash_ab_b")}
    spec = HashGridSpec(n_levels=8, log2_table_size=16, finest_resolution=512)
    x, table, v = _inputs(torch, spec, args.seed)
    results = {name: _run(torch, m, spec, x, table, v, True) for name, m in versions.items()}
    (_, out_a, g_a), (_, out_b, g_b) = results["A"], results["B"]
    check = {"out": (out_a - out_b).abs().max().item(),
             "x_grad": (g_a[0] - g_b[0]).abs().max().item(),
             "x_grad_scale": g_a[0].abs().max().item(),
             "table_grad": (g_a[1] - g_b[1]).abs().max().item()}
    times = {f"{n}_{k}": [] for n in versions for k in ("joint", "fixed")}
    for r in range(5 + args.repeats):
        order = list(versions.items()) if r % 2 == 0 else list(versions.items())[::-1]
        for name, module in order:
            for kind, need_x in (("joint", True), ("fixed", False)):
                elapsed = _run(torch, module, spec, x, table, v, need_x)[0]
                if r >= 5:  # warm-up
                    times[f"{name}_{kind}"].append(elapsed)
    ms = {k: statistics.median(t) * 1e3 for k, t in times.items()}
    summary = {"median_ms": {k: round(t, 3) for k, t in ms.items()},
               "joint_overhead_pct": {n: round(100 * (ms[f"{n}_joint"] / ms[f"{n}_fixed"] - 1), 1)
                                      for n in versions},
               "b_over_a": {k: round(ms[f"B_{k}"] / ms[f"A_{k}"], 3) for k in ("joint", "fixed")}}
    print(json.dumps({"difference": check, **summary}, indent=1))
    if args.json:
        env = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
               "python": platform.python_version(), "torch": torch.__version__,
               "points": int(x.shape[0]), "levels": spec.n_levels, "note": args.note}
        args.json.write_text(json.dumps({"benchmark": "hash_ab", "a": str(args.a),
                                         "b": str(args.b), "environment": env,
                                         "difference": check, **summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
