"""Bring lost cameras back: a one-off search over rotations for the cameras the field disowns.

With large initial errors a few cameras start so far off (20-30 deg) that gradient steps never
bring them back: the rest of the rig and the field converge, and they stay stranded in a wrong
basin (issue 9: lego 5 deg / 2 % noise draw 1, BARF's noise). Once the field is good, such a
camera stands out by its photometric error, and its right rotation can be *found* instead of
descended to: render a coarse grid of pixels from rotated copies of the camera and keep the
rotation that matches its image best. ``--pose-relocalize F`` does this once, at step
``F * num_iters``:

1. Every training camera renders a ``G x G`` grid of its pixels with the current poses (no
   gradient, the eval path: no random numbers drawn); its error is the mean squared error over
   the grid.
2. A camera is *lost* when its error exceeds ``LOST_FACTOR`` times the median (and a floor).
3. For each lost camera, rotations ``exp(w) R`` about its centre, ``w`` on a 7 x 7 x 7 grid of
   +-24 deg (8 deg apart), then 5 x 5 x 5 of +-6 deg and 3 x 3 x 3 of +-1.5 deg around the
   best so far; the best replaces its rotation when its error is below ``ACCEPT_RATIO`` times
   the current one and it lies at least ``MIN_TURN_DEG`` away (a lost camera is far off; small
   corrections are left to the gradient steps). Its optimiser state (moments, travel
   multiplier) restarts, so stale moments do not push it back.

Only the plain deltas are supported (no CamP/orbit latent, no rig gauge). Deterministic: the same
step of a resumed run does the same.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from taichi_nerf.poses import so3_exp, so3_log
from taichi_nerf.rays import pixels_to_rays
from taichi_nerf.render import render_image

__all__ = ["relocalize_lost_cameras", "relocalize_for_trainer", "camera_errors", "LOST_FACTOR",
           "ACCEPT_RATIO"]

LOST_FACTOR = 4.0  # lost: error > LOST_FACTOR * median error (and > ERROR_FLOOR)
ERROR_FLOOR = 1e-4  # mean squared error in [0, 1] colour units (PSNR 40 dB)
ACCEPT_RATIO = 0.8  # a found rotation must cut the camera's error by at least 20 %
MIN_TURN_DEG = 4.0  # and be this far from the current one (small corrections: gradient steps')
GRID = 16  # pixels per image side rendered per camera and candidate
STAGES = ((24.0, 7), (6.0, 5), (1.5, 3))  # (half-width in deg, values per axis) per stage


def _pixel_grid(width: int, height: int, device: torch.device) -> torch.Tensor:
    """``[G*G, 2]`` long ``(u, v)``: the centres of a G x G grid of image cells."""
    u = ((torch.arange(GRID, device=device) + 0.5) * width / GRID).long().clamp_(max=width - 1)
    v = ((torch.arange(GRID, device=device) + 0.5) * height / GRID).long().clamp_(max=height - 1)
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1).reshape(-1, 2)


@torch.no_grad()
def _render_errors(renderer, poses: torch.Tensor, cams: torch.Tensor, pixels: torch.Tensor,
                   targets: torch.Tensor, intrinsics, background: torch.Tensor) -> torch.Tensor:
    """Mean squared error ``[K]`` of K posed cameras (``poses [K,3,4]``, image ``cams [K]``) on
    the pixel grid."""
    k, p = poses.shape[0], pixels.shape[0]
    ids = torch.arange(k, device=poses.device).repeat_interleave(p)
    if torch.is_tensor(intrinsics) and intrinsics.dim() == 2:  # one row per training camera
        intrinsics = intrinsics[cams]
    rays_o, rays_d = pixels_to_rays(pixels.repeat(k, 1), ids, poses, intrinsics)
    rgb = render_image(renderer, rays_o, rays_d, background=background,
                       chunk=getattr(renderer, "eval_chunk", 16384))["rgb"]
    return (rgb.float().reshape(k, p, 3) - targets[cams]).square().mean(dim=(1, 2))


def camera_errors(renderer, poses: torch.Tensor, images: torch.Tensor, intrinsics,
                  background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each camera's error ``[N]`` on the pixel grid, the grid ``[P, 2]`` and its targets
    ``[N, P, 3]`` (float32 in [0, 1]) of ``images`` (uint8 ``[N, H, W, 3]``)."""
    n, h, w = images.shape[:3]
    pixels = _pixel_grid(w, h, images.device)
    targets = images[:, pixels[:, 1], pixels[:, 0]].float() / 255.0
    cams = torch.arange(n, device=poses.device)
    errors = _render_errors(renderer, poses, cams, pixels, targets, intrinsics, background)
    return errors, pixels, targets


