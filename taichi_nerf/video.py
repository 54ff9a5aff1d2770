"""Videos of a trained run: RGB | colour-mapped depth along a camera path, as MP4 or GIF.

A run folder's ``checkpoint_latest.pt`` (or another checkpoint) gives the field and the refined
training poses; the scene is loaded again for the intrinsics (and the test views). Every frame
is rendered in the **learned frame**: orbit and spiral paths are built from the refined
training cameras (``taichi_nerf.camera_paths``), ``train`` is the refined training cameras
themselves, and ``test`` the test cameras moved by the Sim(3) fitted on the training cameras
(as evaluation does). Poses are OpenGL camera-to-world ``[N, 3, 4]``.

MP4 goes through imageio's ffmpeg plugin (``pip install 'taichi-nerf[video]'``: the
``imageio-ffmpeg`` wheel ships its own ffmpeg); GIF needs nothing extra (Pillow).

Example::

    from taichi_nerf.video import render_video
    render_video("outputs/demo_poseopt_...", "orbit.mp4", path="orbit", num_frames=120)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

__all__ = ["PATHS", "RenderRun", "VideoError", "colorize_depth", "load_render_run",
           "path_cameras", "render_frames", "render_video", "write_video"]

PathName = Literal["spiral", "orbit", "train", "test"]
PATHS = ("spiral", "orbit", "train", "test")
_SUFFIXES = (".mp4", ".gif")
#: Depth colours span these percentiles of the first frame's depth (kept for the whole video).
DEPTH_PERCENTILES = (2.0, 98.0)
#: A pixel with less opacity than this has no depth of its own (it shows the background).
MIN_OPACITY = 0.05


class VideoError(ValueError):
    """A bad output path, path name or size; the message names it and the fix."""


@dataclass
class RenderRun:
    """What rendering a run needs.

    Attributes:
        renderer: the trained renderer (eval mode, on ``device``).
        train_poses: ``[N, 3, 4]`` refined training c2w poses (learned frame).
        input_poses: ``[N, 3, 4]`` the scene's training poses (for the test-view alignment).
        intrinsics: ``[N, 4]`` ``(fx, fy, cx, cy)`` of the training views at ``width x height``.
        width, height: training image size in pixels.
        near, far: the scene's ray bounds (scene units).
        config: the run's TrainConfig; background ``[3]``; device; chunk: rays per call.
    """

    renderer: torch.nn.Module
    train_poses: torch.Tensor
    input_poses: torch.Tensor
    intrinsics: torch.Tensor
    width: int
    height: int
    near: float
    far: float
    config: Any
    background: torch.Tensor
    device: torch.device
    chunk: int


def _checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    names = {"latest": "checkpoint_latest.pt", "best": "checkpoint_best.pt"}
    if checkpoint in names:
        return run_dir / names[checkpoint]
    if checkpoint.isdigit():
        return run_dir / f"checkpoint_{checkpoint}.pt"
    return Path(checkpoint)


def _load_split(cfg, split: str, data_dir: str | None):
    """One split of the run's scene, as the run loaded it (downscale, background, holdout)."""
    from taichi_nerf.data import load_scene
    from taichi_nerf.data.transforms import DEFAULT_HOLDOUT_EVERY

    return load_scene(cfg.scene, data_dir if data_dir is not None else cfg.data_dir,
                      splits=(split,), downscale=cfg.downscale, background=cfg.background,
                      holdout_every=getattr(cfg, "holdout_every", DEFAULT_HOLDOUT_EVERY))[split]


def load_render_run(run_dir: str | os.PathLike, checkpoint: str = "latest",
                    device: str = "auto", data_dir: str | None = None) -> RenderRun:
    """Load a run's renderer and refined poses (as ``training.eval.evaluate_run`` does).

    Raises:
        CheckpointError / DatasetError (``ValueError``): one line naming the file and the fix.
    """
    import taichi_nerf
    from taichi_nerf.models import make_renderer
    from taichi_nerf.poses import CameraPoseParameters
    from taichi_nerf.training.checkpoint import CheckpointError, load_checkpoint
    from taichi_nerf.training.config import config_from_dict, resolve_config, resolve_device

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run folder not found; pass outputs/<experiment>")
    dev = resolve_device(device)
    taichi_nerf.init(dev.type)
    state = load_checkpoint(_checkpoint_path(run_dir, checkpoint))
    cfg = resolve_config(config_from_dict(state["config"]), dev)
    train = _load_split(cfg, "train", data_dir)
    if len(train) != state["initial_poses"].shape[0]:
        raise CheckpointError(
            f"{_checkpoint_path(run_dir, checkpoint)}: its {state['initial_poses'].shape[0]} "
            f"training poses do not match the {len(train)} training images scene "
            f"{cfg.scene!r} has now; pass the --data-dir the run used")
    if cfg.model == "ngp" and cfg.ngp.marching_steps is None:  # a pre-resolve checkpoint
        cfg = resolve_config(cfg, dev, image_width=train.width)
    renderer = make_renderer(cfg, train.scene_aabb, train.near, train.far)
    renderer.load_state_dict(state["renderer"])
    renderer.to(dev).eval()
    poses = CameraPoseParameters(state["initial_poses"],
                                 preconditioner=state["poses"].get("preconditioner"))
    poses.load_state_dict(state["poses"])
    return RenderRun(renderer=renderer, train_poses=poses.get_poses().cpu(),
                     input_poses=(train.poses if state.get("ground_truth_poses") is None
                                  else torch.as_tensor(state["ground_truth_poses"]).cpu()),
                     intrinsics=train.intrinsics.clone(), width=train.width, height=train.height,
                     near=float(train.near), far=float(train.far), config=cfg, background=torch.tensor(cfg.background, dtype=torch.float32,
                                                         device=dev),
                     device=dev, chunk=int(getattr(renderer, "eval_chunk", 16384)))


