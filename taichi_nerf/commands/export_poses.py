"""Export the refined camera poses of a finished run for nerfstudio, instant-ngp or COLMAP.

    python examples/export_poses.py outputs/demo_poseopt_... --format transforms
    python examples/export_poses.py RUN --format colmap -o my_capture/sparse_refined

transforms: a transforms.json (default RUN/transforms.json) with the refined training poses in
the input's own frame, the original image files, intrinsics at the original resolution, and the
held-out views carried over by the Sim(3) fitted on the training cameras (pose_refined false).
colmap: a COLMAP text model (default RUN/colmap/: cameras.txt, images.txt, empty points3D.txt).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro


@dataclasses.dataclass
class ExportArgs:
    """Export the refined poses of a run folder."""

    run_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """The run folder (outputs/<experiment>, holding final_poses.pt and config.json)."""
    format: Literal["transforms", "colmap"] = "transforms"
    """transforms: one transforms.json (instant-ngp / nerfstudio); colmap: a COLMAP text model."""
    output: Annotated[str | None, tyro.conf.arg(aliases=["-o"])] = None
    """Where to write: the json file, or the model folder for colmap (default: inside RUN)."""
    data_dir: str | None = None
    """Data root, if the scene is not where the run found it."""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(ExportArgs, args=argv, description=__doc__)
    from taichi_nerf.export import export_colmap, export_transforms, load_run_poses

    try:
        poses = load_run_poses(args.run_dir, data_dir=args.data_dir)
        if args.format == "transforms":
            out = Path(args.output) if args.output else Path(args.run_dir) / "transforms.json"
            if out.is_dir():
                out = out / "transforms.json"
            path = export_transforms(poses, out)
            print(f"wrote {path} ({len(poses.frames)} frames, "
                  f"{sum(f.refined for f in poses.frames)} refined)")
        else:
            out = Path(args.output) if args.output else Path(args.run_dir) / "colmap"
            model, image_path = export_colmap(poses, out)
            print(f"wrote {model}/cameras.txt, images.txt, points3D.txt "
                  f"({len(poses.frames)} images); COLMAP --image_path {image_path}")
    except (ValueError, OSError) as exc:  # ExportError, DatasetError, unwritable paths
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


def cli() -> None:
    """Console-script entry point: ``main()`` with ``sys.argv``, as the exit status."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
