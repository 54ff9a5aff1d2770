"""The command lines, as package modules so they install as console scripts.

``taichi-nerf-train-pose-opt``, ``taichi-nerf-train``, ``taichi-nerf-eval``, ``taichi-nerf-render``,
``taichi-nerf-export`` and ``taichi-nerf-view`` run ``main()`` of :mod:`.train_pose_opt`,
:mod:`.train`, :mod:`.evaluate`, :mod:`.render`, :mod:`.export_poses` and :mod:`.view`;
``python examples/<name>.py`` runs the same function. Each ``main(argv)`` returns the exit status: 0, 2 for a user mistake (one
``error:`` line), 1 for a fault.
"""