def _test_cameras(run: RenderRun, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Test c2w poses moved into the learned frame, and their intrinsics."""
    from taichi_nerf.poses import apply_sim3_to_poses
    from taichi_nerf.training.eval import fit_test_alignment

    test = _load_split(run.config, "test", data_dir)
    poses = test.poses.double()
    alignment = fit_test_alignment(run.train_poses.double(), run.input_poses.double())
    if alignment is not None:
        poses = apply_sim3_to_poses(poses, *alignment)
    return poses.float(), test.intrinsics


def _subsample(count: int, num_frames: int | None) -> list[int]:
    if num_frames is None or num_frames >= count:
        return list(range(count))
    return [round(k * (count - 1) / max(num_frames - 1, 1)) for k in range(num_frames)]


def path_cameras(run: RenderRun, path: PathName, num_frames: int | None = 120,
                 data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(poses [F, 3, 4], intrinsics [F, 4])`` of a path, in the learned frame, with
    intrinsics at the run's training resolution. ``train`` / ``test`` use every view, or
    ``num_frames`` of them evenly spaced."""
    from taichi_nerf.camera_paths import orbit_path, spiral_path

    if path in ("spiral", "orbit"):
        if num_frames is None or num_frames < 1:
            raise VideoError(f"--frames must be >= 1 for the {path} path, got {num_frames}")
        make = spiral_path if path == "spiral" else orbit_path
        poses = make(run.train_poses.double(), num_frames).float()
        return poses, run.intrinsics[:1].expand(num_frames, 4).clone()
    if path == "train":
        poses, intrinsics = run.train_poses, run.intrinsics
    elif path == "test":
        poses, intrinsics = _test_cameras(run, data_dir)
    else:
        raise VideoError(f"unknown --path {path!r}; choose one of {', '.join(PATHS)}")
    keep = _subsample(poses.shape[0], num_frames)
    return poses[keep], intrinsics[keep]


def _turbo(x: np.ndarray) -> np.ndarray:
    """Google's Turbo colour map (polynomial fit by its authors), ``x [...]`` in [0, 1] ->
    ``[..., 3]`` in [0, 1]."""
    x = np.clip(x, 0.0, 1.0)[..., None]
    powers = np.concatenate([np.ones_like(x), x, x**2, x**3, x**4, x**5], axis=-1)
    coefficients = np.array([
        [0.13572138, 0.09140261, 0.10667330],
        [4.61539260, 2.19418839, 12.64194608],
        [-42.66032258, 4.84296658, -60.58204836],
        [132.13108234, -14.18503333, 110.36276771],
        [-152.94239396, 4.27729857, -89.90310912],
        [59.28637943, 2.82956604, 27.34824973]])
    return np.clip(powers @ coefficients, 0.0, 1.0)


def depth_range(depth: torch.Tensor, opacity: torch.Tensor, near: float, far: float
                ) -> tuple[float, float]:
    """``(lo, hi)`` depth percentiles (``DEPTH_PERCENTILES``) of the covered pixels of one
    frame; ``(near, far)`` when too few pixels are covered."""
    covered = opacity > MIN_OPACITY
    if int(covered.sum()) < 4:
        return near, far
    values = (depth[covered] / opacity[covered]).double().cpu()
    lo, hi = (float(torch.quantile(values, p / 100.0)) for p in DEPTH_PERCENTILES)
    return (lo, hi) if hi > lo else (lo, lo + 1e-6)


def colorize_depth(depth: torch.Tensor, opacity: torch.Tensor, lo: float, hi: float
                   ) -> np.ndarray:
    """``uint8 [H, W, 3]`` Turbo image of ``depth [H, W]`` (composited, so divided by
    ``opacity [H, W]``) mapped from ``[lo, hi]`` (near = blue, far = red), faded to black where
    the opacity is low."""
    alpha = opacity.detach().double().cpu().clamp(0, 1).numpy()
    expected = depth.detach().double().cpu().numpy() / np.maximum(alpha, MIN_OPACITY)
    colour = _turbo((expected - lo) / (hi - lo)) * alpha[..., None]
    return np.round(colour * 255.0).astype(np.uint8)


@torch.no_grad()
def render_frames(run: RenderRun, poses: torch.Tensor, intrinsics: torch.Tensor, width: int,
                  height: int, *, progress: bool = True) -> Iterator[np.ndarray]:
    """Yield ``uint8 [H, 2W, 3]`` frames, RGB | depth, of c2w ``poses [F, 3, 4]`` with
    ``intrinsics [F, 4]`` (pixels of a ``width x height`` image)."""
    from tqdm.auto import tqdm

    from taichi_nerf.rays import image_rays
    from taichi_nerf.render import render_image

    limits = None
    for k in tqdm(range(poses.shape[0]), desc="render", unit="frame", disable=not progress):
        pose, intr = poses[k].to(run.device), intrinsics[k].to(run.device)
        rays_o, rays_d = image_rays(pose, intr, width, height)
        out = render_image(run.renderer, rays_o, rays_d, background=run.background, chunk=run.chunk,
                           height=height, width=width)
        if limits is None:
            limits = depth_range(out["depth"], out["opacity"], run.near, run.far)
        rgb = out["rgb"].clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        yield np.concatenate([rgb, colorize_depth(out["depth"], out["opacity"], *limits)], 1)


def _check_output(out_path: Path) -> None:
    if out_path.suffix.lower() not in _SUFFIXES:
        raise VideoError(f"{out_path}: unknown video type {out_path.suffix!r}; end -o with "
                         ".mp4 or .gif")
    if out_path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise VideoError(f"{out_path}: writing MP4 needs imageio-ffmpeg; pip install "
                             "'taichi-nerf[video]', or write a .gif") from None


def write_video(out_path: str | os.PathLike, frames: Iterator[np.ndarray], fps: float) -> int:
    """Write ``uint8 [H, W, 3]`` frames to an ``.mp4`` (H.264, streamed) or ``.gif`` file.

    Returns:
        The number of frames rendered. MP4 frames are padded to even sizes (H.264 needs them);
        a GIF merges identical consecutive frames into one longer frame (Pillow does).
    """
    import imageio.v2 as imageio

    out_path = Path(out_path)
    _check_output(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    if out_path.suffix.lower() == ".gif":
        collected = list(frames)
        import imageio.v3 as iio

        iio.imwrite(out_path, np.stack(collected), duration=1000.0 / fps, loop=0)
        return len(collected)
    with imageio.get_writer(out_path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                            macro_block_size=1, pixelformat="yuv420p",
                            ffmpeg_log_level="error") as writer:
        for frame in frames:
            pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
            writer.append_data(np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0))))
            count += 1
    return count


