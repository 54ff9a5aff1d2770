"""The live viewer's hook into the training loop: ``after_step`` between steps, ``close`` at the end.

Everything the viewer does to the field and poses happens here, on the training thread, under a
time budget: each call earns :data:`BUDGET` times the time the trainer spent since the previous
call (the step, its logging, validation), at most :data:`MAX_CREDIT_S`, and spends it on a
refresh of the scene and numbers (at most every :data:`REFRESH_S`) and on the render panel. The
viewer's share of the loop's time is so bounded by ``BUDGET`` (README: the measured slowdown).

It never changes results: it reads the poses and the field without gradients, renders with
torch's RNG forked (the sampler's and the marcher's generators are never touched) and restores
the renderer's train/eval mode; its "save checkpoint now" writes the trainer's own checkpoint
(:meth:`Trainer.checkpoint`, atomic) without touching the best-val bookkeeping. Time spent
paused or in the viewer is not counted in ``train_time_s`` / ``it/s`` (the trainer times only
its steps).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from taichi_nerf.viewer.panel import RenderSource
from taichi_nerf.viewer.scene import CameraSet
from taichi_nerf.viewer.session import ViewerSession

__all__ = ["ViewerHook", "BUDGET", "REFRESH_S", "MAX_CREDIT_S"]

#: The viewer's share of the training loop's time (amortised over steps).
BUDGET = 0.08
#: Seconds between refreshes of the scene, numbers and plot while training.
REFRESH_S = 1.0
#: At most this much viewer time is saved up (after a long validation, say).
MAX_CREDIT_S = 0.25
PAUSE_SLICE_S = 0.05


class ViewerHook:
    """The live viewer of a :class:`~taichi_nerf.training.trainer.Trainer`.

    ``ViewerHook.start(trainer)`` starts the server and draws the cameras; the trainer then calls
    :meth:`after_step` after every step and :meth:`close` when the run ends (or stops).
    ``session.controls`` is what the browser asked (pause, save, camera, toggles).
    """

    def __init__(self, session: ViewerSession) -> None:
        self.session = session
        self.controls = session.controls
        self.credit = 0.0
        self.viewer_time = 0.0  # seconds spent in after_step (not paused)
        self.paused_time = 0.0
        self.saved: list[str] = []
        self._last_return: float | None = None
        self._last_refresh = -float("inf")
        self._result: dict[str, Any] | None = None

    @classmethod
    def start(cls, trainer) -> ViewerHook:
        """Start the viewer of ``trainer`` on ``cfg.viewer_host:cfg.viewer_port``; print its URL.

        Raises:
            ViewerError: viser not installed, the port in use, a bad host.
        """
        cfg = trainer.cfg
        cameras = CameraSet.from_image_set(trainer.train_set, trainer.init_poses,
                                           trainer.gt_poses, trainer.has_truth,
                                           trainer.pixel_units["pixel_deg"])
        session = ViewerSession(cameras, host=cfg.viewer_host, port=cfg.viewer_port, live=True,
                                grid=getattr(trainer.renderer, "grid", None),
                                label=trainer.run_dir.name)
        hook = cls(session)
        for entry in trainer.history:  # a resumed run's plot starts with its history
            session.add_plot_point(entry["step"], entry["rotation_error_px_mean"],
                                   entry["translation_error_px_mean"])
        hook._refresh(trainer)
        print(f"viewer: {session.url} (Ctrl-C ends the run; its checkpoints stay intact)",
              flush=True)
        return hook

    # ------------------------------------------------------------------ between steps
    def after_step(self, trainer, result: dict[str, Any]) -> None:
        """Serve the browser's requests within the budget; block while paused."""
        now = time.perf_counter()
        if self._last_return is not None:
            self.credit = min(self.credit + BUDGET * (now - self._last_return), MAX_CREDIT_S)
        self._result = result
        self._save_if_asked(trainer)
        if self.controls.paused:
            self._paused(trainer)
        else:
            if self.credit > 0 and now - self._last_refresh >= REFRESH_S:
                self._refresh(trainer)
            left = self.credit - (time.perf_counter() - now)
            if left > 0:
                self.session.render(self._source(trainer), left)
            spent = time.perf_counter() - now
            self.credit -= spent
            self.viewer_time += spent
        self._last_return = time.perf_counter()

    def _paused(self, trainer) -> None:
        tic = time.perf_counter()
        self._refresh(trainer)
        while self.controls.paused and not self.session.closed:
            self._save_if_asked(trainer)
            if self.session.needs_refresh(trainer.step_count):
                self._refresh(trainer)
            if not self.session.render(self._source(trainer), PAUSE_SLICE_S):
                time.sleep(PAUSE_SLICE_S)
        self.paused_time += time.perf_counter() - tic
        self._refresh(trainer)

    def _save_if_asked(self, trainer) -> None:
        if not self.controls.take_save_request():
            return
        with torch.no_grad():
            errors = trainer.pose_errors(trainer.pose_params.get_poses())
        path = trainer.checkpoint(None, errors)
        trainer.last_checkpoint = trainer.run_dir / "checkpoint_latest.pt"
        self.saved.append(path.name)
        trainer.logger.text(f"viewer: saved {path.name} at step {trainer.step_count}")
        self.session.set_saved(f"saved {path.name} (step {trainer.step_count})")

    def _source(self, trainer) -> RenderSource:
        return RenderSource(trainer.renderer, trainer.background, trainer.device,
                            torch.as_tensor(trainer.train_set.scene_aabb), trainer.step_count)

    def _refresh(self, trainer) -> None:
        from taichi_nerf.training.eval import mse_to_psnr

        with torch.no_grad():
            poses = trainer.pose_params.get_poses().detach()
            errors = trainer.pose_errors(poses, align=False)
        step, result = trainer.step_count, self._result
        numbers = {"step": step, "num_iters": trainer.cfg.num_iters, "loss": None, "psnr": None,
                   "val_psnr": trainer.val_metrics.get("val_psnr"),
                   "rotation_deg": errors["rotation_error_mean"],
                   "rotation_px": errors["rotation_error_px_mean"],
                   "translation": errors["translation_error_mean"],
                   "translation_px": errors["translation_error_px_mean"]}
        if result is not None:
            numbers["loss"] = float(result["loss"].item())
            numbers["psnr"] = mse_to_psnr(max(float(result["mse"].item()), 1e-12))
        self.session.add_plot_point(step, numbers["rotation_px"], numbers["translation_px"])
        status = (f"**paused** at step {step}: press Resume training" if self.controls.paused
                  else f"training: step {step} of {trainer.cfg.num_iters}")
        self.session.refresh(poses, numbers, status)
        self._last_refresh = time.perf_counter()

    def close(self, trainer=None, status: str = "run ended: the server is closing") -> None:
        """Stop the server (idempotent); a last refresh first when ``trainer`` is given."""
        if self.session.closed:
            return
        try:
            if trainer is not None:
                self._refresh(trainer)
        finally:
            self.session.close(status)
