"""The pose side of training: the pose parameters and how the optimiser moves them.

:func:`build_pose_parameters` makes the ``CameraPoseParameters`` a resolved config asks for
(``pose_mode``; with ``pose_preconditioning="camp"`` the latent-``z`` form of CamP, whose ``P``
comes from the initial poses and intrinsics). :class:`PoseOptimizer` owns everything about the
steps: Adam, the delay before poses move, the learning-rate schedule (linear warm-up, then
exponential decay to ``pose_lr_final``), gradient clipping and the optional L2 prior on the
deltas, and the tail averaging of ``pose_average`` (the last steps' running mean becomes the
final poses). The trainer only calls ``moving``, ``prior``, ``zero_grad`` and ``step``.
"""

from __future__ import annotations

from typing import Any

import torch

from taichi_nerf.poses import CameraPoseParameters

__all__ = ["build_pose_parameters", "PoseOptimizer", "pose_lr_factor"]


def build_pose_parameters(cfg, initial_poses: torch.Tensor, train_set) -> CameraPoseParameters:
    """``CameraPoseParameters`` for a resolved config, on ``initial_poses``' device."""
    learn_rotation = cfg.pose_mode in ("rotation", "both")
    learn_translation = cfg.pose_mode in ("translation", "both")
    preconditioner = None
    if cfg.pose_preconditioning == "camp" and cfg.pose_mode != "off":
        from taichi_nerf.pose_precond import camp_preconditioner

        preconditioner = camp_preconditioner(
            initial_poses.cpu(), train_set.intrinsics.cpu(), train_set.width, train_set.height,
            train_set.near, train_set.far, damping=cfg.camp_damping,
            learn_rotation=learn_rotation, learn_translation=learn_translation)
        preconditioner = preconditioner.to(initial_poses)
    elif cfg.pose_preconditioning in ("orbit", "pivot") and cfg.pose_mode != "off":
        from taichi_nerf.pose_precond import orbit_preconditioner

        preconditioner = orbit_preconditioner(
            initial_poses.cpu(), train_set.near, train_set.far,
            _box_centre(getattr(train_set, "scene_aabb", None)),
            learn_rotation=learn_rotation, learn_translation=learn_translation,
            camera_shifts=cfg.pose_preconditioning == "orbit")
        preconditioner = preconditioner.to(initial_poses)
    return CameraPoseParameters(initial_poses, learn_rotation=learn_rotation,
                                learn_translation=learn_translation,
                                preconditioner=preconditioner)


def _box_centre(scene_aabb) -> torch.Tensor | None:
    """Centre ``[3]`` (float64) of a ``(xmin, ymin, zmin, xmax, ymax, zmax)`` box, or None."""
    if scene_aabb is None:
        return None
    aabb = torch.as_tensor(scene_aabb, dtype=torch.float64).reshape(2, 3)
    return 0.5 * (aabb[0] + aabb[1])


def pose_lr_factor(k: int, warmup: int, decay_steps: int, final_ratio: float) -> float:
    """Learning-rate factor ``k`` pose steps after the delay: ``min(1, (k+1)/warmup)`` times
    ``final_ratio ** (k / decay_steps)`` (exponential decay from the start rate)."""
    warm = 1.0 if warmup <= 0 else min(1.0, (k + 1) / warmup)
    return warm * final_ratio ** (k / max(decay_steps, 1))


