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
