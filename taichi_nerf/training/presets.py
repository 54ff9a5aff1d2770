"""The per-model presets: what a ``None`` field of ``TrainConfig`` becomes (``resolve_config``).

Values measured on the demo scene and lego (README "Training defaults and why", BENCHMARKS.md
"Pose accuracy").
"""

from __future__ import annotations

from typing import Any

import torch

# camera_adam with the pose lr decaying 30x halved the main job's aligned rotation error, 0.412 ->
# 0.179 deg; CamP, orbit latents and per-camera sampling stay options (tables in BENCHMARKS.md).
# "ngp_cpu" is the ngp preset's CPU variant (smaller tables, coarser marching, fewer steps).
_POSE_DEFAULTS = dict(pose_preconditioning="none", pose_lr_warmup=0, pose_grad_clip=0.1,
                      sampler="uniform", pose_gauge="free", pose_average=0.0)
# Both ngp presets: learning rates, the pose optimiser and its travel boost, clean-init pose lr.
# The field lr decays only 2x (1e-2 -> 5e-3; it was 10x): a field that keeps learning follows the
# poses' late corrections (lego 2 deg/1 % aligned 0.324 -> 0.271 deg, +0.9 dB; BENCHMARKS.md).
# Given poses (init_mode clean) wait for a quarter of the steps before they move, so the field is
# sharp when they start (demo drift 0.075 -> 0.045 deg at 2000 steps; 0.043 deg at 2600 steps,
# test PSNR within 0.03 dB of fixed poses).
# Noisy poses: from half-way on, half of each batch is drawn by the images' edge strength
# (lego 100 px aligned 2 deg/1 % 0.283 -> 0.218 deg, 5 deg/2 % 0.336 -> 0.244, +0.6-0.8 dB; the
# demo neutral; from step 0 it hurt 5 deg/2 %). Given poses keep uniform pixels (with the poses
# fixed, edges cost the demo 0.26 dB of test PSNR). BENCHMARKS.md, session of 2026-12-07.
# Half-way, cameras the field disowns get their rotation searched (relocalize.py): lego 5 deg/2 %
# draw 1, a camera that starts 22.6 deg off ends 2.1 deg off instead of 12.2 (aligned mean 0.437
# -> 0.324 deg); where no camera is lost it changes nothing (BENCHMARKS.md, 2026-12-08).
_NGP_RATES = dict(lr=1e-2, lr_final=5e-3, pose_lr=3e-3, pose_lr_final=1e-4, pose_opt_delay=100,
                  pose_optimizer="camera_adam", clean_pose_lr=1e-3, clean_pose_delay_frac=0.25,
                  pose_travel_boost=8.0, pose_travel_full_rate=False, edge_sampling=0.5,
                  edge_sampling_start=0.5, clean_edge_sampling=0.0, pose_relocalize=0.5)
PRESETS: dict[str, dict[str, Any]] = {
    "ngp": dict(
        **_NGP_RATES, batch_size=4096, num_iters=5000, val_every=1000, **_POSE_DEFAULTS,
        ngp=dict(n_levels=16, log2_table_size=19, finest_resolution=2048, grid_resolution=128,
                 target_samples=1 << 18, coarse_to_fine=(0, 0)),
    ),
    # 2600 steps: the README main job in 4 min 15 s on 2 cores (its goal is 5), aligned 0.180 ->
    # 0.147 deg against 2000 steps.
    "ngp_cpu": dict(
        **_NGP_RATES, batch_size=1024, num_iters=2600, val_every=500, **_POSE_DEFAULTS,
        ngp=dict(n_levels=8, log2_table_size=16, finest_resolution=512, grid_resolution=64,
                 target_samples=1 << 15, coarse_to_fine=(0, 0)),
    ),
    # The seed's values.
    "vanilla": dict(
        lr=5e-4, lr_final=5e-5, pose_lr=1e-4, pose_lr_final=1e-6, pose_opt_delay=1000,
        pose_optimizer="adam", pose_travel_boost=1.0, pose_travel_full_rate=False,
        edge_sampling=0.0, edge_sampling_start=0.0, pose_relocalize=0.0,
        batch_size=1024, num_iters=50000, val_every=2500, **_POSE_DEFAULTS,
    ),
}


def preset_help() -> str:
    """The presets' values as ``--help`` text: what a flag shown as ``None`` really defaults to."""
    lines = ["Defaults of the flags shown as None (preset: ngp on CUDA, ngp_cpu when training on",
             "the CPU, vanilla with --model vanilla; under ngp --batch-size is only the first",
             "step's ray count, later steps are sized to --ngp.target-samples):"]
    keys = ("lr", "lr_final", "pose_lr", "clean_pose_lr", "pose_lr_final", "pose_opt_delay",
            "clean_pose_delay_frac",
            "batch_size", "num_iters", "val_every", "pose_optimizer", "pose_travel_boost", "pose_travel_full_rate",
            "pose_preconditioning", "pose_gauge", "sampler", "edge_sampling", "edge_sampling_start",
            "clean_edge_sampling", "pose_average", "pose_relocalize")
    for name, preset in PRESETS.items():
        values = [f"{k}={preset[k]}" for k in keys if k in preset]
        values += [f"ngp.{k}={v}" for k, v in preset.get("ngp", {}).items()]
        lines.append(f"  {name}: " + ", ".join(values))
    lines.append("  init_mode: noisy for synthetic scenes, clean (the given poses) for captures")
    lines.append("  translation_delay: 3 * num_iters // 4 with init_mode clean, else 0")
    lines.append("  pose_lr (ngp presets): clean_pose_lr with init_mode clean (pose_lr_final in "
                 "proportion)")
    lines.append("  pose_opt_delay (ngp presets): clean_pose_delay_frac * num_iters with init_mode "
                 "clean")
    lines.append("  edge_sampling (ngp presets): clean_edge_sampling with init_mode clean")
    return "\n".join(lines)


def preset_name(model: str, device: torch.device) -> str:
    """The preset for a model on a device (ngp on the CPU gets its CPU variant)."""
    if model == "ngp" and device.type == "cpu":
        return "ngp_cpu"
    return model
