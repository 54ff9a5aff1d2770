"""Open a finished (or stopped) training run in the web viewer (viser) until Ctrl-C.

    python examples/view.py outputs/demo_poseopt_noisyinit_rot3deg_trans1pct_20250101_120000
    python examples/view.py RUN --viewer-port 8081 --checkpoint best

Shows the refined training cameras (coloured by their rotation error in pixels) beside their
ground-truth and initial poses, the run's pose-error history, and a render of your own view from
the checkpoint's field. Needs viser: pip install 'taichi-nerf[viewer]'. To watch a run while it
trains, give --viewer to train_pose_opt.py or train.py instead.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated, Literal

import tyro


@dataclasses.dataclass
class ViewArgs:
    """Serve the viewer of a run folder."""

    run_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """The run folder (outputs/<experiment>, holding checkpoint_latest.pt)."""
    checkpoint: str = "latest"
    """latest, best, a step number, or a checkpoint path."""
    viewer_port: int = 8080
    """Port of the web server."""
    viewer_host: str = "127.0.0.1"
    """Address to bind (0.0.0.0: reachable from other machines)."""
    data_dir: str | None = None
    """Data root, if the scene is not where the run found it."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Where to render."""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(ViewArgs, args=argv, description=__doc__)
    from taichi_nerf.training.cli import guarded

    def run() -> int:
        from taichi_nerf.viewer.run import RunViewer

        if not 1 <= args.viewer_port <= 65535:
            raise ValueError(f"--viewer-port must be a port number in 1..65535, got "
                             f"{args.viewer_port}")
        viewer = RunViewer(args.run_dir, args.checkpoint, host=args.viewer_host,
                           port=args.viewer_port, device=args.device, data_dir=args.data_dir)
        print(f"viewer: {viewer.url} (Ctrl-C stops it)", flush=True)
        try:
            viewer.serve_forever()
        except KeyboardInterrupt:
            print("viewer stopped", flush=True)
        finally:
            viewer.close()
        return 0

    return guarded(run)


def cli() -> None:
    """Console-script entry point: ``main()`` with ``sys.argv``, as the exit status."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
