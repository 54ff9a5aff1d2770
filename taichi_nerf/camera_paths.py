"""Camera paths for rendering videos of a trained scene: orbit and spiral around the cameras.

Every pose here is an OpenGL camera-to-world ``[3, 4]`` (looks down -z, +y up, +x right), in
the frame of the poses given (the learned frame, for a run's refined poses).

- ``focus_point``: the point closest to every camera's optical axis (least squares), where an
  object-centred capture looks; forward-facing captures (near-parallel axes) fall back to a
  point ahead of the mean camera.
- ``orbit_path``: a full circle around the focus point, at the cameras' mean height and
  horizontal distance, starting at the first camera; for 360-degree captures.
- ``spiral_path``: the LLFF / NeRF ``render_path_spiral``: the camera circles the mean camera
  position in the mean camera's image plane (radii from the spread of the cameras), moving
  back and forth along its axis, always looking at the focus point; for forward-facing
  captures, and a closer look at object-centred ones.

Example::

    from taichi_nerf.camera_paths import orbit_path
    poses = orbit_path(learned_train_poses, num_frames=120)   # [120, 3, 4]
"""

from __future__ import annotations

import math

import torch

__all__ = ["average_up", "focus_point", "look_at", "orbit_path", "spiral_path"]

#: Smallest eigenvalue (of a sum of N projectors, divided by N) for a well-posed focus point.
_MIN_AXIS_SPREAD = 1e-3
#: Spiral radii are this percentile of the cameras' offsets from their mean, per axis.
SPIRAL_PERCENTILE = 0.9


def _check(poses: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(poses) or poses.dim() != 3 or tuple(poses.shape[1:]) not in (
            (3, 4), (4, 4)) or poses.shape[0] == 0:
        raise ValueError(f"poses must be a non-empty [N, 3, 4] tensor, got "
                         f"{list(poses.shape) if torch.is_tensor(poses) else type(poses)}")
    return poses[:, :3, :4].detach().double()


def look_at(position: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """c2w ``[..., 3, 4]`` of cameras at ``position [..., 3]`` looking at ``target [3]`` with
    ``up [3]`` as near to their +y as possible (no roll)."""
    z = torch.nn.functional.normalize(position - target, dim=-1)  # camera looks down -z
    x = torch.linalg.cross(up.expand_as(z), z, dim=-1)
    # Looking straight along up: any x perpendicular to z will do.
    fallback = torch.linalg.cross(torch.tensor([1.0, 0.0, 0.0]).to(z).expand_as(z), z, dim=-1)
    x = torch.where(x.norm(dim=-1, keepdim=True) > 1e-9, x, fallback)
    x = torch.nn.functional.normalize(x, dim=-1)
    y = torch.linalg.cross(z, x, dim=-1)
    return torch.stack([x, y, z, position], dim=-1)


def average_up(poses: torch.Tensor) -> torch.Tensor:
    """Unit mean of the cameras' +y axes ``[3]``: the capture's up direction."""
    pose = _check(poses)
    return torch.nn.functional.normalize(pose[:, :, 1].mean(0), dim=0)


def focus_point(poses: torch.Tensor) -> torch.Tensor:
    """``[3]`` point nearest (least squares) to all optical axes of c2w ``poses [N, 3, 4]``.

    Near-parallel axes (a forward-facing capture) have no such point; then it is the mean
    camera centre moved along the mean viewing direction by the cameras' spread times 4.
    """
    pose = _check(poses)
    centres, forward = pose[:, :, 3], -pose[:, :, 2]
    projectors = torch.eye(3, dtype=pose.dtype) - forward[:, :, None] * forward[:, None, :]
    a, b = projectors.sum(0), (projectors @ centres[:, :, None]).sum(0)[:, 0]
    if torch.linalg.eigvalsh(a / pose.shape[0]).min() > _MIN_AXIS_SPREAD:
        return torch.linalg.solve(a, b).to(poses.dtype)
    spread = (centres - centres.mean(0)).norm(dim=-1).mean().clamp_min(1e-3)
    mean_forward = torch.nn.functional.normalize(forward.mean(0), dim=0)
    return (centres.mean(0) + 4.0 * spread * mean_forward).to(poses.dtype)


def orbit_path(poses: torch.Tensor, num_frames: int = 120, *, target: torch.Tensor | None = None,
               up: torch.Tensor | None = None) -> torch.Tensor:
    """``[num_frames, 3, 4]`` c2w poses on a circle around ``target`` (default:
    ``focus_point``) perpendicular to ``up`` (default: ``average_up``), at the cameras' mean
    height and horizontal distance, starting at the first camera's azimuth."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    pose = _check(poses)
    target = focus_point(pose) if target is None else target.to(pose)
    up = average_up(pose) if up is None else torch.nn.functional.normalize(up.to(pose), dim=0)
    offsets = pose[:, :, 3] - target
    heights = offsets @ up
    horizontal = offsets - heights[:, None] * up
    radius = horizontal.norm(dim=-1).mean().clamp_min(1e-6)
    e1 = horizontal[0] if horizontal[0].norm() > 1e-9 else look_at(
        pose[0, :, 3], target, up)[:, 0]
    e1 = torch.nn.functional.normalize(e1 - (e1 @ up) * up, dim=0)
    e2 = torch.linalg.cross(up, e1, dim=0)
    angles = torch.arange(num_frames, dtype=pose.dtype) * (2 * math.pi / num_frames)
    positions = (target + heights.mean() * up + radius * (torch.cos(angles)[:, None] * e1
                                                          + torch.sin(angles)[:, None] * e2))
    return look_at(positions, target, up).to(poses.dtype)


def spiral_path(poses: torch.Tensor, num_frames: int = 120, *, turns: float = 2.0,
                target: torch.Tensor | None = None) -> torch.Tensor:
    """``[num_frames, 3, 4]`` c2w poses on the LLFF spiral around the mean camera (see the
    module docstring), looking at ``target`` (default: ``focus_point``)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    pose = _check(poses)
    target = focus_point(pose) if target is None else target.to(pose)
    up = average_up(pose)
    centre = pose[:, :, 3].mean(0)
    frame = look_at(centre, target, up)[:, :3]  # the mean camera's axes
    local = (pose[:, :, 3] - centre) @ frame  # camera offsets in that camera's axes
    radii = torch.quantile(local.abs(), SPIRAL_PERCENTILE, dim=0).clamp_min(1e-6)
    angles = torch.arange(num_frames, dtype=pose.dtype) * (2 * math.pi * turns / num_frames)
    wave = torch.stack([torch.cos(angles), -torch.sin(angles), -torch.sin(0.5 * angles)], -1)
    positions = centre + (wave * radii) @ frame.T
    return look_at(positions, target, up).to(poses.dtype)
