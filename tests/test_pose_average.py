"""--pose-average: the final poses are the running mean of the last pose steps (Polyak)."""

import pytest
import torch

from taichi_nerf.training.pose_opt import _TailAverage


def _walk(steps: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(steps, 5, 3, generator=generator)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_last_step_writes_the_mean_of_the_tail(fraction):
    num_iters, delay = 40, 8
    values = _walk(num_iters, int(torch.randint(0, 2**31, ())))
    param = torch.nn.Parameter(torch.zeros(5, 3))
    average = _TailAverage([param], num_iters, delay, fraction)
    for step in range(delay, num_iters):  # poses move from the delay on
        with torch.no_grad():
            param.copy_(values[step])
        average.after_step(step)
    tail = round(fraction * (num_iters - delay))
    expected = values[num_iters - tail:].double().mean(0).float()
    assert average.count == tail
    torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-6)
    assert not torch.equal(param.detach(), values[-1])  # not merely the last point


def test_resuming_mid_average_gives_the_same_mean():
    num_iters = 30
    values = _walk(num_iters, int(torch.randint(0, 2**31, ())))
    results = []
    for cut in (None, 24):
        param = torch.nn.Parameter(torch.zeros(5, 3))
        average = _TailAverage([param], num_iters, 0, 0.5)
        for step in range(num_iters):
            if step == cut:  # a fresh averager from the checkpointed state
                state = average.state_dict()
                average = _TailAverage([param], num_iters, 0, 0.5)
                average.load_state_dict(state)
            with torch.no_grad():
                param.copy_(values[step])
            average.after_step(step)
        results.append(param.detach().clone())
    assert torch.equal(results[0], results[1])


def test_pose_average_must_be_a_fraction():
    from taichi_nerf.training.config import ConfigError, TrainConfig, resolve_config

    with pytest.raises(ConfigError, match="--pose-average must be a fraction"):
        resolve_config(TrainConfig(pose_average=1.0), torch.device("cpu"), image_width=32)


@pytest.mark.parametrize("optimizer", ["adam", "camera_adam"])
def test_translation_delay_keeps_positions_still_while_rotations_move(optimizer):
    from taichi_nerf.data.demo import demo_camera_poses
    from taichi_nerf.poses import CameraPoseParameters
    from taichi_nerf.training.config import TrainConfig, resolve_config
    from taichi_nerf.training.pose_opt import PoseOptimizer

    cfg = resolve_config(TrainConfig(translation_delay=6, pose_opt_delay=2, num_iters=20,
                                     pose_optimizer=optimizer, device="cpu"),
                         torch.device("cpu"), image_width=32)
    poses = torch.as_tensor(demo_camera_poses("train", 8), dtype=torch.float32)[:, :3]
    params = CameraPoseParameters(poses)
    opt = PoseOptimizer(params, cfg)
    target = torch.randn(8, 3, 4, generator=torch.Generator().manual_seed(
        int(torch.randint(0, 2**31, ()))))
    first_rotation_step = None
    for step in range(10):
        opt.zero_grad()
        (params() * target).sum().backward()
        opt.step(step)
        omega, delta_t = (d.detach().abs().max().item() for d in params.deltas())
        if omega > 0 and first_rotation_step is None:
            first_rotation_step = step
        if step < 6:
            assert delta_t <= (0.0 if optimizer == "adam" else 1e-6), (step, delta_t)
    assert first_rotation_step == 2  # rotations move from --pose-opt-delay
    assert params.deltas()[1].detach().abs().max() > 1e-4  # positions move after the delay
