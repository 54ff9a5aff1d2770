"""CPU determinism: every backward that reaches the poses sums in a fixed order, so the same
inputs give bit-identical gradients and two joint-training runs give bit-identical poses.

Before this, torch's ``values[ray_indices]`` backward (parallel atomic float adds on the CPU once
there are more than 32768 elements) made two runs drift apart by ~1e-11 as soon as the poses
started learning (issue 11, item 7).
"""

from pathlib import Path

import pytest
import torch
from conftest import TEST_ARCH

from taichi_nerf.kernels import HashGridSpec, composite, hash_encode, sh_encode
from taichi_nerf.kernels.packed import gather_rays, packed_info_from_sorted

DATA = Path(__file__).resolve().parents[1] / "data"  # generated demo scene (git-ignored)
REPEATS = 8  # backward calls compared with the first, bit for bit

pytestmark = pytest.mark.skipif(TEST_ARCH != "cpu", reason="CPU determinism (CPU session)")


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # torch's parallel paths (and their atomics) need > 1 thread
    yield
    torch.set_num_threads(before)


def _all_identical(fn):
    first = fn()
    for _ in range(REPEATS):
        again = fn()
        for a, b in zip(first, again):
            if not torch.equal(a, b):
                return False
    return True


def test_hash_encode_backward_is_bit_repeatable(two_torch_threads):
    spec = HashGridSpec(n_levels=8, log2_table_size=14, finest_resolution=256)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2**15, 3, generator=g).requires_grad_()
    table = (torch.rand(spec.table_size, 2, generator=g) - 0.5).requires_grad_()
    v = torch.randn(x.shape[0], spec.output_dim, generator=g)
    assert _all_identical(lambda: torch.autograd.grad(hash_encode(x, table, spec), (x, table), v))


def test_sh_and_composite_backward_are_bit_repeatable(two_torch_threads):
    g = torch.Generator().manual_seed(2)
    d = torch.nn.functional.normalize(torch.randn(2**15, 3, generator=g), dim=-1)
    d.requires_grad_()
    v = torch.randn(d.shape[0], 16, generator=g)
    assert _all_identical(lambda: torch.autograd.grad(sh_encode(d), (d,), v))
    n_rays, per_ray = 1024, 40
    ray_indices = torch.arange(n_rays).repeat_interleave(per_ray)
    sigmas = torch.rand(n_rays * per_ray, generator=g).requires_grad_()
    rgbs = torch.rand(n_rays * per_ray, 3, generator=g).requires_grad_()
    t_starts = torch.rand(n_rays * per_ray, generator=g)
    t_ends = t_starts + 0.05
    v_rgb = torch.randn(n_rays, 3, generator=g)

    def run():
        out = composite(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays, torch.ones(3))
        return torch.autograd.grad(out[0], (sigmas, rgbs), v_rgb)

    assert _all_identical(run)


@pytest.mark.parametrize("packed", [True, False], ids=["sorted+packed_info", "unsorted"])
def test_gather_rays_backward_is_bit_repeatable(two_torch_threads, packed):
    # 2^17 samples x 3 values: well past torch's parallel grain (32768), where its own
    # values[idx] backward adds with atomics in a varying order.
    g = torch.Generator().manual_seed(3)
    n_rays, n_samples = 1000, 2**17
    ray_indices = torch.randint(n_rays, (n_samples,), generator=g)
    info = None
    if packed:
        ray_indices = ray_indices.sort().values
        info = packed_info_from_sorted(ray_indices, n_rays)
    rays = torch.randn(n_rays, 3, generator=g, requires_grad=True)
    v = torch.randn(n_samples, 3, generator=g)
    assert _all_identical(lambda: torch.autograd.grad(gather_rays(rays, ray_indices, info),
                                                      (rays,), v))


def _final_poses(tmp_path, name):
    from taichi_nerf.training import (
        EvalConfig,
        NGPConfig,
        TrainConfig,
        train_with_pose_optimization,
    )

    cfg = TrainConfig(
        data_dir=str(DATA), downscale=4, output_dir=str(tmp_path), experiment_name=name,
        progress=False, init_mode="noisy", rotation_noise=3.0, translation_noise_pct=1.0,
        batch_size=256, num_iters=60, val_every=60, log_every=60, pose_opt_delay=10,
        num_val_views=1, eval=EvalConfig(num_test_views=1), device="cpu",
        # A small field and coarse marching: the point is the order of the sums, not quality.
        ngp=NGPConfig(target_samples=0, n_levels=4, log2_table_size=12, finest_resolution=64,
                      grid_resolution=32, marching_steps=128),
    )
    run = train_with_pose_optimization(cfg)["output_dir"]
    return torch.load(run / "final_poses.pt", weights_only=True)["optimized_poses"]


@pytest.mark.slow
def test_two_joint_training_runs_give_bit_identical_poses(tmp_path):
    first = _final_poses(tmp_path, "first")
    second = _final_poses(tmp_path, "second")
    assert torch.equal(first, second), float((first - second).abs().max())