def render_video(run_dir: str | os.PathLike, out_path: str | os.PathLike, *,
                 path: PathName = "spiral", num_frames: int | None = 120, fps: float = 30.0,
                 width: int | None = None, downscale: float = 1.0, checkpoint: str = "latest",
                 device: str = "auto", data_dir: str | None = None,
                 progress: bool = True) -> tuple[Path, int]:
    """Render a run along a camera path into an MP4 or GIF of RGB | depth frames.

    Args:
        run_dir: the run folder; checkpoint: ``latest``, ``best``, a step or a path.
        out_path: ``.mp4`` or ``.gif``.
        path: ``spiral``, ``orbit`` (built from the refined training cameras), ``train`` or
            ``test`` (those cameras, in the learned frame).
        num_frames: frames of a spiral / orbit; for train / test, how many views (None: all).
        fps: frames per second.
        width: output width in pixels of each half (height keeps the aspect); else the training
            width divided by ``downscale``.

    Returns:
        ``(out_path, frames written)``.
    """
    out_path = Path(out_path)
    _check_output(out_path)
    if not fps > 0 or not downscale > 0 or (width is not None and width < 1):
        raise VideoError(f"need --fps > 0, --downscale > 0 and --width >= 1, got fps={fps}, "
                         f"downscale={downscale}, width={width}")
    run = load_render_run(run_dir, checkpoint=checkpoint, device=device, data_dir=data_dir)
    poses, intrinsics = path_cameras(run, path, num_frames, data_dir)
    factor = (width / run.width) if width is not None else 1.0 / downscale
    out_w = max(1, int(math.floor(run.width * factor + 1e-6)))
    out_h = max(1, int(math.floor(run.height * factor + 1e-6)))
    frames = render_frames(run, poses, intrinsics * factor, out_w, out_h, progress=progress)
    return out_path, write_video(out_path, frames, fps)
