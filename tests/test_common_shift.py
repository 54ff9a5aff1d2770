"""--pose-gauge shift: one shift shared by every camera centre, learned from the whole batch."""

import pytest
import torch

from taichi_nerf.data.demo import demo_camera_poses
from taichi_nerf.poses import CameraPoseParameters


def _poses(n: int = 8) -> torch.Tensor:
    return torch.as_tensor(demo_camera_poses("train", n), dtype=torch.float64)[:, :3]


def _seed() -> int:
    return int(torch.randint(0, 2**31, ()))


def test_the_shift_moves_every_centre_alike_and_sums_their_gradients():
    poses = _poses()
    params = CameraPoseParameters(poses)
    params.add_common_shift()
    assert torch.equal(params(), poses)  # zero at start: the initial poses exactly
    g = torch.Generator().manual_seed(_seed())
    shift = torch.randn(3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        params.common_shift.copy_(shift)
    moved = params()
    torch.testing.assert_close(moved[:, :, :3], poses[:, :, :3], rtol=0, atol=0)
    torch.testing.assert_close(moved[:, :, 3], poses[:, :, 3] + shift, rtol=0, atol=1e-15)
    upstream = torch.randn(8, 3, 4, generator=g, dtype=torch.float64)
    (params() * upstream).sum().backward()
    torch.testing.assert_close(params.common_shift.grad, params.translation_delta.grad.sum(0))
    ids = torch.tensor([5, 1])
    torch.testing.assert_close(params(ids), moved[ids])


def test_a_saved_run_with_the_shift_reads_back():
    params = CameraPoseParameters(_poses())
    params.add_common_shift()
    with torch.no_grad():
        params.common_shift.normal_()
        params.translation_delta.normal_()
    loaded = CameraPoseParameters.from_state_dict(params.state_dict())
    assert torch.equal(loaded(), params())


def test_camera_adam_steps_a_shared_vector_as_one_row():
    from taichi_nerf.training.camera_adam import CameraAdam

    g = torch.Generator().manual_seed(_seed())
    flat = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    row = torch.nn.Parameter(torch.zeros(1, 3, dtype=torch.float64))
    opts = [CameraAdam([flat], lr=1e-2), CameraAdam([row], lr=1e-2)]
    for _ in range(5):
        grad = torch.randn(3, generator=g, dtype=torch.float64)
        flat.grad, row.grad = grad.clone(), grad[None].clone()
        for opt in opts:
            opt.step()
    assert flat.abs().max() > 1e-3
    torch.testing.assert_close(flat.detach(), row.detach()[0], rtol=0, atol=1e-15)


@pytest.mark.parametrize("optimizer", ["adam", "camera_adam"])
def test_the_shift_moves_while_the_positions_wait(optimizer):
    from taichi_nerf.training.config import TrainConfig, resolve_config
    from taichi_nerf.training.pose_opt import PoseOptimizer

    cfg = resolve_config(TrainConfig(translation_delay=6, pose_opt_delay=2, num_iters=20,
                                     pose_optimizer=optimizer, pose_gauge="shift", device="cpu"),
                         torch.device("cpu"), image_width=32)
    params = CameraPoseParameters(_poses().float())
    opt = PoseOptimizer(params, cfg)
    assert "common_shift" in dict(params.named_parameters())
    target = torch.randn(8, 3, 4, generator=torch.Generator().manual_seed(_seed()))
    for step in range(6):
        opt.zero_grad()
        (params() * target).sum().backward()
        opt.step(step)
    assert params.translation_delta.detach().abs().max() <= (0.0 if optimizer == "adam" else 1e-6)
    # 4 steps at lr 3e-3: about 0.012 in length (Adam: per coordinate; camera_adam whitens the
    # row as a whole, so one coordinate alone can stay near 0 and the test takes the largest).
    assert params.common_shift.detach().abs().max() > 1e-3
    assert len(opt.optimizer.param_groups) == 2 and \
        opt.optimizer.param_groups[1]["params"][0] is params.common_shift


def test_no_shift_without_learned_positions():
    from taichi_nerf.training.config import TrainConfig, resolve_config
    from taichi_nerf.training.pose_opt import PoseOptimizer

    cfg = resolve_config(TrainConfig(pose_gauge="shift", pose_mode="rotation", device="cpu"),
                         torch.device("cpu"), image_width=32)
    params = CameraPoseParameters(_poses().float(), learn_translation=False)
    PoseOptimizer(params, cfg)
    assert "common_shift" not in dict(params.named_parameters())
