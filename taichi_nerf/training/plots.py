"""Pictures of a run: ``plots/*.png`` from the history and poses, and render | truth | error panels.

``write_run_plots`` needs matplotlib (``pip install 'taichi-nerf[plots]'``); without it, it
writes nothing and returns ``[]``, so training never fails for a missing plotting library.
matplotlib is driven through ``Figure`` objects (Agg canvas), never ``pyplot``, so no global
backend or figure state is touched. ``save_comparison_panel`` needs only imageio.

Poses are OpenGL camera-to-world ``[N, 3, 4]`` (looks down -z, +y up).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["ERROR_GAIN", "save_comparison_panel", "write_run_plots"]

#: The error third of a comparison panel shows ``|render - target| * ERROR_GAIN``, clipped.
ERROR_GAIN = 4.0
_SEPARATOR_PX = 2
_COLOURS = {"initial": "#9e9e9e", "optimised": "#1f77b4", "ground truth": "#2ca02c"}
_LINE_WIDTHS = {"initial": 0.7, "optimised": 0.9, "ground truth": 2.0}  # truth shows under


def save_comparison_panel(path: str | os.PathLike, render, target) -> Path:
    """Write ``render | target | error`` side by side as one PNG.

    Args:
        path: the PNG file (folders are created).
        render, target: ``[H, W, 3]`` float images in [0, 1] (torch or numpy, any device).

    Returns:
        ``path``. The error third is ``|render - target| * ERROR_GAIN`` per channel, clipped to
        [0, 1]; white bars of ``_SEPARATOR_PX`` pixels separate the three.
    """
    import imageio.v3 as iio

    render = torch.as_tensor(np.asarray(render) if not torch.is_tensor(render) else render)
    target = torch.as_tensor(np.asarray(target) if not torch.is_tensor(target) else target)
    render = render.detach().float().cpu().clamp(0, 1)
    target = target.detach().float().cpu().clamp(0, 1)
    if render.shape != target.shape or render.dim() != 3 or render.shape[2] != 3:
        raise ValueError(f"save_comparison_panel needs two [H, W, 3] images of one shape, got "
                         f"{list(render.shape)} and {list(target.shape)}")
    error = ((render - target).abs() * ERROR_GAIN).clamp(0, 1)
    bar = torch.ones(render.shape[0], _SEPARATOR_PX, 3)
    panel = torch.cat([render, bar, target, bar, error], dim=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, panel.mul(255).round().to(torch.uint8).numpy())
    return path


def _matplotlib_figure():
    """matplotlib's ``Figure`` class, or None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of the entries where ``key`` is a finite number."""
    steps, values = [], []
    for entry in history:
        value = entry.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and "step" in entry:
            steps.append(float(entry["step"]))
            values.append(float(value))
    return steps, values


