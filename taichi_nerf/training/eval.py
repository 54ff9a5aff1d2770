"""Evaluation on the test split: PSNR, SSIM, pose errors, optional test-time pose refinement.

Protocol (DESIGN.md "Evaluation"): when the training poses moved, the field lives in the learned
frame, so the ground-truth test poses are first moved by the Sim(3) that maps the ground-truth
training camera centres onto the learned ones (Umeyama; orientations turned by its rotation).
BARF's test-time refinement (optional) then gives each test view a fresh zero pose delta and runs
Adam on its photometric loss with the field frozen. ``metrics.json`` says which was used.

SSIM is the NeRF/mip-NeRF one: 11x11 Gaussian window (sigma 1.5), separable, "valid" filtering
(no padding), K1 = 0.01, K2 = 0.03, averaged over pixels and channels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from taichi_nerf.training.checkpoint import write_json
from taichi_nerf.training.config import (
    EvalConfig,
    TrainConfig,
    config_from_dict,
    resolve_config,
    resolve_device,
)
from taichi_nerf.training.logging import save_png
from taichi_nerf.training.plots import save_comparison_panel
from taichi_nerf.training.rundir import device_name

__all__ = ["mse_to_psnr", "psnr", "ssim", "fit_test_alignment", "aligned_poses",
           "mean_camera_turn", "render_views",
           "refine_test_pose", "evaluate_test_split", "evaluate_run"]


def mse_to_psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error of values in [0, 1] (inf for 0)."""
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (any shape)."""
    return mse_to_psnr(F.mse_loss(pred.double(), target.double()).item())


def ssim(pred: torch.Tensor, target: torch.Tensor, *, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03, max_val: float = 1.0) -> float:
    """Structural similarity of two ``[H,W,C]`` images in [0, max_val] (mip-NeRF's definition)."""
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"ssim needs two [H,W,C] images of one shape, got {list(pred.shape)} "
                         f"and {list(target.shape)}")
    if min(pred.shape[:2]) < window:
        raise ValueError(f"ssim needs images of at least {window}x{window} pixels")
    x = pred.detach().double().permute(2, 0, 1)[:, None]
    y = target.detach().double().to(x.device).permute(2, 0, 1)[:, None]
    coords = torch.arange(window, dtype=torch.float64, device=x.device) - (window - 1) / 2
    g = torch.exp(-0.5 * (coords / sigma) ** 2)
    g = g / g.sum()

    def blur(z):
        return F.conv2d(F.conv2d(z, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))

    mu_x, mu_y = blur(x), blur(y)
    var_x = (blur(x * x) - mu_x**2).clamp_min(0)
    var_y = (blur(y * y) - mu_y**2).clamp_min(0)
    cov = blur(x * y) - mu_x * mu_y
    # Clip the covariance to what Cauchy-Schwarz allows (rounding can exceed it), as mip-NeRF.
    cov = torch.sign(cov) * torch.minimum(torch.sqrt(var_x * var_y), cov.abs())
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    numer = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denom = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float((numer / denom).mean())


