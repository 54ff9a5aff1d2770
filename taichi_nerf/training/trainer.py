"""``train_with_pose_optimization``: a NeRF and the training camera poses, optimised together.

Each step: a uniform batch of training pixels -> rays from the **current** poses
(``CameraPoseParameters``, so the rays carry gradients to the pose deltas) -> render -> MSE ->
backward -> two Adams (field; poses) with their own exponential decays and gradient clipping.
Poses start moving after ``pose_opt_delay`` steps. The ngp preset sizes its ray batch to a
sample budget (nerfacc's rule: ``rays *= target_samples / last_step_samples``).

Outputs under ``{output_dir}/{experiment_name}/`` (see the README): ``config.json``,
``experiment_config.json``, ``checkpoint_{step}.pt``, ``checkpoint_latest.pt``,
``checkpoint_best.pt``, ``final_poses.pt``, ``metrics.json``, ``images/``, ``logs/``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from taichi_nerf.training.checkpoint import (
    atomic_torch_save,
    load_checkpoint,
    resolve_resume_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from taichi_nerf.training.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    experiment_name,
    learns_poses,
    preset_name,
    resolve_config,
    resolve_device,
)
from taichi_nerf.training.eval import (
    build_metrics,
    evaluate_test_split,
    fit_test_alignment,
    make_renderer,
    psnr,
    write_json,
)
from taichi_nerf.training.logging import RunLogger, save_png

__all__ = ["train_with_pose_optimization", "TrainingError"]

MIN_BATCH_RAYS = 256  # floor of the adapted ray count: pose gradients need rays on many cameras


class TrainingError(RuntimeError):
    """Training stopped (non-finite loss); the message names the last good checkpoint."""


def _check_output_dir(output_dir: Path) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to output dir {output_dir}: "
                          f"{exc.strerror or exc}; pass a writable --output-dir") from None


def _new_run_dir(cfg: TrainConfig) -> Path:
    root = Path(cfg.output_dir)
    if cfg.experiment_name:
        run_dir = root / cfg.experiment_name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(
                f"{run_dir} already exists; continue it with --resume latest --experiment-name "
                f"{cfg.experiment_name}, or choose another --experiment-name")
    else:
        base = experiment_name(cfg, time.strftime("%Y%m%d_%H%M%S"))
        run_dir, k = root / base, 1
        while run_dir.exists():  # two runs in one second: never share a folder
            k += 1
            run_dir = root / f"{base}_{k}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "images").mkdir(exist_ok=True)
        (run_dir / "logs").mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create run folder {run_dir}: {exc.strerror or exc}") from None
    return run_dir


def _resume_config(config: TrainConfig, saved: dict[str, Any]) -> TrainConfig:
    """The saved run's config; only the flags that make sense to change on resume carry over."""
    cfg = config_from_dict(saved)
    changes: dict[str, Any] = {"resume": config.resume, "stop_after": config.stop_after,
                               "progress": config.progress, "device": config.device,
                               "eval": config.eval}
    for name in ("num_iters", "val_every"):  # preset fields: None means "not given"
        if getattr(config, name) is not None:
            changes[name] = getattr(config, name)
    return dataclasses.replace(cfg, **changes)


def _lr_gamma(start: float, end: float, steps: int) -> float:
    return (end / start) ** (1.0 / max(steps, 1))


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except ImportError:  # pragma: no cover - not on Linux/macOS
        return 0


