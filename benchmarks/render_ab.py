"""In-process A/B of two versions of ``taichi_nerf/render.py``: training steps (fixed and joint
poses) interleaved in one process, so machine load hits both alike.

    git show 61448b4:taichi_nerf/render.py > /tmp/render_before.py
    python benchmarks/render_ab.py --before /tmp/render_before.py --json out.json

Both versions use this tree's kernels; the difference measured is the render path alone
(pruning, ray gathers, how packed samples reach compositing).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import taichi_nerf
import taichi_nerf.models.ngp as ngp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_profile  # noqa: E402 (benchmarks/ helper)


def _load_render(path: Path):
    spec = importlib.util.spec_from_file_location("render_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.render_rays


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the older render.py")
    parser.add_argument("--scene", default="demo")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--downscale", type=int, default=2)
    parser.add_argument("--rays", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds (4 steps each)")
    parser.add_argument("--after-first", action="store_true", help="run the newer version first")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.quick, args.seed = False, 0
    taichi_nerf.init("cpu")
    versions = {"before": _load_render(args.before), "after": ngp.render_rays}
    if args.after_first:  # the order within a round, to check it does not bias the result
        versions = {"after": versions["after"], "before": versions["before"]}
    s = step_profile.build(args, torch.device("cpu"))
    for step in range(30):  # warm-up with grid updates, as in training
        step_profile.train_step(s, step, joint=step >= 15, update_grid=True)
    times = {(v, k): [] for v in versions for k in ("fixed", "joint")}
    for k in range(args.rounds):
        for version, render in versions.items():
            ngp.render_rays = render
            for kind in ("fixed", "joint"):
                tic = time.perf_counter()
                step_profile.train_step(s, 100 + k, joint=kind == "joint", update_grid=False)
                times[(version, kind)].append(time.perf_counter() - tic)
    ngp.render_rays = versions["after"]
    result = {f"{v}_{k}_ms": 1e3 * statistics.median(t) for (v, k), t in times.items()}
    for v in versions:
        result[f"{v}_joint_overhead"] = result[f"{v}_joint_ms"] / result[f"{v}_fixed_ms"] - 1
    result.update(sizes=s["sizes"], torch_threads=torch.get_num_threads(),
                  load_average=os.getloadavg(), before=str(args.before), rounds=args.rounds)
    print(json.dumps({k: v for k, v in result.items() if k.endswith(("_ms", "overhead"))}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
