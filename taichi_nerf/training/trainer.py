"""The training loop: a NeRF and the training camera poses, optimised together.

Read it top to bottom: :class:`Trainer` ``setup`` (data, config, poses, model, optimisers,
resume) -> ``step`` (sample pixels -> rays from the **current** poses -> render -> the model's
loss -> backward -> field and pose optimisers) -> ``log`` / ``validate`` / ``checkpoint`` ->
``finish`` (final poses, test evaluation, outputs). What differs between models (loss terms,
Adam settings, rays per step) is asked of the renderer (:mod:`taichi_nerf.models`); how poses
move (delay, schedule, clipping, CamP preconditioning) of the :class:`PoseOptimizer`.

Outputs under ``{output_dir}/{experiment_name}/`` (see the README): ``config.json``,
``experiment_config.json``, ``checkpoint_{step}.pt``, ``checkpoint_latest.pt``,
``checkpoint_best.pt``, ``final_poses.pt``, ``metrics.json``, ``history.json``, ``images/``,
``logs/``.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from taichi_nerf.training import checkpoint as ckpt
from taichi_nerf.training.config import (
    TrainConfig,
    config_to_dict,
    preset_name,
    resolve_config,
    resolve_device,
)
from taichi_nerf.training.eval import _stem, aligned_poses, mse_to_psnr, psnr, render_views
from taichi_nerf.training.logging import RunLogger, save_png
from taichi_nerf.training.plots import save_comparison_panel
from taichi_nerf.training.pose_opt import PoseOptimizer, build_pose_parameters
from taichi_nerf.training.rundir import (
    check_output_dir,
    experiment_info,
    new_run_dir,
    peak_memory_bytes,
)

__all__ = ["Trainer", "train_with_pose_optimization", "TrainingError"]

class TrainingError(RuntimeError):
    """Training stopped (non-finite values); the message names the last good checkpoint."""


class Trainer:
    """Joint NeRF + pose training for one (resolved) ``TrainConfig``.

    ``Trainer(config).train()`` is :func:`train_with_pose_optimization`; the parts are public so
    benchmarks and tools can drive single steps (``trainer.step()``).
    """

    def __init__(self, config: TrainConfig) -> None:
        self.setup(config)

    # ------------------------------------------------------------------ setup
    def setup(self, config: TrainConfig) -> None:
        """Data, the resolved config, poses, model, optimisers; a checkpoint's state if resuming."""
        import taichi_nerf
        from taichi_nerf.data import PixelSampler, load_scene

        state, self.resume_path, self.resume_target = None, None, None
        if config.resume:  # see taichi_nerf.training.resume: which run, which flags may change
            from taichi_nerf.training import resume

            config, state, self.resume_target = resume.prepare(config)
            self.resume_path = self.resume_target.checkpoint
        self.device = device = resolve_device(config.device)
        taichi_nerf.init(device.type)
        self.scenes = load_scene(config.scene, config.data_dir, splits=("train", "val", "test"),
                                 downscale=config.downscale, background=config.background,
                                 holdout_every=config.holdout_every)
        self.train_set = train = self.scenes["train"]
        self.has_truth = bool(getattr(train, "poses_are_ground_truth", True))
        self.cfg = cfg = resolve_config(config, device, image_width=train.width,
                                        poses_are_ground_truth=self.has_truth)
        self.viewer = None  # ViewerHook (--viewer): after_step(trainer, result), close()
        if cfg.viewer:  # viser missing, port taken: one line, before the run folder is made
            from taichi_nerf.viewer import check_viewer

            check_viewer(cfg.viewer_host, cfg.viewer_port)
        self.gt_poses = train.poses.to(device)
        self.init_poses = self._initial_poses(state)
        self.run_dir = self._open_run_dir(state)
        self.logger = RunLogger(self.run_dir,
                                purge_step=None if state is None else int(state["step"]) + 1)
        self._warn_fixed_noise()
        self._build_model()
        alphas = train.alphas if cfg.train_background == "random" else None
        self.sampler = PixelSampler(train.images, seed=cfg.seed, device=device, mode=cfg.sampler,
                                    alphas=alphas, edge_mix=cfg.edge_sampling)
        self.edge_start_step = int(math.ceil(cfg.edge_sampling_start * cfg.num_iters))
        self.relocalize_step = round(cfg.pose_relocalize * cfg.num_iters) \
            if cfg.pose_relocalize > 0 else -1
        self.random_background = alphas is not None
        if cfg.train_background == "random" and alphas is None:
            self.logger.text("--train-background random: the training images have no alpha, so "
                             "they train on --background")
        self.intrinsics = train.intrinsics.to(device)
        self.background = torch.tensor(cfg.background, dtype=torch.float32, device=device)
        self.step_count, self.num_rays, self.history = 0, cfg.batch_size, []
        self.best_val, self.elapsed, self.val_metrics = -math.inf, 0.0, {}
        self.last_checkpoint: Path | None = None
        if state is not None:
            self._restore(state)
        else:
            self.logger.text(f"start: {self.run_dir.name} model={cfg.model} device={device} "
                             f"preset={preset_name(cfg.model, device)}")
        from taichi_nerf.pose_metrics import pixel_units

        self.pixel_units = pixel_units(train)
        self.initial_errors = self.pose_errors(self.init_poses)
        self.logger.text("initial pose errors: rot {:.4f} deg ({:.3f} px), trans {:.5f}".format(
            self.initial_errors["rotation_error_mean"],
            self.initial_errors["rotation_error_px_mean"],
            self.initial_errors["translation_error_mean"]))

    def _initial_poses(self, state: dict | None) -> torch.Tensor:
        from taichi_nerf.poses import perturb_poses

        cfg = self.cfg
        if state is not None:
            return state["initial_poses"].to(self.device)
        if cfg.init_mode == "noisy":
            return perturb_poses(self.gt_poses, rotation_noise_deg=cfg.rotation_noise,
                                 translation_noise=cfg.translation_noise,
                                 translation_noise_pct=cfg.translation_noise_pct,
                                 seed=cfg.noise_seed, protocol=cfg.noise_protocol)
        return self.gt_poses.clone()

    def _open_run_dir(self, state: dict | None) -> Path:
        """The run folder, locked for this process: a new one, or the resumed run's (its stale
        temporary files removed). Checks that need the data come first, so a bad flag never
        leaves a folder behind."""
        from taichi_nerf.training.config import ConfigError
        from taichi_nerf.training.rundir import lock_run_dir

        test, cfg = self.scenes.get("test"), self.cfg
        if test is not None and len(test) and min(test.height, test.width) < 11:
            raise ConfigError(
                f"--downscale {cfg.downscale} makes the test images {test.width}x{test.height} "
                f"px, but SSIM needs at least 11x11 (its window): use --downscale "
                f"{max(1, cfg.downscale * min(test.height, test.width) // 11)} or less")
        if self.resume_target is None:
            check_output_dir(Path(cfg.output_dir))
            run_dir = new_run_dir(cfg)
        else:
            run_dir = self.resume_target.run_dir.resolve()
            check_output_dir(run_dir)
            lock_run_dir(run_dir)
            stale = ckpt.remove_stale_temp_files(run_dir)
            if stale:
                warnings.warn(f"removed {len(stale)} temporary file(s) a killed run left in "
                              f"{run_dir}: {', '.join(stale)}", stacklevel=3)
        if state is None:
            if self.resume_target is not None:
                warnings.warn(f"{run_dir} has no checkpoint yet (its run stopped before the "
                              f"first one): starting it again from step 0 with its saved "
                              f"settings", stacklevel=3)
                for events in (run_dir / "logs").glob("events.out.tfevents.*"):
                    events.unlink()  # the restarted run writes steps 1.. again
            ckpt.write_json(run_dir / "experiment_config.json",
                            experiment_info(cfg, run_dir, self.device, self.train_set))
        ckpt.write_json(run_dir / "config.json", config_to_dict(cfg))
        return run_dir

    def _warn_fixed_noise(self) -> None:
        cfg = self.cfg
        if cfg.init_mode == "noisy" and cfg.pose_mode == "off" and not cfg.fixed_poses:
            message = ("--no-learn-rotation and --no-learn-translation with --init-mode noisy: "
                       "the noisy poses stay fixed during training")
            warnings.warn(message, stacklevel=3)
            self.logger.text("warning: " + message)

    def _build_model(self) -> None:
        from taichi_nerf.models import make_renderer

        cfg, train = self.cfg, self.train_set
        torch.manual_seed(cfg.seed)
        self.renderer = make_renderer(cfg, train.scene_aabb, train.near, train.far).to(self.device)
        self.pose_params = build_pose_parameters(cfg, self.init_poses, train).to(self.device)
        self.field_opt = self.renderer.make_optimizer(cfg.lr)
        gamma = (cfg.lr_final / cfg.lr) ** (1.0 / max(cfg.num_iters, 1))
        self.field_sched = torch.optim.lr_scheduler.ExponentialLR(self.field_opt, gamma)
        self.pose_opt = PoseOptimizer(self.pose_params, cfg, scene_aabb=train.scene_aabb)

    def _restore(self, state: dict[str, Any]) -> None:
        self.renderer.load_state_dict(state["renderer"])
        try:
            self.pose_params.load_state_dict(state["poses"])
        except RuntimeError as exc:
            raise ckpt.CheckpointError(f"{self.resume_path}: pose parameters do not match this "
                                       f"run's settings ({str(exc).splitlines()[0]})") from None
        self.field_opt.load_state_dict(state["field_optimizer"])
        self.field_sched.load_state_dict(state["field_scheduler"])
        self.pose_opt.load_state_dict(state)
        ckpt.set_rng_state(state["rng"], self.sampler, self.renderer)
        self.step_count, self.num_rays = int(state["step"]), int(state["num_rays"])
        # a resume keeps the saved start, even with another --num-iters: edges on stay on
        self.edge_start_step = int(state.get("edge_start_step", self.edge_start_step))
        self.relocalize_step = int(state.get("relocalize_step", self.relocalize_step))
        self.history = list(state.get("history", []))
        self.best_val = float(state.get("best_val_psnr", -1e9))
        self.elapsed = float(state.get("elapsed_s", 0.0))
        self.val_metrics = dict(state.get("val_metrics", {}))
        self.last_checkpoint = self.run_dir / "checkpoint_latest.pt"
        self.logger.text(f"resumed from {self.resume_path} at step {self.step_count}")

    # ------------------------------------------------------------------ one step
    def step(self) -> dict[str, Any]:
        """One optimisation step; returns ``loss``, ``mse`` (tensors) and the render's counts."""
        step = self.step_count
        if step == self.relocalize_step and self.pose_opt.moving(step):
            from taichi_nerf.training.relocalize import relocalize_for_trainer

            relocalize_for_trainer(self, step)
        self.renderer.update_step(step)
        edges_on = step >= self.edge_start_step
        camera_ids, pixels, target = self.sampler.sample(self.num_rays,
                                                         None if edges_on else 0.0)
        background = self.background
        if self.random_background:
            background, target = self.sampler.random_background(camera_ids, pixels, target,
                                                                self.background)
        moving = self.pose_opt.moving(step)
        with torch.set_grad_enabled(moving):
            poses = self.pose_params()
        from taichi_nerf.rays import pixels_to_rays

        rays_o, rays_d = pixels_to_rays(pixels, camera_ids, poses, self.intrinsics)
        out = self.renderer.render_rays(rays_o, rays_d, background=background, train=True)
        loss, mse = self.renderer.training_loss(out, target)
        if moving:
            loss = loss + self.pose_opt.prior()
        self._check_finite(loss, step)
        self.field_opt.zero_grad(set_to_none=True)
        self.pose_opt.zero_grad()
        if loss.requires_grad:  # an empty batch (no samples, poses frozen) has no graph
            loss.backward()
        if self.cfg.field_grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.renderer.parameters(), self.cfg.field_grad_clip)
        self.field_opt.step()
        self.field_sched.step()
        self.pose_opt.step(step)
        self.step_count += 1
        rays_used = self.num_rays
        self.num_rays = self.renderer.next_num_rays(self.num_rays, out)
        return {"loss": loss, "mse": mse, "num_samples": int(out["num_samples"]),
                "num_rays": rays_used}

    def _check_finite(self, loss: torch.Tensor, step: int) -> None:
        """Stop at a non-finite loss, field parameter or pose parameter (the previous step's
        update: a non-finite gradient lands there), before anything renders or saves them.
        One host sync for all of them."""
        named = [("loss", loss.detach())]
        named += [(f"field parameter {n}", p) for n, p in self.renderer.named_parameters()]
        named += [(f"pose parameter {n}", p) for n, p in self.pose_params.named_parameters()]
        finite = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
        if not all(finite):
            bad = ", ".join(name for (name, _), ok in zip(named, finite) if not ok)
            raise TrainingError(f"{bad} became non-finite at step {step + 1}; "
                                f"{self._stopped_hint()}")

    def _stopped_hint(self) -> str:
        where = (f"{self.last_checkpoint} (continue with --resume {self.last_checkpoint})"
                 if self.last_checkpoint is not None else "none written yet")
        return (f"training stopped, last good checkpoint: {where}; a smaller --lr or --pose-lr "
                f"in a new run may avoid it")

    # ------------------------------------------------------------------ bookkeeping
    def pose_errors(self, poses: torch.Tensor, align: bool = True) -> dict[str, float]:
        """Errors of ``poses`` against the training set's poses, degrees/units and pixels."""
        from taichi_nerf.poses import pose_errors

        return pose_errors(poses, self.gt_poses, align=align, initial=self.init_poses,
                           **self.pixel_units)

    def log(self, result: dict[str, Any], validate_now: bool, final: bool) -> dict[str, Any]:
        """A history entry (and TensorBoard scalars, the tqdm line); validation when asked."""
        learned = self.pose_params.get_poses()
        errors = self.pose_errors(learned, align=validate_now or final)
        mse, loss = result["mse"].item(), result["loss"].item()
        entry = {"step": self.step_count, "wall_time_s": self.elapsed,
                 "train_psnr": mse_to_psnr(max(mse, 1e-12)), "val_psnr": None,
                 "loss": loss, "num_rays": result["num_rays"],
                 "num_samples": result["num_samples"],
                 "rotation_error_mean": errors["rotation_error_mean"],
                 "rotation_error_px_mean": errors["rotation_error_px_mean"],
                 "translation_error_mean": errors["translation_error_mean"],
                 "translation_error_px_mean": errors["translation_error_px_mean"]}
        if validate_now:
            entry["val_psnr"] = self.validate(learned)
            self.val_metrics = {"step": self.step_count, "val_psnr": entry["val_psnr"]}
        self.history.append(entry)
        what = "error" if self.has_truth else "moved_from_input"  # a capture has no truth
        self.logger.scalars({
            "train/loss": loss, "train/psnr": entry["train_psnr"], "val/psnr": entry["val_psnr"],
            f"poses/rotation_{what}_deg": entry["rotation_error_mean"],
            f"poses/rotation_{what}_px": entry["rotation_error_px_mean"],
            f"poses/translation_{what}": entry["translation_error_mean"],
            "lr/field": self.field_opt.param_groups[0]["lr"], "lr/pose": self.pose_opt.lr,
            "train/num_rays": entry["num_rays"], "train/num_samples": entry["num_samples"]},
            self.step_count)
        if validate_now or final:
            self.last_checkpoint = self.checkpoint(entry["val_psnr"], errors)
            self._log_text(entry)
        return entry

    def _log_text(self, entry: dict[str, Any]) -> None:
        val = "-" if entry["val_psnr"] is None else f"{entry['val_psnr']:.2f}"
        self.logger.text(
            f"step {entry['step']}: loss {entry['loss']:.5f} train_psnr {entry['train_psnr']:.2f} "
            f"val_psnr {val} rot {entry['rotation_error_mean']:.4f} deg "
            f"({entry['rotation_error_px_mean']:.3f} px) "
            f"trans {entry['translation_error_mean']:.5f} rays {self.num_rays}")
        self.logger.flush()

    @torch.no_grad()
    def validate(self, learned: torch.Tensor) -> float | None:
        """Mean PSNR of the first ``num_val_views`` val views, rendered in the learned frame."""
        val_set = self.scenes.get("val")
        count = min(self.cfg.num_val_views, len(val_set)) if val_set is not None else 0
        if count == 0:
            return None
        poses, _ = aligned_poses(val_set, count, learned, self.gt_poses, self.device)
        values = []
        for k, rgb, target in render_views(self.renderer, val_set, poses,
                                           background=self.background,
                                           chunk=self.renderer.eval_chunk, device=self.device):
            values.append(psnr(rgb, target))
            name = f"val_{self.step_count:06d}_{k:02d}"
            save_png(self.run_dir / "images" / f"{name}.png", rgb)
            save_comparison_panel(self.run_dir / "images" / f"compare_{name}_"
                                  f"{_stem(val_set, k)}.png", rgb, target)
            self.logger.image(f"val/view_{k:02d}", torch.cat([rgb, target], dim=1),
                              self.step_count)
        self.renderer.train()
        return sum(values) / len(values)

    def checkpoint(self, val_psnr: float | None, errors: dict[str, float]) -> Path:
        """Write ``checkpoint_{step}.pt`` (+ latest, + best when ``val_psnr`` is the best)."""
        is_best = val_psnr is not None and val_psnr > self.best_val
        if is_best:
            self.best_val = val_psnr
        payload = {
            "step": self.step_count, "config": config_to_dict(self.cfg),
            "renderer": self.renderer.state_dict(), "poses": self.pose_params.state_dict(),
            "initial_poses": self.init_poses.detach().cpu(),
            "ground_truth_poses": self.gt_poses.cpu(),
            "field_optimizer": self.field_opt.state_dict(),
            "field_scheduler": self.field_sched.state_dict(), **self.pose_opt.state_dict(),
            "rng": ckpt.rng_state(self.sampler, self.renderer), "num_rays": self.num_rays,
            "edge_start_step": self.edge_start_step, "relocalize_step": self.relocalize_step,
            "pose_errors": errors,
            "val_metrics": self.val_metrics,
            "best_val_psnr": self.best_val if math.isfinite(self.best_val) else -1e9,
            "history": self.history, "elapsed_s": self.elapsed,
        }
        for name, part in (("field", payload["renderer"]), ("poses", payload["poses"]),
                           ("field optimizer", payload["field_optimizer"]),
                           ("pose optimizer", payload.get("pose_optimizer"))):
            bad = ckpt.count_nonfinite(part)
            if bad:
                raise TrainingError(f"not saving the checkpoint of step {self.step_count}: the "
                                    f"{name} state holds {bad} non-finite values; "
                                    f"{self._stopped_hint()}")
        first = not (self.run_dir / "checkpoint_best.pt").exists()
        return ckpt.save_checkpoint(self.run_dir, payload, is_best=is_best or first,
                                    keep=self.cfg.keep_checkpoints)

    # ------------------------------------------------------------------ the loop and the end
    def train(self) -> dict[str, Any]:
        """Steps until ``num_iters`` (or ``stop_after``), then :meth:`finish`."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        if cfg.viewer and self.viewer is None:
            from taichi_nerf.viewer import ViewerHook

            self.viewer = ViewerHook.start(self)
        viewer = self.viewer
        bar = tqdm(total=cfg.num_iters, initial=self.step_count, disable=not cfg.progress,
                   dynamic_ncols=True, desc=self.run_dir.name[:40])
        self.steps_this_run, self.loop_time = 0, 0.0
        self.renderer.train()
        try:
            while self.step_count < cfg.num_iters:
                tic = time.perf_counter()
                result = self.step()
                dt = time.perf_counter() - tic
                self.loop_time, self.elapsed = self.loop_time + dt, self.elapsed + dt
                self.steps_this_run += 1
                step = self.step_count
                val_now = step % cfg.val_every == 0 or step == cfg.num_iters
                stop_now = cfg.stop_after is not None and step >= cfg.stop_after
                if step % cfg.log_every == 0 or val_now or stop_now or step == 1:
                    entry = self.log(result, val_now, stop_now)
                    bar.set_postfix(loss=f"{entry['loss']:.4f}", psnr=f"{entry['train_psnr']:.2f}",
                                    rot=f"{entry['rotation_error_mean']:.3f}", refresh=False)
                bar.update(1)
                if viewer is not None:  # the viewer's renders and requests, within its budget
                    viewer.after_step(self, result)
                if stop_now:
                    break
        except BaseException as exc:
            self.logger.text(f"stopped: {exc}")
            self.logger.close()
            if viewer is not None:
                viewer.close(status=f"run stopped at step {self.step_count}")
            raise
        finally:
            bar.close()
        if viewer is not None:
            viewer.close(self, status=f"run finished at step {self.step_count}: server closed")
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Final poses, test evaluation, ``final_poses.pt``, ``metrics.json``, ``history.json``."""
        final_poses = self.pose_params.get_poses()
        final_errors = self.pose_errors(final_poses)
        its = self.steps_this_run / self.loop_time if self.loop_time > 0 else 0.0
        result: dict[str, Any] = {"output_dir": self.run_dir, "history": self.history,
                                  "iters_per_sec": its,
                                  "peak_memory_bytes": peak_memory_bytes(self.device),
                                  "final_pose_errors": final_errors, "metrics": None}
        ckpt.write_json(self.run_dir / "history.json", {"history": self.history})
        if self.step_count < self.cfg.num_iters:  # --stop-after: resumable, no final outputs
            self.logger.text(f"stopped after step {self.step_count} (--stop-after); resume with "
                             f"--resume {self.run_dir}")
            self.logger.close()
            return result
        from taichi_nerf.pose_metrics import anchor_to_initial

        anchored = anchor_to_initial(final_poses, self.init_poses).to(final_poses.dtype)
        ckpt.atomic_torch_save({
            "initial_poses": self.init_poses.detach().cpu(), "optimized_poses": final_poses.cpu(),
            "anchored_poses": anchored.cpu(),
            "ground_truth_poses": self.gt_poses.cpu(), "pose_errors": final_errors,
            "initial_pose_errors": self.initial_errors,
            "file_paths": list(self.train_set.file_paths)}, self.run_dir / "final_poses.pt")
        result["metrics"] = self._evaluate(final_poses, final_errors, result)
        self._write_plots(final_poses)
        self.logger.close()
        return result

    def _write_plots(self, final_poses: torch.Tensor) -> None:
        from taichi_nerf.training.plots import write_run_plots

        written = write_run_plots(self.run_dir, self.history, self.init_poses.cpu(),
                                  final_poses.cpu(),
                                  self.gt_poses.cpu() if self.has_truth else None,
                                  pixel_deg=self.pixel_units["pixel_deg"])
        if not written:
            self.logger.text("no plots/: matplotlib is not installed (pip install "
                             "'taichi-nerf[plots]')")

    def _evaluate(self, final_poses, final_errors, result) -> dict[str, Any]:
        from taichi_nerf.training.eval import build_metrics, evaluate_test_split

        cfg = self.cfg
        test = evaluate_test_split(self.renderer, self.scenes["test"], final_poses,
                                   self.gt_poses, eval_config=cfg.eval,
                                   background=self.background,
                                   images_dir=self.run_dir / "images",
                                   chunk=self.renderer.eval_chunk, device=self.device,
                                   seed=cfg.seed)
        best = self.best_val if math.isfinite(self.best_val) else None
        metrics = build_metrics(cfg, test, final_errors, self.initial_errors,
                                step=self.step_count, checkpoint="checkpoint_latest.pt",
                                device=self.device,
                                extra={"pose_errors_against": (
                                           "ground_truth" if self.has_truth else
                                           "input_poses: the scene has no ground truth, so the "
                                           "errors are how far each pose moved from its input"),
                                       "train_time_s": self.elapsed,
                                       "iters_per_sec": result["iters_per_sec"],
                                       "peak_memory_bytes": result["peak_memory_bytes"],
                                       "best_val_psnr": best})
        ckpt.write_json(self.run_dir / "metrics.json", metrics)
        self.logger.scalars({"test/psnr": test["psnr"], "test/ssim": test["ssim"]},
                            self.step_count)
        r0, r1 = (e["rotation_error_mean"] for e in (self.initial_errors, final_errors))
        self.logger.text(f"done: test psnr {test['psnr']:.2f} ssim {test['ssim']:.4f}; "
                         f"rotation error {r0:.4f} -> {r1:.4f} deg "
                         f"({final_errors['rotation_error_px_mean']:.3f} px)")
        return metrics


def train_with_pose_optimization(config: TrainConfig) -> dict[str, Any]:
    """Train a radiance field and (unless fixed) the training camera poses.

    Args:
        config: a :class:`~taichi_nerf.training.config.TrainConfig`; ``None`` fields take the
            ``--model`` preset's values.

    Returns:
        dict with ``output_dir`` (Path), ``metrics`` (the metrics.json dict; None after
        ``--stop-after``), ``history`` (list of ``{step, wall_time_s, train_psnr,
        val_psnr|None, rotation_error_mean, rotation_error_px_mean, translation_error_mean,
        ...}``), ``iters_per_sec``, ``peak_memory_bytes``, ``final_pose_errors``.

    Raises:
        ConfigError / CheckpointError / DatasetError (all ``ValueError``): bad flags, paths or
            data, with a one-line message.
        TrainingError: non-finite values; the last good checkpoint is left intact.
    """
    return Trainer(config).train()