def _experiment_info(cfg: TrainConfig, run_dir: Path, device: torch.device, train_set) -> dict:
    import taichi_nerf
    from taichi_nerf.training.eval import device_name

    return {
        "experiment_name": run_dir.name, "scene": cfg.scene, "model": cfg.model,
        "preset": preset_name(cfg.model, device), "init_mode": cfg.init_mode,
        "rotation_noise_deg": cfg.rotation_noise if cfg.init_mode == "noisy" else 0.0,
        "translation_noise": cfg.translation_noise if cfg.init_mode == "noisy" else None,
        "translation_noise_pct": (cfg.translation_noise_pct if cfg.init_mode == "noisy"
                                  else 0.0),
        "noise_seed": cfg.noise_seed, "noise_protocol": cfg.noise_protocol,
        "learn_rotation": cfg.learn_rotation and not cfg.fixed_poses,
        "learn_translation": cfg.learn_translation and not cfg.fixed_poses,
        "num_train_images": len(train_set), "image_size": [train_set.width, train_set.height],
        "device": device_name(device), "command": sys.argv,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": {"taichi_nerf": taichi_nerf.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }


class _Validator:
    """Val PSNR on the first few val views, rendered from the learned frame."""

    def __init__(self, val_set, count: int, device, background, chunk: int):
        self.val_set, self.device, self.background, self.chunk = val_set, device, background, chunk
        self.count = min(count, len(val_set)) if val_set is not None else 0

    @torch.no_grad()
    def __call__(self, renderer, learned, gt, step, images_dir: Path, logger: RunLogger):
        if self.count == 0:
            return None
        from taichi_nerf.poses import apply_sim3_to_poses
        from taichi_nerf.rays import image_rays
        from taichi_nerf.render import render_image

        renderer.eval()
        poses = self.val_set.poses[:self.count].to(self.device)
        alignment = fit_test_alignment(learned, gt)
        if alignment is not None:
            poses = apply_sim3_to_poses(poses.double(), *alignment).to(torch.float32)
        values = []
        for k in range(self.count):
            vs = self.val_set
            rays_o, rays_d = image_rays(poses[k], vs.intrinsics[k].to(self.device),
                                        vs.width, vs.height)
            out = render_image(renderer, rays_o, rays_d, background=self.background,
                               chunk=self.chunk, height=vs.height, width=vs.width)
            rgb = out["rgb"].clamp(0, 1)
            target = vs.images[k].to(self.device, torch.float32) / 255.0
            values.append(psnr(rgb, target))
            save_png(images_dir / f"val_{step:06d}_{k:02d}.png", rgb)
            logger.image(f"val/view_{k:02d}", torch.cat([rgb, target], dim=1), step)
        renderer.train()
        return sum(values) / len(values)


def train_with_pose_optimization(config: TrainConfig) -> dict[str, Any]:
    """Train a radiance field and (unless fixed) the training camera poses.

    Args:
        config: a :class:`~taichi_nerf.training.config.TrainConfig`; ``None`` fields take the
            ``--model`` preset's values.

    Returns:
        dict with ``output_dir`` (Path), ``metrics`` (the metrics.json dict), ``history`` (list of
        ``{step, wall_time_s, train_psnr, val_psnr|None, rotation_error_mean,
        translation_error_mean}``), ``iters_per_sec``, ``peak_memory_bytes``,
        ``final_pose_errors``.

    Raises:
        ConfigError / CheckpointError / DatasetError (all ``ValueError``): bad flags, paths or
            data, with a one-line message.
        TrainingError: the loss became non-finite; the last good checkpoint is left intact.
    """
    import taichi_nerf
    from taichi_nerf.data import PixelSampler, load_scene
    from taichi_nerf.poses import CameraPoseParameters, perturb_poses, pose_errors
    from taichi_nerf.rays import pixels_to_rays

    device = resolve_device(config.device)
    state = None
    if config.resume:
        resume_path = resolve_resume_path(config.resume, config.output_dir, config.experiment_name)
        state = load_checkpoint(resume_path)
        cfg = _resume_config(config, state["config"])
        run_dir = resume_path.resolve().parent
        _check_output_dir(run_dir)
    else:
        cfg = resolve_config(config, device)
        _check_output_dir(Path(cfg.output_dir))
    taichi_nerf.init(device.type)

    scenes = load_scene(cfg.scene, cfg.data_dir, splits=("train", "val", "test"),
                        downscale=cfg.downscale, background=cfg.background)
    train_set = scenes["train"]
    gt_poses = train_set.poses.to(device)
    if state is not None:
        init_poses = state["initial_poses"].to(device)
    elif cfg.init_mode == "noisy":
        init_poses = perturb_poses(
            gt_poses, rotation_noise_deg=cfg.rotation_noise,
            translation_noise=cfg.translation_noise,
            translation_noise_pct=cfg.translation_noise_pct, seed=cfg.noise_seed,
            protocol=cfg.noise_protocol)
    else:
        init_poses = gt_poses.clone()
    if state is None:
        run_dir = _new_run_dir(cfg)
        write_json(run_dir / "experiment_config.json",
                   _experiment_info(cfg, run_dir, device, train_set))
    write_json(run_dir / "config.json", config_to_dict(cfg))
    learn_rotation = cfg.learn_rotation and not cfg.fixed_poses
    learn_translation = cfg.learn_translation and not cfg.fixed_poses
    logger = RunLogger(run_dir, purge_step=None if state is None else int(state["step"]) + 1)
    if cfg.init_mode == "noisy" and not learns_poses(cfg) and not cfg.fixed_poses:
        message = ("--no-learn-rotation and --no-learn-translation with --init-mode noisy: "
                   "the noisy poses stay fixed during training")
        warnings.warn(message, stacklevel=2)
        logger.text("warning: " + message)

    torch.manual_seed(cfg.seed)
    renderer = make_renderer(cfg, train_set.scene_aabb, train_set.near, train_set.far,
                             train_set.width).to(device)
    pose_params = CameraPoseParameters(init_poses, learn_rotation=learn_rotation,
                                       learn_translation=learn_translation).to(device)
    sampler = PixelSampler(train_set.images, seed=cfg.seed, device=device)
    intrinsics = train_set.intrinsics.to(device)
    background = torch.tensor(cfg.background, dtype=torch.float32, device=device)
    is_ngp = cfg.model == "ngp"
    field_opt = torch.optim.Adam(renderer.parameters(), lr=cfg.lr,
                                 **(dict(betas=(0.9, 0.99), eps=1e-15) if is_ngp else {}))
    field_sched = torch.optim.lr_scheduler.ExponentialLR(
        field_opt, _lr_gamma(cfg.lr, cfg.lr_final, cfg.num_iters))
    pose_opt = pose_sched = None
    if learn_rotation or learn_translation:
        pose_opt = torch.optim.Adam(pose_params.parameters(), lr=cfg.pose_lr)
        pose_sched = torch.optim.lr_scheduler.ExponentialLR(
            pose_opt, _lr_gamma(cfg.pose_lr, cfg.pose_lr_final, cfg.num_iters - cfg.pose_opt_delay))
    adapt = is_ngp and (cfg.ngp.target_samples or 0) > 0
    num_rays = cfg.batch_size
    step, history, best_val, elapsed, val_metrics = 0, [], -math.inf, 0.0, {}
    if state is not None:
        renderer.load_state_dict(state["renderer"])
        pose_params.load_state_dict(state["poses"])
        field_opt.load_state_dict(state["field_optimizer"])
        field_sched.load_state_dict(state["field_scheduler"])
        if pose_opt is not None and state.get("pose_optimizer") is not None:
            pose_opt.load_state_dict(state["pose_optimizer"])
            pose_sched.load_state_dict(state["pose_scheduler"])
        set_rng_state(state["rng"], sampler, renderer)
        step, num_rays = int(state["step"]), int(state["num_rays"])
        history, best_val = list(state.get("history", [])), float(state.get("best_val_psnr", -1e9))
        elapsed, val_metrics = float(state.get("elapsed_s", 0.0)), dict(state.get("val_metrics", {}))
        logger.text(f"resumed from {resume_path} at step {step}")
    else:
        logger.text(f"start: {run_dir.name} model={cfg.model} device={device} "
                    f"preset={preset_name(cfg.model, device)}")
    initial_errors = pose_errors(init_poses, gt_poses, align=True)
    logger.text("initial pose errors: rot {:.4f} deg, trans {:.5f}".format(
        initial_errors["rotation_error_mean"], initial_errors["translation_error_mean"]))

    validate = _Validator(scenes.get("val"), cfg.num_val_views, device, background,
                          cfg.ngp.eval_chunk)
    last_checkpoint: Path | None = (run_dir / "checkpoint_latest.pt") if state else None

    def checkpoint(val_psnr: float | None, errors: dict[str, float]) -> Path:
        nonlocal best_val
        is_best = val_psnr is not None and val_psnr > best_val
        if is_best:
            best_val = val_psnr
        payload = {
            "step": step, "config": config_to_dict(cfg), "renderer": renderer.state_dict(),
            "poses": pose_params.state_dict(), "initial_poses": init_poses.detach().cpu(),
            "ground_truth_poses": gt_poses.cpu(),
            "field_optimizer": field_opt.state_dict(), "field_scheduler": field_sched.state_dict(),
            "pose_optimizer": pose_opt.state_dict() if pose_opt else None,
            "pose_scheduler": pose_sched.state_dict() if pose_sched else None,
            "rng": rng_state(sampler, renderer),
            "num_rays": num_rays,
            "pose_errors": errors, "val_metrics": val_metrics,
            "best_val_psnr": best_val if math.isfinite(best_val) else -1e9,
            "history": history, "elapsed_s": elapsed,
        }
        return save_checkpoint(run_dir, payload, is_best=is_best or not
                               (run_dir / "checkpoint_best.pt").exists(),
                               keep=cfg.keep_checkpoints)

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.num_iters, initial=step, disable=not cfg.progress, dynamic_ncols=True,
               desc=run_dir.name[:40])
    steps_this_run, loop_time = 0, 0.0
    renderer.train()
    try:
        while step < cfg.num_iters:
            tic = time.perf_counter()
            renderer.update_step(step)
            camera_ids, pixels, target = sampler.sample(num_rays)
            move_poses = pose_opt is not None and step >= cfg.pose_opt_delay
            with torch.set_grad_enabled(move_poses):
                poses = pose_params()
            rays_o, rays_d = pixels_to_rays(pixels, camera_ids, poses, intrinsics)
            out = renderer.render_rays(rays_o, rays_d, background=background, train=True)
            mse = F.mse_loss(out["rgb"], target)
            loss = mse + F.mse_loss(out["rgb_coarse"], target) if "rgb_coarse" in out else mse
            if not torch.isfinite(loss):
                where = last_checkpoint if last_checkpoint else "none written yet"
                raise TrainingError(f"loss became non-finite ({loss.item()}) at step {step + 1}; "
                                    f"training stopped, last good checkpoint: {where}")
            field_opt.zero_grad(set_to_none=True)
            if pose_opt is not None:
                pose_opt.zero_grad(set_to_none=True)
            if loss.requires_grad:  # an empty batch (no samples, poses frozen) has no graph
                loss.backward()
            if cfg.field_grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(renderer.parameters(), cfg.field_grad_clip)
            field_opt.step()
            field_sched.step()
            if move_poses:
                if cfg.pose_grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(pose_params.parameters(), cfg.pose_grad_clip)
                pose_opt.step()
                pose_sched.step()
            step += 1
            steps_this_run += 1
            if adapt:
                # A pruned sample still had a no-grad density pass, about a quarter of the cost
                # of a shaded sample's forward + backward: count it as such in the budget.
                pruned = int(out.get("num_marched", out["num_samples"])) - int(out["num_samples"])
                samples = max(int(out["num_samples"]) + pruned // 4, 1)
                num_rays = int(num_rays * cfg.ngp.target_samples / samples)
                num_rays = max(MIN_BATCH_RAYS, min(num_rays, cfg.ngp.max_batch_rays))
            dt = time.perf_counter() - tic
            loop_time += dt
            elapsed += dt

            val_now = step % cfg.val_every == 0 or step == cfg.num_iters
            stop_now = cfg.stop_after is not None and step >= cfg.stop_after
            if step % cfg.log_every == 0 or val_now or stop_now or step == 1:
                learned = pose_params.get_poses()
                errors = pose_errors(learned, gt_poses, align=val_now or stop_now)
                train_psnr = -10.0 * math.log10(max(mse.item(), 1e-12))
                entry = {"step": step, "wall_time_s": elapsed, "train_psnr": train_psnr,
                         "val_psnr": None, "loss": loss.item(), "num_rays": num_rays,
                         "num_samples": int(out["num_samples"]),
                         "rotation_error_mean": errors["rotation_error_mean"],
                         "translation_error_mean": errors["translation_error_mean"]}
                if val_now:
                    val_psnr = validate(renderer, learned, gt_poses, step, run_dir / "images",
                                        logger)
                    entry["val_psnr"] = val_psnr
                    val_metrics = {"step": step, "val_psnr": val_psnr}
                history.append(entry)
                logger.scalars({"train/loss": entry["loss"], "train/psnr": train_psnr,
                                "val/psnr": entry["val_psnr"],
                                "poses/rotation_error_deg": errors["rotation_error_mean"],
                                "poses/translation_error": errors["translation_error_mean"],
                                "lr/field": field_opt.param_groups[0]["lr"],
                                "lr/pose": pose_opt.param_groups[0]["lr"] if pose_opt else None,
                                "train/num_rays": num_rays,
                                "train/num_samples": int(out["num_samples"])}, step)
                bar.set_postfix(loss=f"{entry['loss']:.4f}", psnr=f"{train_psnr:.2f}",
                                rot=f"{errors['rotation_error_mean']:.3f}",
                                trans=f"{errors['translation_error_mean']:.4f}", refresh=False)
                if val_now or stop_now:
                    last_checkpoint = checkpoint(entry["val_psnr"], errors)
                    val_text = "-" if entry["val_psnr"] is None else f"{entry['val_psnr']:.2f}"
                    logger.text(
                        f"step {step}: loss {entry['loss']:.5f} train_psnr {train_psnr:.2f} "
                        f"val_psnr {val_text} "
                        f"rot {errors['rotation_error_mean']:.4f} deg "
                        f"trans {errors['translation_error_mean']:.5f} rays {num_rays}")
                    logger.flush()
            bar.update(1)
            if stop_now:
                break
    finally:
        bar.close()
        if sys.exc_info()[0] is not None:
            logger.text(f"stopped: {sys.exc_info()[1]}")
            logger.close()

    final_poses = pose_params.get_poses()
    final_errors = pose_errors(final_poses, gt_poses, align=True)
    iters_per_sec = steps_this_run / loop_time if loop_time > 0 else 0.0
    result: dict[str, Any] = {"output_dir": run_dir, "history": history,
                              "iters_per_sec": iters_per_sec,
                              "peak_memory_bytes": _peak_memory_bytes(device),
                              "final_pose_errors": final_errors, "metrics": None}
    if step < cfg.num_iters:  # --stop-after: an interrupted run, resumable; no final outputs
        logger.text(f"stopped after step {step} (--stop-after); resume with --resume {run_dir}")
        logger.close()
        return result

    atomic_torch_save({"initial_poses": init_poses.detach().cpu(),
                       "optimized_poses": final_poses.cpu(),
                       "ground_truth_poses": gt_poses.cpu(),
                       "pose_errors": final_errors,
                       "initial_pose_errors": initial_errors,
                       "file_paths": list(train_set.file_paths)},
                      run_dir / "final_poses.pt")
    test = evaluate_test_split(renderer, scenes["test"], final_poses, gt_poses,
                               eval_config=cfg.eval, background=background,
                               images_dir=run_dir / "images", chunk=cfg.ngp.eval_chunk,
                               device=device, seed=cfg.seed)
    metrics = build_metrics(cfg, test, final_errors, initial_errors, step=step,
                            checkpoint="checkpoint_latest.pt", device=device,
                            extra={"train_time_s": elapsed, "iters_per_sec": iters_per_sec,
                                   "peak_memory_bytes": result["peak_memory_bytes"],
                                   "best_val_psnr": best_val if math.isfinite(best_val) else None})
    write_json(run_dir / "metrics.json", metrics)
    logger.scalars({"test/psnr": test["psnr"], "test/ssim": test["ssim"]}, step)
    logger.text("done: test psnr {:.2f} ssim {:.4f}; rotation error {:.4f} -> {:.4f} deg, "
                "translation error {:.5f} -> {:.5f}".format(
                    test["psnr"], test["ssim"], initial_errors["rotation_error_mean"],
                    final_errors["rotation_error_mean"], initial_errors["translation_error_mean"],
                    final_errors["translation_error_mean"]))
    logger.close()
    result["metrics"] = metrics
    return result
