"""Render a trained run along a camera path: RGB | colour-mapped depth, as MP4 or GIF.

    python examples/render.py outputs/demo_poseopt_... --path orbit --frames 120 -o orbit.mp4
    python examples/render.py RUN --path test -o test_views.gif --downscale 2

Paths live in the learned frame: spiral and orbit are built from the refined training cameras,
train / test are those cameras (test moved by the Sim(3) fitted on the training cameras).
MP4 needs imageio-ffmpeg (pip install 'taichi-nerf[video]'); a .gif needs nothing extra.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated, Literal

import tyro


@dataclasses.dataclass
class RenderArgs:
    """Render a video of a training run."""

    run_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """The run folder (outputs/<experiment>, holding checkpoint_latest.pt)."""
    path: Literal["spiral", "orbit", "train", "test"] = "spiral"
    """spiral (LLFF-style, around the mean camera), orbit (a circle around the scene), or the
    train / test cameras themselves."""
    frames: int | None = None
    """Frames of a spiral / orbit (default 120); views of train / test (default: all)."""
    fps: float = 30.0
    """Frames per second."""
    output: Annotated[str | None, tyro.conf.arg(aliases=["-o"])] = None
    """The video file, .mp4 or .gif (default: RUN/videos/<path>.mp4)."""
    downscale: float = 1.0
    """Render at the training resolution divided by this."""
    width: int | None = None
    """Width in pixels of each half of a frame (overrides --downscale; keeps the aspect)."""
    checkpoint: str = "latest"
    """latest, best, a step number, or a checkpoint path."""
    data_dir: str | None = None
    """Data root, if the scene is not where the run found it."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Where to render."""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(RenderArgs, args=argv, description=__doc__)
    from pathlib import Path

    from taichi_nerf.video import render_video

    output = args.output or str(Path(args.run_dir) / "videos" / f"{args.path}.mp4")
    frames = args.frames if args.frames is not None else (
        120 if args.path in ("spiral", "orbit") else None)
    try:
        path, count = render_video(args.run_dir, output, path=args.path, num_frames=frames,
                                   fps=args.fps, width=args.width, downscale=args.downscale,
                                   checkpoint=args.checkpoint, device=args.device,
                                   data_dir=args.data_dir)
    except (ValueError, OSError) as exc:  # VideoError, CheckpointError, DatasetError, paths
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({count} frames at {args.fps:g} fps)")
    return 0


def cli() -> None:
    """Console-script entry point: ``main()`` with ``sys.argv``, as the exit status."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
