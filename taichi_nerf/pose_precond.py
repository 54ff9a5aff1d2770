"""CamP preconditioning of the pose deltas: per camera, a 6x6 ``P`` that whitens the optimiser.

Camera rotation and translation are badly conditioned together: a small tilt plus a sideways
shift keeps the image of the object in place (the rotation/translation valley), and Adam's
per-coordinate scaling cannot see that valley. CamP (Park et al., ICCV 2023) optimises latent
parameters ``z`` with ``(omega, delta_t) = P z`` instead, where

    P = (J^T J + lambda * diag(J^T J))^(-1/2)

and ``J`` ``[2K, 6]`` is the Jacobian of the pixel projections of ``K`` points spread over the
camera's frustum (a grid of pixels x depths between ``near`` and ``far``) with respect to
``(omega, delta_t)`` at the initial pose. ``J^T J`` is averaged over the points, so a unit step
of ``z`` along any direction moves the projected points by about one pixel (RMS): the valley is
round. ``P`` is computed once from the initial poses and intrinsics (deterministic: no random
points), in float64.

Parts that are not learned (``learn_rotation=False``) get zero rows and columns in ``P``, so
their deltas stay exactly zero.
"""

from __future__ import annotations

import torch

from taichi_nerf.poses import _as_3x4, so3_exp

__all__ = ["frustum_points", "projection_jacobian", "camp_preconditioner", "orbit_preconditioner",
           "rig_motion_basis", "remove_rig_motion"]


def frustum_points(pose: torch.Tensor, intrinsics: torch.Tensor, width: int, height: int,
                   near: float, far: float, grid: int = 8, depths: int = 8) -> torch.Tensor:
    """World points ``[grid*grid*depths, 3]`` on a ``grid x grid`` pixel lattice (cell centres)
    at ``depths`` distances evenly spaced in ``[near, far]`` along each pixel's ray.

    Args:
        pose: ``[3, 4]`` c2w (OpenGL camera, looks down -z); intrinsics: ``[4]`` fx, fy, cx, cy.
    """
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    steps = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    v, u = torch.meshgrid(steps * height, steps * width, indexing="ij")
    dirs = torch.stack([(u - cx) / fx, -(v - cy) / fy, -torch.ones_like(u)], -1).reshape(-1, 3)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    t = torch.linspace(float(near), float(far), depths, dtype=torch.float64)
    pose = pose.detach().to(torch.float64)
    world_dirs = dirs @ pose[:, :3].T
    return (pose[:, 3] + t[:, None, None] * world_dirs[None]).reshape(-1, 3)


def _project(delta: torch.Tensor, pose: torch.Tensor, intrinsics: torch.Tensor,
             points: torch.Tensor) -> torch.Tensor:
    """Pixels ``[K*2]`` of ``points`` seen by ``pose`` moved by ``delta = (omega, delta_t)``."""
    rotation = so3_exp(delta[:3]) @ pose[:, :3]
    centre = pose[:, 3] + delta[3:]
    cam = (points - centre) @ rotation  # R^T (X - c): camera coordinates, row vectors
    depth = -cam[:, 2]
    fx, fy, cx, cy = intrinsics
    u = cx + fx * cam[:, 0] / depth
    v = cy - fy * cam[:, 1] / depth
    return torch.stack([u, v], -1).reshape(-1)


def projection_jacobian(pose: torch.Tensor, intrinsics: torch.Tensor,
                        points: torch.Tensor) -> torch.Tensor:
    """``d pixels / d (omega, delta_t)`` at zero delta: ``[2K, 6]`` (pixels per radian / unit)."""
    pose64 = pose.detach().to(torch.float64)
    k = intrinsics.detach().to(torch.float64)
    zero = torch.zeros(6, dtype=torch.float64)
    return torch.func.jacrev(_project)(zero, pose64, k, points.to(torch.float64))


def _inverse_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    eigenvalues, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(eigenvalues.clamp_min(1e-30).rsqrt()) @ vectors.T


def camp_preconditioner(poses: torch.Tensor, intrinsics: torch.Tensor, width: int, height: int,
                        near: float, far: float, *, damping: float = 0.1,
                        learn_rotation: bool = True, learn_translation: bool = True,
                        grid: int = 8, depths: int = 8) -> torch.Tensor:
    """Per-camera CamP preconditioners ``P [N, 6, 6]`` (float64, symmetric; zero where a part is
    not learned).

    Args:
        poses: ``[N, 3, 4]`` initial c2w poses; intrinsics: ``[N, 4]`` (or ``[4]``) fx, fy, cx, cy.
        width, height: image size in pixels; near, far: depth range of the frustum points.
        damping: ``lambda``, relative to each diagonal entry of ``J^T J`` (CamP pads the diagonal
            the same way), so no direction is amplified without bound.

    Returns:
        ``P`` with ``P^T (J^T J + lambda diag(J^T J)) P = I`` on the learned block, ``J^T J`` the
        mean over the frustum points of the per-point ``[2, 6]`` Jacobian products.
    """
    poses = _as_3x4(poses).detach()
    if intrinsics.dim() == 1:
        intrinsics = intrinsics.expand(poses.shape[0], 4)
    learned = torch.tensor([learn_rotation] * 3 + [learn_translation] * 3)
    out = torch.zeros(poses.shape[0], 6, 6, dtype=torch.float64)
    if not bool(learned.any()):
        return out
    index = learned.nonzero().reshape(-1)
    for i in range(poses.shape[0]):
        points = frustum_points(poses[i], intrinsics[i], width, height, near, far, grid, depths)
        jac = projection_jacobian(poses[i], intrinsics[i], points)[:, index]
        jtj = jac.T @ jac / points.shape[0]
        damped = jtj + damping * torch.diag(torch.diagonal(jtj))
        out[i][index[:, None], index[None, :]] = _inverse_sqrt(damped)
    return out


