"""--pose-prior: an L2 penalty on the pose deltas, pulling each camera toward its initial pose."""

import torch

from taichi_nerf.data.demo import demo_camera_poses
from taichi_nerf.poses import CameraPoseParameters
from taichi_nerf.training.config import TrainConfig, resolve_config
from taichi_nerf.training.pose_opt import PoseOptimizer


def _setup(weight: float, **extra):
    cfg = resolve_config(TrainConfig(pose_prior=weight, device="cpu", **extra),
                         torch.device("cpu"), image_width=32)
    params = CameraPoseParameters(torch.as_tensor(demo_camera_poses("train", 6),
                                                  dtype=torch.float64)[:, :3])
    return params, PoseOptimizer(params, cfg)


def test_the_prior_is_the_weighted_mean_squared_delta_and_its_gradient():
    weight = float(torch.rand(()) * 0.1 + 1e-3)
    params, opt = _setup(weight)
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    with torch.no_grad():
        params.rotation_delta.copy_(torch.randn(6, 3, generator=g, dtype=torch.float64) * 0.05)
        params.translation_delta.copy_(torch.randn(6, 3, generator=g, dtype=torch.float64) * 0.1)
    omega, delta_t = (d.detach().clone() for d in params.deltas())
    value = opt.prior()
    expected = weight * (omega.square().sum(-1) + delta_t.square().sum(-1)).mean()
    torch.testing.assert_close(value.detach(), expected)
    value.backward()
    torch.testing.assert_close(params.rotation_delta.grad, 2 * weight * omega / 6)
    torch.testing.assert_close(params.translation_delta.grad, 2 * weight * delta_t / 6)


def test_no_prior_costs_nothing():
    params, opt = _setup(0.0)
    assert opt.prior() == 0.0


def test_the_prior_alone_pulls_the_poses_back_to_their_start():
    params, opt = _setup(1.0, pose_opt_delay=0, pose_lr=1e-2, pose_lr_final=1e-2)
    with torch.no_grad():
        params.rotation_delta.fill_(0.05)
        params.translation_delta.fill_(-0.05)
    for step in range(20):
        opt.zero_grad()
        opt.prior().backward()
        opt.step(step)
    assert max(float(d.detach().abs().max()) for d in params.deltas()) < 0.02  # from 0.05