class PoseOptimizer:
    """Adam on the pose parameters, with the delay, schedule, clipping and prior of a config.

    Args:
        pose_params: the module whose ``parameters()`` are stepped (none: nothing to do).
        cfg: a resolved ``TrainConfig`` (``pose_lr``, ``pose_lr_final``, ``pose_lr_warmup``,
            ``pose_opt_delay``, ``pose_grad_clip``, ``pose_prior``, ``num_iters``).
    """

    def __init__(self, pose_params: CameraPoseParameters, cfg, scene_aabb=None) -> None:
        self.pose_params = pose_params
        self.gauge = None
        if cfg.pose_gauge == "centres" and cfg.pose_mode == "both":
            self.gauge = _CentreGauge(pose_params, scene_aabb)
        elif cfg.pose_gauge in ("fixed", "rig") and cfg.pose_mode == "both":
            self.gauge = _Gauge(pose_params, scene_aabb, rig=cfg.pose_gauge == "rig")
        elif cfg.pose_gauge == "shift" and cfg.pose_mode in ("both", "translation"):
            pose_params.add_common_shift()  # (before a checkpoint's state is loaded into it)
        self.params = [p for p in pose_params.parameters() if p.requires_grad]
        self.delay, self.clip, self.prior_weight = cfg.pose_opt_delay, cfg.pose_grad_clip, \
            cfg.pose_prior
        self.orbit_delay = cfg.orbit_delay if pose_params.preconditioned and \
            cfg.pose_preconditioning in ("orbit", "pivot") else 0
        self.translation_delay = 0 if pose_params.preconditioned else cfg.translation_delay
        self.optimizer = self.scheduler = None
        if self.params:
            named = dict(pose_params.named_parameters())
            rig, shift = named.get("rig_motion"), named.get("common_shift")
            groups = [{"params": [p for p in self.params if p is not rig and p is not shift]}]
            if rig is not None:  # the shared rig motion steps in radians, unpreconditioned rate
                groups.append({"params": [rig], "lr": cfg.rig_lr})
            if shift is not None:  # shared by every camera: a group (a row) of its own
                groups.append({"params": [shift]})
            if cfg.pose_optimizer == "camera_adam":  # (config refuses it with the rig gauge)
                from taichi_nerf.training.camera_adam import CameraAdam

                self.optimizer = CameraAdam(groups, lr=cfg.pose_lr,
                                            travel_boost=cfg.pose_travel_boost,
                                            travel_full_rate=cfg.pose_travel_full_rate)
            else:
                self.optimizer = torch.optim.Adam(groups, lr=cfg.pose_lr)
            ratio = cfg.pose_lr_final / cfg.pose_lr
            decay = cfg.num_iters - cfg.pose_opt_delay
            warmup = cfg.pose_lr_warmup
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda k: pose_lr_factor(k, warmup, decay, ratio))
        self.averager = None
        if self.params and cfg.pose_average > 0:
            self.averager = _TailAverage(self.params, cfg.num_iters, cfg.pose_opt_delay,
                                         cfg.pose_average)

    @property
    def active(self) -> bool:
        """Whether any pose parameter is learned at all."""
        return self.optimizer is not None

    def moving(self, step: int) -> bool:
        """Whether the poses move at (0-based) training step ``step``."""
        return self.active and step >= self.delay

    def prior(self) -> torch.Tensor | float:
        """``pose_prior * mean(|omega|^2 + |delta_t|^2)`` (0 when the weight is 0)."""
        if self.prior_weight <= 0:
            return 0.0
        omega, delta_t = self.pose_params.deltas()
        return self.prior_weight * (omega.square().sum(-1) + delta_t.square().sum(-1)).mean()

    def zero_grad(self) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)

    def step(self, step: int) -> None:
        """Clip, step Adam and the schedule: only once the poses move (``moving(step)``)."""
        if not self.moving(step):
            return
        if step < self.orbit_delay and self.pose_params.latent.grad is not None:
            self.pose_params.latent.grad[:, :2] = 0  # the orbit turns wait (Adam: exactly still)
        if step < self.translation_delay:
            for name, p in self.pose_params.named_parameters():
                if name == "translation_delta" and p.grad is not None:
                    p.grad.zero_()  # positions wait (Adam: exactly still; camera_adam: ~1e-8)
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.gauge is not None:
            self.gauge.apply()
        if self.averager is not None:
            self.averager.after_step(step)

    @property
    def lr(self) -> float | None:
        return self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else None

    def state_dict(self) -> dict[str, Any]:
        """``{"pose_optimizer", "pose_scheduler"}`` (None when nothing is learned)."""
        return {"pose_optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "pose_scheduler": _scheduler_state(self.scheduler),
                "pose_average": self.averager.state_dict() if self.averager else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (also a checkpoint of the ExponentialLR era: the schedule
        is a function of the pose step count, which both store as ``last_epoch``)."""
        if self.optimizer is None or state.get("pose_optimizer") is None:
            return
        self.optimizer.load_state_dict(state["pose_optimizer"])
        if self.averager is not None:
            self.averager.load_state_dict(state.get("pose_average"))
        sched = state.get("pose_scheduler") or {}
        if "last_epoch" in sched:
            self.scheduler.last_epoch = int(sched["last_epoch"])
            self.scheduler._step_count = int(sched.get("_step_count", sched["last_epoch"] + 1))
            k = self.scheduler.last_epoch
            for group, base, fn in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas):
                group["lr"] = base * fn(k)


class _TailAverage:
    """Polyak averaging of the last pose steps: from (0-based) step ``start`` on, a running mean
    (float64) of the pose parameters after each step; the last step ends by writing that mean
    into the parameters, so the final poses, checkpoint and metrics all hold it.

    Why: near the end the poses no longer converge but jitter about the optimum, driven by the
    gradient noise of a few dozen rays per camera (Adam moves about ``lr`` per step whatever the
    gradient's size). The mean of that walk lies closer to the optimum than its last point
    (BENCHMARKS.md, "pose averaging").
    """

    def __init__(self, params: list[torch.Tensor], num_iters: int, delay: int,
                 fraction: float) -> None:
        pose_steps = max(num_iters - delay, 1)
        self.params, self.last = params, num_iters - 1
        self.start = num_iters - max(1, round(fraction * pose_steps))
        self.mean: list[torch.Tensor] | None = None
        self.count = 0

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        if step < self.start:
            return
        self.count += 1
        if self.mean is None:
            self.mean = [p.detach().double().clone() for p in self.params]
        else:
            for mean, p in zip(self.mean, self.params):
                mean.add_(p.detach().double() - mean, alpha=1.0 / self.count)
        if step == self.last:
            for mean, p in zip(self.mean, self.params):
                p.copy_(mean.to(p.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": None if self.mean is None else
                [m.clone() for m in self.mean]}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """A checkpoint without averaging state (saved before averaging began, or by a run
        without it) starts the mean afresh."""
        if not state or state.get("mean") is None:
            self.mean, self.count = None, 0
            return
        device = self.params[0].device
        self.mean = [m.to(device=device, dtype=torch.float64).clone() for m in state["mean"]]
        self.count = int(state["count"])


def _scheduler_state(scheduler) -> dict[str, Any] | None:
    # The lambda itself is code, rebuilt from the config; its state is the step count.
    if scheduler is None:
        return None
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def _rig_basis(pose_params: CameraPoseParameters, scene_aabb) -> tuple[torch.Tensor, float]:
    """:func:`~taichi_nerf.pose_precond.rig_motion_basis` of the initial poses (about the scene
    box's centre, or the centres' mean), and the rig's radius it measures shifts in."""
    from taichi_nerf.pose_precond import rig_motion_basis

    centres = pose_params.initial_poses.detach().double()[:, :, 3]
    pivot = _box_centre(scene_aabb)
    pivot = centres.mean(0) if pivot is None else pivot.to(centres.device)
    scale = float((centres - pivot).norm(dim=-1).mean().clamp_min(1e-6))
    return rig_motion_basis(centres, pivot, scale), scale


class _CentreGauge:
    """``pose_gauge="centres"``: after every pose step, the global rigid motion of the rig that
    best explains how the camera **centres** moved (least squares over all cameras) is taken
    back from every camera, orientations included.

    Why centres alone: the images cannot see a rigid motion of the whole rig (the gauge), so only
    the initial poses can anchor it, and their centres do so far more precisely than their
    orientations (1% of the distance against 3 degrees on the main job: the rig's turn is pinned
    to ~0.1 degree by 100 centres, ~0.3 degree by the orientations). And a common turn of every
    camera in place, which the images do see, leaves the centres where they are, so this fit
    never removes it (a fit that also weighs orientations does, see BENCHMARKS.md). Works with
    any parameterisation: with a latent ``z`` the change is mapped back through ``P^-1``.
    Directions the centres cannot pin (e.g. a turn about the axis of collinear centres) are
    left free.
    """

    def __init__(self, pose_params: CameraPoseParameters, scene_aabb) -> None:
        basis, _ = _rig_basis(pose_params, scene_aabb)
        self.basis, self.pose_params = basis, pose_params
        centre_rows = basis[:, 3:, :]  # how each centre moves with the rig motion g
        lhs = torch.einsum("nij,nik->jk", centre_rows, centre_rows)
        values, vectors = torch.linalg.eigh(lhs)
        keep = values > 1e-9 * values.max().clamp_min(1e-30)
        self.solve = (vectors[:, keep] / values[keep]) @ vectors[:, keep].T  # pseudo-inverse
        self.p_inverse = None
        if pose_params.preconditioned:
            self.p_inverse = torch.linalg.pinv(pose_params.preconditioner.double())

    def fit(self, deltas: torch.Tensor) -> torch.Tensor:
        """Rig motion ``g [6]`` that best explains the centre moves ``deltas[:, 3:]``."""
        centre_rows = self.basis[:, 3:, :]
        return self.solve @ torch.einsum("nij,ni->j", centre_rows, deltas[:, 3:].double())

    @torch.no_grad()
    def apply(self) -> None:
        params = self.pose_params
        deltas = params.camera_deltas().double()
        change = -(self.basis @ self.fit(deltas)[:, None])[..., 0]  # [N, 6]
        if self.p_inverse is not None:
            latent = params.latent
            latent.add_((self.p_inverse @ change[..., None])[..., 0].to(latent.dtype))
            return
        for name, part in (("rotation_delta", change[:, :3]), ("translation_delta", change[:, 3:])):
            delta = params.get_buffer_or_param(name)
            delta.add_(part.to(delta.dtype))


class _Gauge:
    """Keeps the per-camera deltas free of any global rigid motion of the rig, see
    :func:`taichi_nerf.pose_precond.remove_rig_motion`: ``pose_gauge="fixed"`` leaves the rig
    where the initial poses put it; ``"rig"`` gives the rig one shared rigid motion of its own
    (``rig_motion``, plain Adam at ``rig_lr``) that learns from every camera's gradient."""

    def __init__(self, pose_params: CameraPoseParameters, scene_aabb, rig: bool = False) -> None:
        self.basis, self.scale = _rig_basis(pose_params, scene_aabb)
        self.pose_params = pose_params
        if rig and "rig_motion" not in dict(pose_params.named_parameters()):
            pose_params.add_rig_motion(self.basis)
        if not pose_params.preconditioned:
            raise ValueError("--pose-gauge fixed/rig needs --pose-preconditioning camp (the rig "
                             "motion is removed in CamP's whitened metric)")
        # The rig motion as latent directions: z-space images of the basis, B_i = P_i^-1 A_i.
        p_inverse = torch.linalg.pinv(pose_params.preconditioner.double())
        self.b_basis = p_inverse @ self.basis

    @torch.no_grad()
    def apply(self) -> None:
        """Remove the rig motion from the latents, fitted in the whitened metric ``|z|``: there
        the rig motion (soft for every camera) and what the images do see are orthogonal, so
        an observable correction (e.g. every camera turning in place) is left alone."""
        params = self.pose_params
        z = params.latent.double()
        change = -(self.b_basis @ self.fit(z)[:, None])[..., 0]
        params.latent.add_(change.to(params.latent.dtype))

    def fit(self, z: torch.Tensor) -> torch.Tensor:
        """Least-squares rig motion ``g [6]`` of latents ``z [N, 6]``: ``z_i ~ P_i^-1 A_i g``."""
        b = self.b_basis
        lhs = torch.einsum("nij,nik->jk", b, b)
        return torch.linalg.solve(lhs, torch.einsum("nij,ni->j", b, z))
