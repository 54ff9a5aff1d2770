"""Camera-pose geometry: SO(3)/SE(3) maps, learnable pose deltas and pose noise.

Pose errors and the Sim(3) alignment live in :mod:`taichi_nerf.pose_metrics` (re-exported here).

Conventions (DESIGN.md):

- A pose is camera-to-world (c2w) ``[N, 3, 4]`` = ``[R | t]`` (``[N, 4, 4]`` accepted on input)
  with a Blender/OpenGL camera: it looks down -z, +y is up, +x is right. ``t`` is the camera
  centre in world (scene) units.
- The learnable delta is ``R = exp(omega) @ R0``, ``t = t0 + delta_t``: ``omega`` (axis-angle,
  radians) turns the camera about its own centre in *world* axes, and the centre moves only by
  ``delta_t``.
- Rotation error is the geodesic angle between two rotations; translation error is the distance
  between camera centres.

Everything here is plain torch, works for float32 and float64, and is batched over leading
dimensions. The exponential maps switch to Taylor series near zero through ``torch.where`` with
safe denominators, so values *and* gradients at exactly zero are finite and right.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

__all__ = [
    "hat",
    "vee",
    "so3_exp",
    "so3_log",
    "se3_exp",
    "rotation_geodesic",
    "rotation_geodesic_deg",
    "CameraPoseParameters",
    "perturb_poses",
    "align_sim3",
    "apply_sim3_to_poses",
    "pose_errors",
]

# Below these squared angles the closed forms are replaced by Taylor series. With the terms kept
# below, the truncation error is < 1e-16 at the threshold, so one threshold serves f32 and f64.
_EXP_TAYLOR_THETA_SQ = 1e-4  # sin(x)/x and (1-cos x)/x^2, terms up to x^4
_V_TAYLOR_THETA_SQ = 1e-2  # (x - sin x)/x^3, terms up to x^8 (the closed form cancels badly)
_LOG_TAYLOR_SIN_SQ = 1e-6  # asin(s)/s, terms up to s^4
# so3_log reads the axis from the symmetric part of R when cos(theta) is below this (theta > ~134
# deg): there sin(theta) -> 0 and R - R^T no longer carries the axis accurately.
_LOG_NEAR_PI_COS = -0.7


def hat(omega: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric matrix of ``omega [..., 3]`` -> ``[..., 3, 3]`` (``hat(a) @ b = a x b``)."""
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack(
        [
            torch.stack([zero, -z, y], -1),
            torch.stack([z, zero, -x], -1),
            torch.stack([-y, x, zero], -1),
        ],
        -2,
    )


