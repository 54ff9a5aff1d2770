"""Evaluate a run folder on the test split: PSNR, SSIM, pose errors (raw and Sim(3)-aligned).

    python examples/evaluate.py outputs/demo_poseopt_noisyinit_rot3deg_trans1pct_20250101_120000
    python examples/evaluate.py RUN --checkpoint best --test-time-refine

Writes RUN/metrics.json and RUN/images/test_*.png.
"""

import sys

from taichi_nerf.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