def fit_test_alignment(learned_train_poses: torch.Tensor, gt_train_poses: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Sim(3) ``(s, R, t)`` taking the ground-truth frame to the learned one (fitted on training
    camera centres), or None when the learned poses are the ground truth (nothing to align)."""
    from taichi_nerf.poses import align_sim3

    if torch.equal(learned_train_poses.cpu(), gt_train_poses.cpu()):
        return None
    return align_sim3(gt_train_poses[:, :, 3].double(), learned_train_poses[:, :, 3].double())


def refine_test_pose(renderer, pose: torch.Tensor, image: torch.Tensor, intrinsics: torch.Tensor,
                     background: torch.Tensor, *, steps: int = 100, lr: float = 1e-3,
                     rays: int = 1024, seed: int = 0) -> torch.Tensor:
    """BARF test-time refinement of one camera: a fresh zero delta, Adam on ``rays`` random pixels
    of ``image`` (``uint8 [H,W,3]``) per step, field frozen. Returns the refined ``[3,4]`` pose."""
    from taichi_nerf.poses import CameraPoseParameters
    from taichi_nerf.rays import pixels_to_rays

    device = pose.device
    params = CameraPoseParameters(pose[None].detach())
    optimizer = torch.optim.Adam(params.parameters(), lr=lr)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    height, width = image.shape[:2]
    frozen = [p for p in renderer.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            flat = torch.randint(0, height * width, (rays,), generator=generator).to(device)
            pixels = torch.stack([flat % width, flat // width], -1)
            target = image.reshape(-1, 3)[flat].to(device=device, dtype=torch.float32) / 255.0
            cam = torch.zeros(rays, dtype=torch.long, device=device)
            rays_o, rays_d = pixels_to_rays(pixels, cam, params(), intrinsics.reshape(1, 4))
            out = renderer.render_rays(rays_o, rays_d, background=background, train=False)
            loss = F.mse_loss(out["rgb"], target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return params.get_poses()[0]


def _stem(image_set, k: int) -> str:
    """A file-name-safe name of view ``k``'s source image (``r_12`` for ``test/r_12.png``)."""
    name = Path(str(image_set.file_paths[k])).stem
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or f"view{k}"


def aligned_poses(image_set, count: int, learned_train_poses: torch.Tensor,
                  gt_train_poses: torch.Tensor, device) -> tuple[torch.Tensor, str]:
    """The first ``count`` poses of a held-out split in the learned frame ``[count, 3, 4]``,
    and the name of the alignment used (``sim3_and_camera_turn_from_train_cameras`` or
    ``none``): the Sim(3) of :func:`fit_test_alignment`, then :func:`mean_camera_turn`."""
    from taichi_nerf.poses import apply_sim3_to_poses, so3_exp

    poses = image_set.poses[:count].to(device)
    alignment = fit_test_alignment(learned_train_poses, gt_train_poses)
    if alignment is None:
        return poses, "none"
    moved = apply_sim3_to_poses(poses.double(), *alignment)
    turn = mean_camera_turn(learned_train_poses, gt_train_poses, alignment).to(moved)
    moved = torch.cat([moved[:, :, :3] @ so3_exp(turn), moved[:, :, 3:]], -1)
    return moved.to(torch.float32), "sim3_and_camera_turn_from_train_cameras"


def mean_camera_turn(learned_train_poses: torch.Tensor, gt_train_poses: torch.Tensor,
                     alignment) -> torch.Tensor:
    """The training cameras' mean residual turn ``[3]`` (axis-angle, **camera** axes) after the
    Sim(3) ``alignment``: ``R_learned ~ R_aligned_gt exp(turn)``.

    Joint optimisation can leave every camera turned the same small way in its own frame (e.g.
    all pitched up 0.1 degrees, a weakly seen common mode with the field following it), which no
    Sim(3) of the centres captures. The field is consistent with those turned cameras, so a
    held-out camera gets the same turn; it is read from training cameras only (no test image
    is used, unlike test-time refinement).
    """
    from taichi_nerf.poses import apply_sim3_to_poses, so3_log

    gt = apply_sim3_to_poses(gt_train_poses.double(), *alignment)
    learned = learned_train_poses.double().to(gt.device)
    return so3_log(gt[:, :, :3].transpose(1, 2) @ learned[:, :, :3]).mean(0)


def render_views(renderer, image_set, poses: torch.Tensor, *, background: torch.Tensor,
                 chunk: int, device, pose_fn=None):
    """Render views ``k = 0..len(poses)-1`` of ``image_set``; yields ``(k, rgb, target)``
    (``[H,W,3]`` float in [0,1]). ``pose_fn(k, pose, image)`` may replace a pose first
    (test-time refinement). The one loop validation and testing share."""
    from taichi_nerf.rays import image_rays
    from taichi_nerf.render import render_image

    renderer.eval()
    for k in range(len(poses)):
        image = image_set.images[k].to(device)
        intrinsics = image_set.intrinsics[k].to(device)
        pose = poses[k] if pose_fn is None else pose_fn(k, poses[k], image, intrinsics)
        with torch.no_grad():
            rays_o, rays_d = image_rays(pose, intrinsics, image_set.width, image_set.height)
            out = render_image(renderer, rays_o, rays_d, background=background, chunk=chunk,
                               height=image_set.height, width=image_set.width)
        yield k, out["rgb"].clamp(0, 1), image.to(torch.float32) / 255.0


def evaluate_test_split(renderer, test_set, learned_train_poses: torch.Tensor,
                        gt_train_poses: torch.Tensor, *, eval_config: EvalConfig,
                        background: torch.Tensor, images_dir: Path | None, chunk: int = 16384,
                        device: torch.device | str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Render the test views and score them.

    Args:
        renderer: a trained renderer (switched to eval mode here).
        test_set: the test ``ImageSet``.
        learned_train_poses, gt_train_poses: ``[N,3,4]`` training cameras (for the alignment).
        eval_config: view count and test-time refinement settings.
        images_dir: where ``test_{k:03d}.png`` renders and ``compare_test_{k:03d}_{source}.png``
            panels (render | ground truth | error) go (None: not written).

    Returns:
        dict with ``psnr``, ``ssim`` (means), ``num_views``, ``pose_alignment``,
        ``test_time_refinement``, ``per_view`` list.
    """
    device = torch.device(device)
    count = len(test_set) if eval_config.num_test_views is None else min(
        eval_config.num_test_views, len(test_set))
    poses, alignment = aligned_poses(test_set, count, learned_train_poses, gt_train_poses,
                                     device)

    def refine(k, pose, image, intrinsics):
        return refine_test_pose(renderer, pose, image, intrinsics, background,
                                steps=eval_config.refine_steps, lr=eval_config.refine_lr,
                                rays=eval_config.refine_rays, seed=seed + k)

    per_view = []
    for k, rgb, target in render_views(renderer, test_set, poses, background=background,
                                       chunk=chunk, device=device,
                                       pose_fn=refine if eval_config.test_time_refine else None):
        per_view.append({"index": k, "file": test_set.file_paths[k], "psnr": psnr(rgb, target),
                         "ssim": ssim(rgb, target)})
        if images_dir is not None:
            save_png(Path(images_dir) / f"test_{k:03d}.png", rgb)
            save_comparison_panel(Path(images_dir) / f"compare_test_{k:03d}_"
                                  f"{_stem(test_set, k)}.png", rgb, target)
    return {
        "psnr": sum(v["psnr"] for v in per_view) / max(count, 1),
        "ssim": sum(v["ssim"] for v in per_view) / max(count, 1),
        "num_views": count,
        "pose_alignment": alignment,
        "test_time_refinement": bool(eval_config.test_time_refine),
        "per_view": per_view,
    }


def evaluate_run(run_dir: str | Path, checkpoint: str = "latest",
                 eval_config: EvalConfig | None = None, device: str = "auto",
                 data_dir: str | None = None, write: bool = True) -> dict[str, Any]:
    """Evaluate a finished (or interrupted) run folder; writes ``metrics.json`` and
    ``images/test_*.png`` into it when ``write``.

    Args:
        run_dir: ``outputs/<experiment>/``.
        checkpoint: ``latest``, ``best``, a step number, or a checkpoint path.
        eval_config: view count / test-time refinement (default: the run's own settings).
        data_dir: where the scene lives, if not where the run found it.
    """
    import taichi_nerf
    from taichi_nerf.data import load_scene
    from taichi_nerf.pose_metrics import pixel_units
    from taichi_nerf.poses import CameraPoseParameters, pose_errors
    from taichi_nerf.training.checkpoint import CheckpointError, load_checkpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir}")
    names = {"latest": "checkpoint_latest.pt", "best": "checkpoint_best.pt"}
    if checkpoint in names:
        path = run_dir / names[checkpoint]
    elif checkpoint.isdigit():
        path = run_dir / f"checkpoint_{checkpoint}.pt"
    else:
        path = Path(checkpoint)
    dev = resolve_device(device)
    taichi_nerf.init(dev.type)
    state = load_checkpoint(path)
    cfg = resolve_config(config_from_dict(state["config"]), dev)
    if eval_config is None:
        eval_config = cfg.eval
    test_set = load_scene(cfg.scene, data_dir if data_dir is not None else cfg.data_dir,
                          splits=("test",), downscale=cfg.downscale,
                          background=cfg.background, holdout_every=cfg.holdout_every)["test"]
    from taichi_nerf.models import make_renderer

    if cfg.model == "ngp" and cfg.ngp.marching_steps is None:  # a pre-resolve checkpoint
        cfg = resolve_config(cfg, dev, image_width=test_set.width)
    renderer = make_renderer(cfg, test_set.scene_aabb, test_set.near, test_set.far)
    renderer.load_state_dict(state["renderer"])
    renderer.to(dev)
    poses = CameraPoseParameters.from_state_dict(state["poses"])
    learned, gt = poses.get_poses(), state["ground_truth_poses"]
    background = torch.tensor(cfg.background, dtype=torch.float32, device=dev)
    images_dir = run_dir / "images" if write else None
    test = evaluate_test_split(
        renderer, test_set, learned.to(dev), gt.to(dev), eval_config=eval_config,
        background=background, images_dir=images_dir, chunk=renderer.eval_chunk, device=dev,
        seed=cfg.seed)
    units = pixel_units(test_set)
    initial = state["initial_poses"]
    metrics = build_metrics(cfg, test, pose_errors(learned, gt, initial=initial, **units),
                            pose_errors(initial, gt, align=True, **units),
                            step=int(state["step"]), checkpoint=path.name, device=dev)
    if write:
        write_json(run_dir / "metrics.json", metrics)
    return metrics


def build_metrics(cfg: TrainConfig, test: dict[str, Any], final_errors: dict[str, float],
                  initial_errors: dict[str, float], *, step: int, checkpoint: str,
                  device: torch.device, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``metrics.json`` dict (flat headline numbers first, details after)."""
    metrics: dict[str, Any] = {
        "scene": cfg.scene, "model": cfg.model, "init_mode": cfg.init_mode,
        "fixed_poses": cfg.pose_mode == "off", "pose_mode": cfg.pose_mode,
        "pose_preconditioning": cfg.pose_preconditioning, "step": step,
        "checkpoint": checkpoint, "device": device_name(device),
        "test_psnr": test["psnr"], "test_ssim": test["ssim"],
        "rotation_error_mean": final_errors["rotation_error_mean"],
        "rotation_error_px_mean": final_errors.get("rotation_error_px_mean"),
        "translation_error_px_mean": final_errors.get("translation_error_px_mean"),
        "translation_error_mean": final_errors["translation_error_mean"],
        "aligned_rotation_error_mean": final_errors.get("aligned_rotation_error_mean"),
        "aligned_translation_error_mean": final_errors.get("aligned_translation_error_mean"),
        "anchored_rotation_error_mean": final_errors.get("anchored_rotation_error_mean"),
        "anchored_rotation_error_px_mean": final_errors.get("anchored_rotation_error_px_mean"),
        "anchored_translation_error_mean": final_errors.get("anchored_translation_error_mean"),
        "test": test, "pose_errors": final_errors, "initial_pose_errors": initial_errors,
    }
    if extra:
        metrics.update(extra)
    return metrics