def _rotation_grid(half_deg: float, count: int, device, dtype) -> torch.Tensor:
    """``[count^3, 3]`` axis-angle vectors on a regular grid of +-half_deg per axis."""
    axis = torch.linspace(-math.radians(half_deg), math.radians(half_deg), count,
                          device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def _search(renderer, pose: torch.Tensor, cam: int, pixels, targets, intrinsics,
            background) -> tuple[torch.Tensor, float]:
    """The best rotation ``[3, 3]`` for one camera (centre fixed) and its error."""
    best = pose[:3, :3]
    best_error = math.inf
    cams = torch.full((1,), cam, device=pose.device)
    for half_deg, count in STAGES:
        turns = so3_exp(_rotation_grid(half_deg, count, pose.device, pose.dtype))
        rotations = turns @ best  # world-frame turns about the camera centre
        candidates = torch.cat([rotations, pose[None, :3, 3:].expand(len(turns), 3, 1)], -1)
        errors = _render_errors(renderer, candidates, cams.expand(len(candidates)), pixels,
                                targets, intrinsics, background)
        i = int(torch.argmin(errors))
        best, best_error = rotations[i], float(errors[i])
    return best, best_error


def relocalize_lost_cameras(renderer, pose_params, optimizer, images: torch.Tensor, intrinsics,
                            background: torch.Tensor) -> list[dict[str, Any]]:
    """Find the lost cameras and search their rotations (see the module); changes the rotation
    deltas of the cameras whose search succeeds and restarts their rows of ``optimizer``'s state.

    Returns one record per lost camera: ``camera``, ``error_before``, ``error_found``,
    ``turn_deg`` (the rotation the search moved it by) and ``moved`` (whether it was applied).
    """
    was_training = renderer.training
    renderer.eval()
    try:
        poses = pose_params.get_poses()
        errors, pixels, targets = camera_errors(renderer, poses, images, intrinsics, background)
        threshold = max(LOST_FACTOR * float(errors.median()), ERROR_FLOOR)
        lost = torch.nonzero(errors > threshold).reshape(-1).tolist()
        records = []
        for cam in lost:
            rotation, found = _search(renderer, poses[cam], cam, pixels, targets, intrinsics,
                                      background)
            turn = float(torch.rad2deg(so3_log(rotation @ poses[cam, :3, :3].T).norm()))
            moved = found < ACCEPT_RATIO * float(errors[cam]) and turn >= MIN_TURN_DEG
            if moved:
                _set_rotation(pose_params, optimizer, cam, rotation)
            records.append({"camera": cam, "error_before": float(errors[cam]),
                            "error_found": found, "turn_deg": turn, "moved": moved})
        return records
    finally:
        renderer.train(was_training)


@torch.no_grad()
def _set_rotation(pose_params, optimizer, cam: int, rotation: torch.Tensor) -> None:
    """Make camera ``cam``'s rotation ``rotation`` (``R = exp(w) R0``: ``w = log(R R0^T)``) and
    restart its row of the optimiser state."""
    delta = pose_params.rotation_delta
    r0 = pose_params.initial_poses[cam, :3, :3].to(rotation.dtype)
    delta[cam] = so3_log(rotation @ r0.T).to(delta.dtype)
    group = next(g for g in optimizer.param_groups if any(p is delta for p in g["params"]))
    states = [optimizer.state[p] for p in group["params"] if p in optimizer.state]
    for state in states:  # the per-camera group only (not a shared shift's or rig's row)
        for key, value in state.items():
            if not torch.is_tensor(value) or value.dim() == 0:
                continue
            if key == "travel_scale":
                value[cam] = 1.0
            elif key == "travel_start":
                value[cam] = delta[cam].to(value.dtype)
            elif value.shape[0] == delta.shape[0]:  # per-camera rows: moments, travel_previous
                value[cam] = 0.0


def relocalize_for_trainer(trainer, step: int) -> list[dict[str, Any]]:
    """:func:`relocalize_lost_cameras` on a :class:`~taichi_nerf.training.Trainer`'s state (its
    field, poses, pose optimiser, training images), logged to its text log."""
    if "rotation_delta" not in dict(trainer.pose_params.named_parameters()):
        return []  # rotations not learned
    records = relocalize_lost_cameras(trainer.renderer, trainer.pose_params,
                                      trainer.pose_opt.optimizer, trainer.sampler.images,
                                      trainer.intrinsics, trainer.background)
    trainer.logger.text(f"relocalize at step {step}: {len(records)} lost camera(s)" + "".join(
        f"; camera {r['camera']}: error {r['error_before']:.5f} -> {r['error_found']:.5f} "
        f"turning {r['turn_deg']:.2f} deg, {'moved' if r['moved'] else 'kept'}"
        for r in records))
    return records