def _plot_psnr(Figure, history, path: Path) -> Path:
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for key, label, style in (("train_psnr", "train (batch)", "-"), ("val_psnr", "val", "o-")):
        steps, values = _series(history, key)
        if steps:
            ax.plot(steps, values, style, label=label, markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def _pixel_deg(history) -> float | None:
    """Degrees per pixel implied by entries with both ``rotation_error_mean`` and
    ``rotation_error_px_mean`` (their median ratio), or None."""
    ratios = [e["rotation_error_mean"] / e["rotation_error_px_mean"] for e in history
              if isinstance(e.get("rotation_error_px_mean"), (int, float))
              and isinstance(e.get("rotation_error_mean"), (int, float))
              and e["rotation_error_px_mean"] > 0]
    return float(np.median(ratios)) if ratios else None


def _plot_pose_error(Figure, history, path: Path, has_truth: bool,
                     pixel_deg: float | None) -> Path:
    what = "error" if has_truth else "change from the input"
    fig = Figure(figsize=(10, 4), dpi=100)
    ax_rot, ax_trans = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    steps, rot = _series(history, "rotation_error_mean")
    ax_rot.plot(steps, rot, color=_COLOURS["optimised"])
    ax_rot.set_ylabel(f"mean rotation {what} (deg)")
    pixel_deg = _pixel_deg(history) or pixel_deg
    if pixel_deg:
        ax_rot.secondary_yaxis("right", functions=(lambda d: d / pixel_deg,
                                                   lambda p: p * pixel_deg)).set_ylabel(
            f"(pixels, 1 px = {pixel_deg:.3g} deg)")
    steps, trans = _series(history, "translation_error_mean")
    ax_trans.plot(steps, trans, color=_COLOURS["optimised"])
    ax_trans.set_ylabel(f"mean camera-centre {what} (scene units)")
    for ax in (ax_rot, ax_trans):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _frustum_lines(poses: np.ndarray, size: float) -> np.ndarray:
    """Line segments ``[N * 8, 2, 3]`` drawing each camera as a pyramid of depth ``size``."""
    corners_cam = np.array([[x, y, -1.0] for x, y in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    corners_cam[:, :2] *= 0.5  # about a 53 degree field of view
    segments = []
    for pose in poses:
        centre = pose[:, 3]
        corners = centre + size * corners_cam @ pose[:, :3].T
        for k in range(4):
            segments.append((centre, corners[k]))
            segments.append((corners[k], corners[(k + 1) % 4]))
    return np.asarray(segments)


def _plot_cameras(Figure, sets: dict[str, np.ndarray], path: Path, title: str) -> Path:
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    centres = np.concatenate([p[:, :, 3] for p in sets.values()])
    lo, hi = centres.min(0), centres.max(0)
    span = float(max((hi - lo).max(), 1e-6))
    size = 0.08 * span
    first = next(iter(sets.values()))[:, :, 3]
    if first.shape[0] > 1:  # many cameras: frustums no bigger than their spacing
        gaps = np.linalg.norm(first[:, None] - first[None], axis=-1) + np.eye(first.shape[0]) * 1e9
        size = min(size, 0.6 * float(np.median(gaps.min(1))))
    size = max(size, 1e-3 * span)
    fig = Figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot(projection="3d")
    for label, poses in sets.items():
        ax.add_collection3d(Line3DCollection(_frustum_lines(poses, size), colors=_COLOURS[label],
                                             linewidths=_LINE_WIDTHS[label], label=label))
        ax.scatter(*poses[:, :, 3].T, color=_COLOURS[label], s=4)
    mid, half = (lo + hi) / 2, span / 2 + size
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_zlim(mid[2] - half, mid[2] + half)
    ax.set_box_aspect((1, 1, 1))
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("z")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _camera_sets(initial_poses, optimized_poses, ground_truth_poses
                 ) -> tuple[dict[str, np.ndarray], str]:
    """The pose sets to draw (``[N, 3, 4]`` float64 each) and a title saying the frame."""
    from taichi_nerf.poses import align_sim3, apply_sim3_to_poses

    def as_np(p: torch.Tensor) -> np.ndarray:
        return torch.as_tensor(p).detach().double().cpu()[:, :3, :4].numpy()

    initial, optimised = as_np(initial_poses), as_np(optimized_poses)
    if ground_truth_poses is None:
        return ({"initial": initial, "optimised": optimised},
                "cameras: input poses and refined poses (no ground truth)")
    truth = as_np(ground_truth_poses)
    s, r, t = align_sim3(torch.from_numpy(optimised[:, :, 3]), torch.from_numpy(truth[:, :, 3]))
    aligned = apply_sim3_to_poses(torch.from_numpy(optimised), s, r, t).numpy()
    return ({"ground truth": truth, "initial": initial, "optimised": aligned},
            "cameras: optimised poses after Sim(3) alignment onto the ground truth")


def write_run_plots(run_dir: str | os.PathLike, history: Sequence[dict[str, Any]],
                    initial_poses: torch.Tensor, optimized_poses: torch.Tensor,
                    ground_truth_poses: torch.Tensor | None,
                    pixel_deg: float | None = None) -> list[Path]:
    """Write ``plots/psnr.png``, ``plots/pose_error.png`` and ``plots/cameras.png`` of a run.

    Args:
        run_dir: the run folder; ``plots/`` is created in it.
        history: per-step entries with ``step``, ``train_psnr``, ``val_psnr`` (None or float),
            ``rotation_error_mean`` (deg), ``translation_error_mean`` (scene units) and maybe
            ``rotation_error_px_mean``.
        initial_poses, optimized_poses: ``[N, 3, 4]`` c2w training poses at the start / end.
        ground_truth_poses: ``[N, 3, 4]``, or None for a capture (then the errors are labelled
            as the change from the input, and no alignment is drawn).
        pixel_deg: degrees per pixel (horizontal field of view / width) for the rotation error
            axis in pixels; the ratio of ``rotation_error_mean`` to ``rotation_error_px_mean``
            wins when the history has both.

    Returns:
        The written paths; ``[]`` when matplotlib is not installed.
    """
    Figure = _matplotlib_figure()
    if Figure is None:
        return []
    plots_dir = Path(run_dir) / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = [_plot_psnr(Figure, history, plots_dir / "psnr.png"),
               _plot_pose_error(Figure, history, plots_dir / "pose_error.png",
                                ground_truth_poses is not None, pixel_deg)]
    sets, title = _camera_sets(initial_poses, optimized_poses, ground_truth_poses)
    written.append(_plot_cameras(Figure, sets, plots_dir / "cameras.png", title))
    return written
