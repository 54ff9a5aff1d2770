"""Export the refined camera poses of a finished run for nerfstudio, instant-ngp or COLMAP.

    python examples/export_poses.py outputs/demo_poseopt_... --format transforms
    python examples/export_poses.py RUN --format colmap -o my_capture/sparse_refined

transforms: a transforms.json (default RUN/transforms.json) with the refined training poses in
the input's own frame, the original image files, intrinsics at the original resolution, and the
held-out views carried over by the Sim(3) fitted on the training cameras (pose_refined false).
colmap: a COLMAP text model (default RUN/colmap/: cameras.txt, images.txt, empty points3D.txt).
"""

import sys

from taichi_nerf.commands.export_poses import main

if __name__ == "__main__":
    sys.exit(main())
