"""Training-step benchmark and profile: steps/s with fixed and with learned poses, and where one
joint step's time goes (torch profiler, by op name).

A step is the trainer's (sample pixels -> rays from the current poses -> render -> MSE ->
backward -> Adam on the field and, when joint, on the poses), built here from the public API
only, so the same script measures any commit. Fixed and joint steps are interleaved in one
process after warm-up; the reported overhead is the ratio of their medians.

    python benchmarks/step_profile.py --device cpu --json benchmarks/results/step_cpu.json
    python benchmarks/step_profile.py --scene lego --downscale 2 --device cuda \\
        --json results/step_cuda.json --profile-json results/profile_cuda.json
    python benchmarks/step_profile.py --quick     # tiny sizes (CPU smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import taichi_nerf
from taichi_nerf import (
    CameraPoseParameters,
    NGPRenderer,
    PixelSampler,
    load_scene,
    perturb_poses,
    pixels_to_rays,
)

#: Field and grid sizes per mode: (n_levels, log2_table_size, finest_resolution, grid_res, rays)
SIZES = {
    "cuda": (16, 19, 2048, 128, 4096),
    "cpu": (8, 16, 512, 64, 1024),
    "quick": (4, 12, 64, 32, 256),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        import taichi as ti

        ti.sync()
        torch.cuda.synchronize(device)


def build(args, device: torch.device) -> dict:
    """Scene, renderer, poses (2 deg / 1 % noise), sampler and both optimisers."""
    levels, log2_t, finest, grid_res, rays = SIZES["quick" if args.quick else device.type]
    scene = load_scene(args.scene, args.data_dir, splits=("train",), downscale=args.downscale)
    train = scene["train"]
    torch.manual_seed(args.seed)
    renderer = NGPRenderer(train.scene_aabb, train.near, train.far, grid_resolution=grid_res,
                           marching_steps=min(1024, max(128, 2 * train.width)), n_levels=levels,
                           log2_table_size=log2_t, finest_resolution=finest).to(device)
    gt = train.poses.to(device)
    noisy = perturb_poses(gt, rotation_noise_deg=2.0, translation_noise_pct=1.0, seed=0)
    poses = CameraPoseParameters(noisy).to(device)
    return {
        "renderer": renderer, "poses": poses, "device": device,
        "sampler": PixelSampler(train.images, seed=args.seed, device=device),
        "intrinsics": train.intrinsics.to(device),
        "background": torch.ones(3, device=device),
        "field_opt": torch.optim.Adam(renderer.parameters(), lr=1e-2, betas=(0.9, 0.99),
                                      eps=1e-15),
        "pose_opt": _pose_optimizer(args, poses),
        "rays": args.rays or rays,
        "sizes": {"scene": args.scene, "image": [train.width, train.height],
                  "n_levels": levels, "log2_table_size": log2_t, "finest_resolution": finest,
                  "grid_resolution": grid_res, "rays_per_step": args.rays or rays},
    }


def _pose_optimizer(args, poses) -> torch.optim.Optimizer:
    """The ngp presets' pose optimiser (camera_adam with the travel boost) or plain Adam."""
    if args.pose_optimizer == "adam":
        return torch.optim.Adam(poses.parameters(), lr=3e-3)
    from taichi_nerf.training.camera_adam import CameraAdam

    return CameraAdam([{"params": list(poses.parameters())}], lr=3e-3, travel_boost=8.0)


def train_step(s: dict, step: int, joint: bool, update_grid: bool) -> int:
    """One training step; returns the samples shaded."""
    renderer, poses = s["renderer"], s["poses"]
    if update_grid:
        renderer.update_step(step)
    camera_ids, pixels, target = s["sampler"].sample(s["rays"])
    with torch.set_grad_enabled(joint):
        current = poses()
    rays_o, rays_d = pixels_to_rays(pixels, camera_ids, current, s["intrinsics"])
    out = renderer.render_rays(rays_o, rays_d, background=s["background"], train=True)
    loss = F.mse_loss(out["rgb"], target)
    s["field_opt"].zero_grad(set_to_none=True)
    s["pose_opt"].zero_grad(set_to_none=True)
    loss.backward()
    s["field_opt"].step()
    if joint:
        s["pose_opt"].step()
    return int(out["num_samples"])


