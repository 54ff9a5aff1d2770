"""The viewer of a finished (or stopped) run folder: ``taichi-nerf-view RUN``.

The same scene and panel as the live viewer (without pause / save): the refined cameras coloured
by their rotation error, beside their ground-truth and initial poses, the pose-error history of
the run, and the render panel, rendered from the checkpoint's field on this (the main) thread
until Ctrl-C.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from taichi_nerf.viewer.panel import RenderSource
from taichi_nerf.viewer.scene import CameraSet
from taichi_nerf.viewer.session import ViewerSession

__all__ = ["RunViewer"]

IDLE_SLEEP_S = 0.05


class RunViewer:
    """A viewer serving one run folder's checkpoint.

    Args:
        run_dir: the run folder (``outputs/<experiment>``).
        checkpoint: ``latest``, ``best``, a step number or a checkpoint path.
        host, port: where to serve.
        device: where to render (``auto``, ``cuda``, ``cpu``).
        data_dir: the data root, if the scene is not where the run found it.

    Raises:
        CheckpointError / DatasetError / ViewerError (``ValueError``): one line naming the fix.
    """

    def __init__(self, run_dir: str | Path, checkpoint: str = "latest", *, host: str = "127.0.0.1",
                 port: int = 8080, device: str = "auto", data_dir: str | None = None) -> None:
        from taichi_nerf.pose_metrics import pixel_units
        from taichi_nerf.training.checkpoint import load_checkpoint
        from taichi_nerf.video import _checkpoint_path, _load_split, load_render_run
        from taichi_nerf.viewer import check_viewer

        check_viewer(host, port)
        self.run_dir = Path(run_dir)
        run = load_render_run(self.run_dir, checkpoint, device=device, data_dir=data_dir)
        path = _checkpoint_path(self.run_dir, checkpoint)
        state = load_checkpoint(path, mmap=True)
        train = _load_split(run.config, "train", data_dir)
        self.has_truth = bool(getattr(train, "poses_are_ground_truth", True))
        self.units = pixel_units(train)
        reference = torch.as_tensor(state.get("ground_truth_poses", train.poses)).double()
        cameras = CameraSet.from_image_set(train, torch.as_tensor(state["initial_poses"]),
                                           reference, self.has_truth,
                                           self.units["pixel_deg"])
        self.poses = run.train_poses.double()
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        self.source = RenderSource(run.renderer, run.background, run.device,
                                   torch.as_tensor(train.scene_aabb), self.step)
        self.session = ViewerSession(cameras, host=host, port=port, live=False,
                                     grid=getattr(run.renderer, "grid", None),
                                     label=self.run_dir.name)
        for entry in self.history:
            self.session.add_plot_point(entry["step"], entry["rotation_error_px_mean"],
                                        entry["translation_error_px_mean"])
        self.status = f"finished run: {path.name}, step {self.step}"
        self.reference = reference
        self.refresh()

    @property
    def url(self) -> str:
        return self.session.url

    def numbers(self) -> dict[str, Any]:
        """The numbers panel: the last history entry and the checkpoint poses' errors."""
        from taichi_nerf.poses import pose_errors

        errors = pose_errors(self.poses, self.reference, align=False, **self.units)
        last = self.history[-1] if self.history else {}
        return {"step": self.step, "loss": last.get("loss"), "psnr": last.get("train_psnr"),
                "val_psnr": next((e["val_psnr"] for e in reversed(self.history)
                                  if e.get("val_psnr") is not None), None),
                "rotation_deg": errors["rotation_error_mean"],
                "rotation_px": errors["rotation_error_px_mean"],
                "translation": errors["translation_error_mean"],
                "translation_px": errors["translation_error_px_mean"]}

    def refresh(self) -> None:
        self.session.refresh(self.poses, self.numbers(), self.status)

    def tick(self, seconds: float = IDLE_SLEEP_S) -> bool:
        """One turn of the serving loop: toggles, then up to ``seconds`` of rendering; False
        when there was nothing to do."""
        if self.session.needs_refresh(self.step):
            self.refresh()
        return self.session.render(self.source, seconds)

    def serve_forever(self) -> None:
        """Serve until Ctrl-C (KeyboardInterrupt propagates; call :meth:`close` after)."""
        while not self.session.closed:
            if not self.tick():
                time.sleep(IDLE_SLEEP_S)

    def close(self) -> None:
        self.session.close("viewer stopped")