def orbit_preconditioner(poses: torch.Tensor, near: float, far: float, scene_centre=None, *,
                         learn_rotation: bool = True, learn_translation: bool = True,
                         camera_shifts: bool = True) -> torch.Tensor:
    """Per-camera orbit parameterisation ``P [N, 6, 6]`` (float64): ``(omega, delta_t) = P z``
    with ``z = (v, u)`` in the camera's own axes, ``v`` a turn about a pivot in front of the
    camera and ``u`` a shift of the camera.

    To first order the camera turns by ``omega = R0 v`` about the pivot ``p`` (on its optical
    axis, at the depth of ``scene_centre``, clamped to ``[near, far]``; mid-range without one),
    so its centre moves by ``omega x (c0 - p)``, plus ``R0 u``. That splits the
    rotation/translation valley into coordinates: ``v_x, v_y`` orbit the camera about what it
    looks at (the image of the object stays put: weakly seen), ``u_x, u_y`` slide the image
    (strongly seen), ``v_z`` rolls, ``u_z`` dollies. Adam scales each coordinate by its own
    gradient, so the weak orbit no longer waits on the strong shift. No amplification: ``z`` keeps
    radians and scene units.

    With ``camera_shifts=False`` (``--pose-preconditioning pivot``) ``u`` stays a world-axis
    translation, as the plain deltas: only the turns are re-based.
    """
    from taichi_nerf.poses import hat

    poses = _as_3x4(poses).detach().to(torch.float64)
    rotation, centre = poses[:, :, :3], poses[:, :, 3]
    forward = -rotation[:, :, 2]  # OpenGL cameras look down -z
    if scene_centre is None:
        depth = torch.full((poses.shape[0],), 0.5 * (float(near) + float(far)),
                           dtype=torch.float64)
    else:
        target = torch.as_tensor(scene_centre, dtype=torch.float64).reshape(1, 3)
        depth = ((target - centre) * forward).sum(-1).clamp(float(near), float(far))
    pivot = centre + depth[:, None] * forward
    out = torch.zeros(poses.shape[0], 6, 6, dtype=torch.float64)
    if learn_rotation:
        out[:, :3, :3] = rotation
        if learn_translation:
            out[:, 3:, :3] = -hat(centre - pivot) @ rotation  # omega x r = -[r]x omega
    if learn_translation:
        out[:, 3:, 3:] = rotation if camera_shifts else torch.eye(3, dtype=torch.float64)
    return out


def rig_motion_basis(centres: torch.Tensor, pivot: torch.Tensor, scale: float) -> torch.Tensor:
    """``A [N, 6, 6]``: the deltas ``(omega_i, delta_t_i) = A_i g`` that one global rigid motion
    ``g = (Omega, T)`` of the whole rig gives to first order: every camera turns by ``Omega``
    (world axes, about its centre) and its centre moves by ``Omega x (c_i - pivot) + T``.

    ``T`` is measured in units of ``scale`` (the rig's radius), so both halves of ``g`` are about
    radians and a least-squares fit weighs them alike.
    """
    from taichi_nerf.poses import hat

    n = centres.shape[0]
    basis = torch.zeros(n, 6, 6, dtype=centres.dtype, device=centres.device)
    eye = torch.eye(3, dtype=centres.dtype, device=centres.device)
    basis[:, :3, :3] = eye
    basis[:, 3:, :3] = -hat(centres - pivot)  # Omega x r = -[r]x Omega
    basis[:, 3:, 3:] = eye * scale
    return basis


def remove_rig_motion(deltas: torch.Tensor, basis: torch.Tensor, scale: float) -> torch.Tensor:
    """``deltas [N, 6]`` less the global rigid motion of the rig that fits them best.

    A photometric loss cannot tell a rigid motion of all cameras (with the scene moving along)
    from none: that is the gauge of joint pose optimisation. Removing it keeps the rig where the
    initial poses put it, so preconditioned steps (which move fastest exactly along the
    rotate-about-the-scene direction) cannot make it drift. The fit weighs translations by
    ``1 / scale``, so a rotation and the shift it causes count alike.
    """
    weight = torch.ones(6, dtype=deltas.dtype, device=deltas.device)
    weight[3:] = 1.0 / scale
    a = basis * weight[None, :, None]
    b = deltas * weight
    lhs = torch.einsum("nij,nik->jk", a, a)
    rhs = torch.einsum("nij,ni->j", a, b)
    g = torch.linalg.solve(lhs, rhs)
    return deltas - (basis @ g)