def vee(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hat` on the antisymmetric part: ``[..., 3, 3]`` -> ``[..., 3]``."""
    return 0.5 * torch.stack(
        [
            matrix[..., 2, 1] - matrix[..., 1, 2],
            matrix[..., 0, 2] - matrix[..., 2, 0],
            matrix[..., 1, 0] - matrix[..., 0, 1],
        ],
        -1,
    )


def _check_last(x: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {type(x).__name__}")
    if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape) :]) != shape:
        raise ValueError(
            f"{name} must have shape [..., {', '.join(map(str, shape))}], got {list(x.shape)}"
        )


def _rodrigues_coefficients(theta_sq: torch.Tensor, with_v: bool = False):
    """``A = sin(x)/x``, ``B = (1-cos x)/x^2`` and optionally ``C = (x-sin x)/x^3`` of ``x^2``.

    Each is a Taylor series below its threshold. The closed form is evaluated on a *safe* angle
    (1 where the series is used) so the unused branch of ``torch.where`` stays finite and cannot
    poison the gradient with NaN at ``x = 0``.
    """
    small = theta_sq < _EXP_TAYLOR_THETA_SQ
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    t2, t4 = theta_sq, theta_sq * theta_sq
    a = torch.where(small, 1.0 - t2 / 6.0 + t4 / 120.0, torch.sin(theta) / theta)
    # 2 sin^2(x/2) instead of 1 - cos(x): no cancellation in float32 for small x.
    half_sinc = torch.sin(0.5 * theta) / theta
    b = torch.where(small, 0.5 - t2 / 24.0 + t4 / 720.0, 2.0 * half_sinc * half_sinc)
    if not with_v:
        return a, b
    small_v = theta_sq < _V_TAYLOR_THETA_SQ
    theta_v = torch.sqrt(torch.where(small_v, torch.ones_like(theta_sq), theta_sq))
    series = 1 / 6 - t2 / 120 + t4 / 5040 - t2 * t4 / 362880 + t4 * t4 / 39916800
    c = torch.where(small_v, series, (theta_v - torch.sin(theta_v)) / theta_v**3)
    return a, b, c


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of an axis-angle vector (Rodrigues), differentiable everywhere.

    Args:
        omega: ``[..., 3]`` axis * angle in radians.

    Returns:
        ``[..., 3, 3]`` rotation matrices ``I + A K + B K^2`` with ``K = hat(omega)``. At
        ``omega = 0`` the result is exactly ``I`` and ``d R / d omega_i = hat(e_i)``.
    """
    _check_last(omega, (3,), "omega")
    a, b = _rodrigues_coefficients((omega * omega).sum(-1))
    k = hat(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def se3_exp(xi: torch.Tensor) -> torch.Tensor:
    """SE(3) exponential of a twist ``xi = (omega, u) [..., 6]`` (BARF's order) -> ``[..., 3, 4]``.

    ``R = so3_exp(omega)``, ``t = V u`` with ``V = I + B K + C K^2`` (the left Jacobian of SO(3)),
    i.e. the matrix exponential of ``[[hat(omega), u], [0, 0]]``. The result maps points
    ``x -> R x + t``; which frame that is depends on how the caller composes it.
    """
    _check_last(xi, (6,), "xi")
    omega, u = xi[..., :3], xi[..., 3:]
    a, b, c = _rodrigues_coefficients((omega * omega).sum(-1), with_v=True)
    k = hat(omega)
    k2 = k @ k
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device)
    rot = eye + a[..., None, None] * k + b[..., None, None] * k2
    v = eye + b[..., None, None] * k + c[..., None, None] * k2
    return torch.cat([rot, v @ u[..., None]], -1)


def _safe_norm(sq: torch.Tensor) -> torch.Tensor:
    """``sqrt(sq)`` with a zero (not NaN) gradient at ``sq = 0``."""
    positive = sq > 0
    return torch.where(
        positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))), 0.0 * sq
    )


def so3_log(rotation: torch.Tensor) -> torch.Tensor:
    """Axis-angle vector of a rotation matrix: the inverse of :func:`so3_exp` with ``|omega| <= pi``.

    The angle is ``atan2(|vee(R - R^T)|, (tr R - 1) / 2)`` (accurate at every angle, unlike a
    bare ``acos``). Three regimes, selected per element with ``torch.where``:

    - small angles: ``omega = vee(R) * asin(s)/s`` by its Taylor series in ``s = sin(theta)``;
    - generic angles: ``omega = vee(R) * theta / sin(theta)``;
    - near pi (``cos(theta) < -0.7``): the axis is the normalised largest column of the symmetric
      part ``(R + R^T)/2 - cos(theta) I = (1 - cos(theta)) a a^T``, its sign taken from
      ``vee(R)``. At exactly pi both signs are valid; either may be returned.

    Args:
        rotation: ``[..., 3, 3]`` rotation matrices.

    Returns:
        ``[..., 3]`` axis * angle in radians. Differentiable; the gradient at ``R = I`` is finite.
    """
    _check_last(rotation, (3, 3), "rotation")
    v = vee(rotation)  # sin(theta) * axis
    sin_sq = (v * v).sum(-1)
    trace = rotation[..., 0, 0] + rotation[..., 1, 1] + rotation[..., 2, 2]
    cos = (0.5 * (trace - 1.0)).clamp(-1.0, 1.0)
    sin = _safe_norm(sin_sq)
    theta = torch.atan2(sin, cos)

    near_pi = cos < _LOG_NEAR_PI_COS
    small = (~near_pi) & (sin_sq < _LOG_TAYLOR_SIN_SQ)
    ones = torch.ones_like(sin)
    series = 1.0 + sin_sq / 6.0 + 0.075 * sin_sq * sin_sq  # asin(s)/s = 1 + s^2/6 + 3 s^4/40
    factor = torch.where(small, series, theta / torch.where(small | near_pi, ones, sin))
    omega_regular = factor[..., None] * v

    # Near pi: the axis from the symmetric part. Off this branch, cos is replaced by -1 so the
    # (unused) columns stay well away from zero and the normalisation stays finite.
    cos_pi = torch.where(near_pi, cos, -ones)
    eye = torch.eye(3, dtype=rotation.dtype, device=rotation.device)
    sym = 0.5 * (rotation + rotation.transpose(-1, -2)) - cos_pi[..., None, None] * eye
    sym = torch.where(near_pi[..., None, None], sym, eye.expand_as(sym))
    diag = torch.diagonal(sym, dim1=-2, dim2=-1)
    column_index = diag.argmax(-1)[..., None, None].expand(*sym.shape[:-1], 1)
    column = torch.gather(sym, -1, column_index)[..., 0]
    # |column| >= (1 - cos) / sqrt(3) > 0.9 on this branch; exactly 1 (a unit e_k) off it.
    axis = column / torch.linalg.vector_norm(column, dim=-1, keepdim=True)
    sign = torch.where((axis * v).sum(-1) < 0, -ones, ones)
    omega_pi = (sign * theta)[..., None] * axis

    return torch.where(near_pi[..., None], omega_pi, omega_regular)


def rotation_geodesic(rotation_a: torch.Tensor, rotation_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between rotations, radians in ``[0, pi]``: ``[..., 3, 3]`` x2 -> ``[...]``.

    ``theta = atan2(|vee(M)|, (tr M - 1)/2)`` with ``M = Ra Rb^T``: equal to
    ``acos((tr M - 1)/2)`` but accurate near 0 and pi. Differentiable; the gradient is zero
    (not NaN) where the rotations coincide.
    """
    _check_last(rotation_a, (3, 3), "rotation_a")
    _check_last(rotation_b, (3, 3), "rotation_b")
    relative = rotation_a @ rotation_b.transpose(-1, -2)
    v = vee(relative)
    trace = relative[..., 0, 0] + relative[..., 1, 1] + relative[..., 2, 2]
    return torch.atan2(_safe_norm((v * v).sum(-1)), 0.5 * (trace - 1.0))


def rotation_geodesic_deg(rotation_a: torch.Tensor, rotation_b: torch.Tensor) -> torch.Tensor:
    """:func:`rotation_geodesic` in degrees."""
    return torch.rad2deg(rotation_geodesic(rotation_a, rotation_b))


def _as_3x4(poses: torch.Tensor, name: str = "poses") -> torch.Tensor:
    if not torch.is_tensor(poses) or not poses.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point torch.Tensor of shape [N, 3, 4] or [N, 4, 4]"
        )
    if poses.dim() != 3 or tuple(poses.shape[1:]) not in ((3, 4), (4, 4)):
        raise ValueError(f"{name} must have shape [N, 3, 4] or [N, 4, 4], got {list(poses.shape)}")
    return poses[:, :3, :]


class CameraPoseParameters(nn.Module):
    """Learnable corrections of ``N`` camera-to-world poses.

    Pose ``i`` is ``R_i = so3_exp(rotation_delta_i) @ R0_i`` and ``t_i = t0_i +
    translation_delta_i``: the rotation delta (axis-angle, radians) is left-multiplied, i.e. it
    turns the camera about its own centre in world axes; the centre moves only by the
    translation delta (scene units). Poses are c2w with an OpenGL camera (looks down -z, +y up).

    Both deltas start at zero, so ``forward()`` initially returns the initial poses exactly. A
    part switched off (``learn_rotation=False`` / ``learn_translation=False``) is registered as a
    buffer, not a Parameter: it is not in ``parameters()``, gets no gradient and stays
    bit-identical. Either way its ``state_dict`` key is the same, so checkpoints load across the
    switches and into any module built with the same ``N``.

    With a ``preconditioner`` ``P [N, 6, 6]`` (CamP, :mod:`taichi_nerf.pose_precond`) the
    Parameter is instead a latent ``latent [N, 6]`` (zero at start) and
    ``(omega_i, delta_t_i) = P_i z_i``: the same poses, but an optimiser steps in a space where
    rotation and translation are equally well conditioned. ``rotation_delta`` and
    ``translation_delta`` still read the deltas (derived then).

    Args:
        initial_poses: ``[N, 3, 4]`` or ``[N, 4, 4]`` c2w poses (kept as buffer
            ``initial_poses [N, 3, 4]``, same dtype/device; the deltas share them).
        learn_rotation: make ``rotation_delta [N, 3]`` a Parameter.
        learn_translation: make ``translation_delta [N, 3]`` a Parameter.
        preconditioner: optional ``[N, 6, 6]`` (buffer ``preconditioner``; zeroed on the parts
            not learned).

    Example::

        params = CameraPoseParameters(noisy_poses)
        optimizer = torch.optim.Adam(params.parameters(), lr=1e-3)
        poses = params(camera_ids)  # [B, 3, 4], differentiable in the deltas
    """

    initial_poses: torch.Tensor

    def __init__(
        self,
        initial_poses: torch.Tensor,
        learn_rotation: bool = True,
        learn_translation: bool = True,
        preconditioner: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        poses = _as_3x4(initial_poses, "initial_poses").detach().clone().contiguous()
        self.learn_rotation = bool(learn_rotation)
        self.learn_translation = bool(learn_translation)
        self.register_buffer("initial_poses", poses)
        n = poses.shape[0]
        if preconditioner is not None:
            self._init_latent(preconditioner.to(poses))
            return
        for name, learn in (
            ("rotation_delta", learn_rotation),
            ("translation_delta", learn_translation),
        ):
            zeros = torch.zeros(n, 3, dtype=poses.dtype, device=poses.device)
            if learn:
                self.register_parameter(name, nn.Parameter(zeros))
            else:
                self.register_buffer(name, zeros)

    def _init_latent(self, preconditioner: torch.Tensor) -> None:
        n = self.initial_poses.shape[0]
        if tuple(preconditioner.shape) != (n, 6, 6):
            raise ValueError(f"preconditioner must be [N, 6, 6] = [{n}, 6, 6], "
                             f"got {list(preconditioner.shape)}")
        mask = torch.tensor([self.learn_rotation] * 3 + [self.learn_translation] * 3)
        mask = mask.to(preconditioner)
        # Rows of parts that are not learned are zero, so their deltas are exactly zero.
        self.register_buffer("preconditioner", preconditioner * mask[:, None] * mask[None, :])
        latent = torch.zeros(n, 6, dtype=preconditioner.dtype, device=preconditioner.device)
        if self.learn_rotation or self.learn_translation:
            self.register_parameter("latent", nn.Parameter(latent))
        else:
            self.register_buffer("latent", latent)

    @property
    def preconditioned(self) -> bool:
        """Whether the deltas are ``P z`` of a latent ``z`` (CamP) rather than parameters."""
        return "preconditioner" in self._buffers

    def camera_deltas(self, indices: torch.Tensor | None = None) -> torch.Tensor:
        """The per-camera part ``[n, 6]`` of the deltas (``P z`` with a preconditioner), without
        the shared rig motion."""
        if not self.preconditioned:
            omega = self.get_buffer_or_param("rotation_delta")
            delta_t = self.get_buffer_or_param("translation_delta")
            delta = torch.cat([omega, delta_t], -1)
            return delta if indices is None else delta[indices]
        p, z = self.preconditioner, self.latent
        if indices is not None:
            p, z = p[indices], z[indices]
        return (p @ z[..., None])[..., 0]

    def deltas(self, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(omega [n, 3], delta_t [n, 3])`` of cameras ``indices`` (all if None)."""
        if not self.preconditioned and "rig_basis" not in self._buffers:  # the plain deltas
            omega = self.get_buffer_or_param("rotation_delta")
            delta_t = self.get_buffer_or_param("translation_delta")
            if indices is not None:
                omega, delta_t = omega[indices], delta_t[indices]
            if "common_shift" in self._parameters:
                delta_t = delta_t + self.common_shift
            return omega, delta_t
        delta = self.camera_deltas(indices)
        if "rig_basis" in self._buffers:
            basis = self.rig_basis if indices is None else self.rig_basis[indices]
            delta = delta + (basis @ self.rig_motion[:, None])[..., 0]
        if "common_shift" in self._parameters:
            return delta[..., :3], delta[..., 3:] + self.common_shift
        return delta[..., :3], delta[..., 3:]

    def add_rig_motion(self, rig_basis: torch.Tensor) -> None:
        """Add one shared rigid motion of the whole rig, ``rig_motion [6]`` (a Parameter, zero at
        start), acting through ``rig_basis [N, 6, 6]``
        (:func:`taichi_nerf.pose_precond.rig_motion_basis`): its gradient sums over every
        camera, so the rig's global pose learns from the whole batch."""
        n = self.initial_poses.shape[0]
        if tuple(rig_basis.shape) != (n, 6, 6):
            raise ValueError(f"rig_basis must be [N, 6, 6] = [{n}, 6, 6], "
                             f"got {list(rig_basis.shape)}")
        self.register_buffer("rig_basis", rig_basis.to(self.initial_poses))
        self.register_parameter("rig_motion", nn.Parameter(self.initial_poses.new_zeros(6)))

    def add_common_shift(self) -> None:
        """Add one shift shared by every camera centre, ``common_shift [3]`` (a Parameter, scene
        units, zero at start): ``t_i = t0_i + delta_t_i + common_shift``. Its gradient sums over
        the whole batch, so when the field drifts as a whole the centres follow it at once
        instead of each camera turning to keep the object in view."""
        self.register_parameter("common_shift", nn.Parameter(self.initial_poses.new_zeros(3)))

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> CameraPoseParameters:
        """The module a ``state_dict()`` came from (plain, CamP latent, with a rig motion or a
        common shift), loaded with it: how saved runs are read back."""
        module = cls(state["initial_poses"], preconditioner=state.get("preconditioner"))
        if "rig_basis" in state:
            module.add_rig_motion(state["rig_basis"])
        if "common_shift" in state:
            module.add_common_shift()
        module.load_state_dict(state)
        return module

    def get_buffer_or_param(self, name: str) -> torch.Tensor:
        return self._parameters[name] if name in self._parameters else self._buffers[name]

    def __getattr__(self, name: str):
        # With a preconditioner the deltas are derived (P z); read them by their usual names.
        if name in ("rotation_delta", "translation_delta") and "preconditioner" in \
                self.__dict__.get("_buffers", {}):
            omega, delta_t = self.deltas()
            return omega if name == "rotation_delta" else delta_t
        return super().__getattr__(name)

    @property
    def num_cameras(self) -> int:
        return self.initial_poses.shape[0]

    def forward(self, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Current poses ``[n, 3, 4]`` of cameras ``indices [n]`` (long; all cameras if None).

        Differentiable in the learnable deltas (or the latent ``z``); the initial poses are
        constants.
        """
        initial = self.initial_poses if indices is None else self.initial_poses[indices]
        omega, delta_t = self.deltas(indices)
        rotation = so3_exp(omega) @ initial[..., :3]
        translation = initial[..., 3] + delta_t
        return torch.cat([rotation, translation[..., None]], -1)

    @torch.no_grad()
    def get_poses(self) -> torch.Tensor:
        """All current poses ``[N, 3, 4]``, detached (a fresh tensor, safe to modify)."""
        return self.forward().detach().clone()

    def extra_repr(self) -> str:
        return (
            f"num_cameras={self.num_cameras}, learn_rotation={self.learn_rotation}, "
            f"learn_translation={self.learn_translation}"
        )


def perturb_poses(
    poses: torch.Tensor,
    rotation_noise_deg: float = 0.0,
    translation_noise: float | None = None,
    translation_noise_pct: float | None = None,
    seed: int = 0,
    protocol: Literal["gaussian", "barf"] = "gaussian",
    barf_std: float = 0.15,
) -> torch.Tensor:
    """Noisy copies of c2w ``poses [N, 3, 4]`` (or ``[N, 4, 4]``) -> ``[N, 3, 4]``, reproducibly.

    ``protocol="gaussian"`` (DESIGN.md), per camera ``i``:
    ``R_i = so3_exp(w_i) @ R0_i`` with ``w_i ~ N(0, s_r^2 I3)``, ``s_r = radians(rotation_noise_deg)``
    (mean angle ~= 1.596 s_r), left-multiplied like the learnable delta (world axes, about the
    camera centre); ``t_i = t0_i + d_i`` with ``d_i ~ N(0, s_t^2 I3)`` where
    ``s_t = translation_noise`` (scene units) or ``s_t = translation_noise_pct / 100 * |t0_i|``
    (distance from the world origin). Give at most one translation form.

    ``protocol="barf"`` (BARF, Lin et al. 2021): ``xi_i ~ N(0, barf_std^2 I6)``, ``T_i =
    se3_exp(xi_i)`` and, with BARF's composition on world-to-camera poses,
    ``w2c_noisy = w2c_gt @ T_i`` (BARF's ``pose.compose([pose_noise, pose])``: the noise acts on
    world points before the GT w2c). Equivalently ``c2w_noisy = T_i^-1 @ c2w_gt``. The Gaussian
    arguments are ignored under this protocol. The camera's axis convention (OpenGL here, OpenCV
    in BARF) does not matter, since the noise multiplies on the world side.

    Noise is drawn on the CPU in float64 from ``torch.Generator().manual_seed(seed)`` (the same
    numbers on every device): gaussian draws ``randn(N, 3)`` for rotation then ``randn(N, 3)`` for
    translation; barf draws ``randn(N, 6)``. Returns the input dtype and device.
    """
    initial = _as_3x4(poses)
    if protocol not in ("gaussian", "barf"):
        raise ValueError(f"protocol must be 'gaussian' or 'barf', got {protocol!r}")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    n = initial.shape[0]
    pose64 = initial.detach().to("cpu", torch.float64)
    rotation0, translation0 = pose64[:, :, :3], pose64[:, :, 3]

    if protocol == "barf":
        if barf_std < 0:
            raise ValueError(f"barf_std must be >= 0, got {barf_std}")
        xi = torch.randn(n, 6, generator=generator, dtype=torch.float64) * barf_std
        noise = se3_exp(xi)
        noise_rot, noise_t = noise[:, :, :3], noise[:, :, 3]
        # c2w_noisy = T^-1 @ c2w_gt with T^-1 = [R^T | -R^T t].
        rotation = noise_rot.transpose(1, 2) @ rotation0
        translation = (noise_rot.transpose(1, 2) @ (translation0 - noise_t)[..., None])[..., 0]
    else:
        if rotation_noise_deg < 0:
            raise ValueError(f"rotation_noise_deg must be >= 0, got {rotation_noise_deg}")
        if translation_noise is not None and translation_noise_pct is not None:
            raise ValueError(
                "give either --translation-noise (scene units) or --translation-noise-pct "
                "(% of camera distance), not both"
            )
        for name, value in (
            ("translation_noise", translation_noise),
            ("translation_noise_pct", translation_noise_pct),
        ):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        omega = torch.randn(n, 3, generator=generator, dtype=torch.float64)
        omega = omega * math.radians(rotation_noise_deg)
        offset = torch.randn(n, 3, generator=generator, dtype=torch.float64)
        if translation_noise is not None:
            sigma_t = torch.full((n, 1), float(translation_noise), dtype=torch.float64)
        elif translation_noise_pct is not None:
            sigma_t = translation0.norm(dim=-1, keepdim=True) * (translation_noise_pct / 100.0)
        else:
            sigma_t = torch.zeros(n, 1, dtype=torch.float64)
        rotation = so3_exp(omega) @ rotation0
        translation = translation0 + offset * sigma_t

    noisy = torch.cat([rotation, translation[..., None]], -1)
    return noisy.to(device=poses.device, dtype=poses.dtype)


from taichi_nerf.pose_metrics import align_sim3, apply_sim3_to_poses, pose_errors  # noqa: E402