def measure(s: dict, warmup: int, repeats: int) -> dict:
    """Warm-up (grid updates included), then fixed and joint steps interleaved, no updates."""
    for step in range(warmup):
        train_step(s, step, joint=step >= warmup // 2, update_grid=True)
    times = {"fixed": [], "joint": []}
    samples = []
    for k in range(2 * repeats):
        kind = "joint" if k % 2 else "fixed"
        _sync(s["device"])
        tic = time.perf_counter()
        samples.append(train_step(s, warmup + k, joint=kind == "joint", update_grid=False))
        _sync(s["device"])
        times[kind].append(time.perf_counter() - tic)
    fixed_ms = 1e3 * statistics.median(times["fixed"])
    joint_ms = 1e3 * statistics.median(times["joint"])
    return {"fixed_step_ms": fixed_ms, "joint_step_ms": joint_ms,
            "fixed_steps_per_s": 1e3 / fixed_ms, "joint_steps_per_s": 1e3 / joint_ms,
            "joint_overhead": joint_ms / fixed_ms - 1.0,
            "samples_per_step_median": statistics.median(samples),
            "repeats_s": times}


def _profile_rows(s: dict, step: int, joint: bool) -> dict[str, dict]:
    """Per-op totals of one step of one kind under the torch profiler."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if s["device"].type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=False) as prof:
        train_step(s, step, joint=joint, update_grid=False)
        _sync(s["device"])
    rows = {}
    for e in prof.key_averages():
        device_us = getattr(e, "device_time_total", None)
        if device_us is None:
            device_us = getattr(e, "cuda_time_total", 0.0)
        rows[e.key] = {"name": e.key, "count": e.count, "cpu_total_ms": e.cpu_time_total / 1e3,
                       "self_cpu_ms": e.self_cpu_time_total / 1e3,
                       "device_total_ms": float(device_us) / 1e3}
    return rows


def _profile_mean(s: dict, step: int, steps: int) -> tuple[dict, dict]:
    """Joint and fixed steps profiled one at a time, interleaved (after one unrecorded pair: the
    profiler's first session is slow); per-op means per step of each kind."""
    _profile_rows(s, step, True), _profile_rows(s, step + 1, False)
    sums: tuple[dict, dict] = ({}, {})
    for k in range(2 * steps):
        rows = _profile_rows(s, step + 2 + k, joint=k % 2 == 0)
        acc = sums[k % 2]
        for name, r in rows.items():
            a = acc.setdefault(name, dict.fromkeys(r, 0.0) | {"name": name})
            for key in ("count", "cpu_total_ms", "self_cpu_ms", "device_total_ms"):
                a[key] += r[key] / steps
    return sums


def profile_step(s: dict, step: int, path: Path, top: int = 80, steps: int = 5) -> list[dict]:
    """Joint and fixed steps under the torch profiler (``steps`` of each, per-step means).

    Writes ``rows`` (the joint step's ops, sorted by total time), ``fixed_rows`` and
    ``joint_minus_fixed`` (per op, the self time a joint step adds: where the price of
    learning poses goes, op by op). Returns ``rows``.
    """
    joint, fixed = _profile_mean(s, step, steps)

    def ordered(rows: dict) -> list[dict]:
        key = lambda r: max(r["cpu_total_ms"], r["device_total_ms"])  # noqa: E731
        return sorted(rows.values(), key=key, reverse=True)[:top]

    zero = {"self_cpu_ms": 0.0, "device_total_ms": 0.0, "count": 0}
    diff = []
    for name in set(joint) | set(fixed):
        j, f = joint.get(name, zero), fixed.get(name, zero)
        diff.append({"name": name, "self_cpu_ms": j["self_cpu_ms"] - f["self_cpu_ms"],
                     "device_self_ms": j["device_total_ms"] - f["device_total_ms"],
                     "count": j["count"] - f["count"]})
    diff.sort(key=lambda r: abs(r["self_cpu_ms"]) + abs(r["device_self_ms"]), reverse=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": s["device"].type, "steps_each": steps,
                                "rows": ordered(joint), "fixed_rows": ordered(fixed),
                                "joint_minus_fixed": diff[:top]}, indent=1))
    return ordered(joint)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", default="demo")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--downscale", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few steps (CPU)")
    parser.add_argument("--rays", type=int, default=None, help="rays per step (default: SIZES)")
    parser.add_argument("--warmup", type=int, default=None, help="steps before timing")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps of each kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--profile-json", type=Path, default=None,
                        help="profile joint and fixed steps into this file")
    parser.add_argument("--profile-steps", type=int, default=5,
                        help="steps of each kind profiled (interleaved; per-step means)")
    parser.add_argument("--note", default="")
    parser.add_argument("--pose-optimizer", choices=["camera_adam", "adam"],
                        default="camera_adam", help="camera_adam: the ngp presets' (default)")
    args = parser.parse_args(argv)
    if args.quick:
        args.downscale = max(args.downscale, 4)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 40)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 15)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU")
    taichi_nerf.init(device.type)
    s = build(args, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    load_before = os.getloadavg()
    result = {"benchmark": "step_profile", "device": device.type,
              "device_name": _device_name(device), "torch_threads": torch.get_num_threads(),
              "versions": {"python": platform.python_version(), "torch": torch.__version__},
              "sizes": s["sizes"], "pose_optimizer": args.pose_optimizer,
              "warmup": warmup, "repeats": repeats, "note": args.note,
              **measure(s, warmup, repeats)}
    import launch_overhead  # (benchmarks/ is this script's folder)

    result["taichi_launch_us"] = launch_overhead.measure(device.type, 200)
    if args.profile_json:
        rows = profile_step(s, warmup + 2 * repeats, args.profile_json, steps=args.profile_steps)
        result["profile_top"] = [r["name"] for r in rows[:15]]
    result["load_average_before_after"] = [load_before, os.getloadavg()]
    if device.type == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(f"fixed {result['fixed_step_ms']:.1f} ms  joint {result['joint_step_ms']:.1f} ms  "
          f"overhead {100 * result['joint_overhead']:+.1f}%  "
          f"({result['samples_per_step_median']:.0f} samples/step, {_device_name(device)})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
