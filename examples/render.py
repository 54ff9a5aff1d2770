"""Render a trained run along a camera path: RGB | colour-mapped depth, as MP4 or GIF.

    python examples/render.py outputs/demo_poseopt_... --path orbit --frames 120 -o orbit.mp4
    python examples/render.py RUN --path test -o test_views.gif --downscale 2

Paths live in the learned frame: spiral and orbit are built from the refined training cameras,
train / test are those cameras (test moved by the Sim(3) fitted on the training cameras).
MP4 needs imageio-ffmpeg (pip install 'taichi-nerf[video]'); a .gif needs nothing extra.
"""

import sys

from taichi_nerf.commands.render import main

if __name__ == "__main__":
    sys.exit(main())
