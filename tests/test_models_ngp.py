"""NGPField and NGPRenderer: shapes, ranges, trunc_exp, and gradients reaching the rays."""

import pytest
import torch
from conftest import random_rays

from taichi_nerf.models import NGPField, NGPRenderer, build_renderer, trunc_exp

AABB = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
SMALL = dict(n_levels=4, log2_table_size=12, finest_resolution=64, hidden_dim=16)


def _rays(n, seed=0):
    return random_rays(n, seed, target_std=0.3)


def test_trunc_exp_forward_is_exp_and_backward_is_clamped():
    x = torch.tensor([-20.0, 0.0, 3.0, 20.0], dtype=torch.float64, requires_grad=True)
    y = trunc_exp(x)
    assert torch.equal(y, torch.exp(x))
    (grad,) = torch.autograd.grad(y.sum(), x)
    expected = torch.exp(x.detach().clamp(-15, 15))
    assert torch.allclose(grad, expected)


def test_field_outputs_and_gradients_to_positions_and_directions():
    torch.manual_seed(0)
    field = NGPField(AABB, **SMALL)
    positions = (torch.rand(500, 3) * 1.8 - 0.9).requires_grad_()
    directions = torch.nn.functional.normalize(torch.randn(500, 3), dim=-1).requires_grad_()
    sigmas, rgbs = field(positions, directions)
    assert sigmas.shape == (500,) and rgbs.shape == (500, 3)
    assert (sigmas > 0).all() and ((rgbs > 0) & (rgbs < 1)).all()
    v_sigma, v_rgb = torch.randn_like(sigmas), torch.randn_like(rgbs)
    loss = (sigmas * v_sigma).sum() + (rgbs * v_rgb).sum()
    grads = torch.autograd.grad(loss, [positions, directions, field.encoding.table])
    for g in grads:
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert torch.allclose(field.density(positions.detach()), sigmas.detach())


def test_forward_packed_equals_forward_on_gathered_directions():
    from taichi_nerf.kernels.packed import PackedInfo

    torch.manual_seed(int(torch.randint(0, 2**31, ())))
    field = NGPField(AABB, **SMALL)
    counts = torch.randint(0, 6, (40,))
    ray_indices = torch.repeat_interleave(torch.arange(40), counts)
    offsets = torch.cumsum(counts, 0) - counts
    info = PackedInfo(starts=offsets.int(), counts=counts.int(), n_samples=int(counts.sum()),
                      max_count=int(counts.max()))
    positions = (torch.rand(ray_indices.numel(), 3) * 1.8 - 0.9).requires_grad_()
    rays_d = torch.nn.functional.normalize(torch.randn(40, 3), dim=-1).requires_grad_()
    packed = field.forward_packed(positions, rays_d, ray_indices, info)
    plain = field(positions, rays_d[ray_indices])
    v = [torch.randn_like(packed[0]), torch.randn_like(packed[1])]
    inputs = [positions, rays_d, field.encoding.table]
    g_packed = torch.autograd.grad(sum((o * w).sum() for o, w in zip(packed, v)), inputs)
    g_plain = torch.autograd.grad(sum((o * w).sum() for o, w in zip(plain, v)), inputs)
    for a, b in zip(packed, plain):
        assert torch.equal(a, b)  # the same values: SH of the same direction
    for a, b in zip(g_packed, g_plain):  # the same sums in another order
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    without_info = field.forward_packed(positions, rays_d, ray_indices, None)
    assert all(torch.equal(a, b) for a, b in zip(without_info, plain))
    empty = field.forward_packed(positions[:0], rays_d, ray_indices[:0], None)
    assert empty[0].shape == (0,) and empty[1].shape == (0, 3)
    assert empty[1].requires_grad  # the graph stays connected, as forward's


def test_field_normalises_by_the_scene_box():
    field = NGPField(torch.tensor([0.0, 0.0, 0.0, 2.0, 4.0, 8.0]), **SMALL)
    corners = torch.tensor([[0.0, 0.0, 0.0], [2.0, 4.0, 8.0], [1.0, 2.0, 4.0], [9.0, -1.0, 4.0]])
    expected = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [1.0, 0.0, 0.5]])
    assert torch.allclose(field.normalize(corners), expected)


def test_renderer_gradients_reach_field_and_rays():
    torch.manual_seed(0)
    renderer = NGPRenderer(AABB, 1.0, 5.0, grid_resolution=16, marching_steps=128, **SMALL)
    renderer.update_step(0)
    rays_o, rays_d = _rays(64)
    rays_o.requires_grad_()
    rays_d.requires_grad_()
    out = renderer.render_rays(rays_o, rays_d, background=torch.ones(3), train=True)
    assert out["rgb"].shape == (64, 3) and out["opacity"].shape == (64,)
    assert out["depth"].shape == (64,) and out["num_samples"] > 0
    loss = (out["rgb"] * torch.randn(64, 3)).sum()
    v_o, v_d, v_table = torch.autograd.grad(loss, [rays_o, rays_d, renderer.field.encoding.table])
    for g in (v_o, v_d, v_table):
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_renderer_state_dict_round_trip_includes_the_grid():
    torch.manual_seed(0)
    a = NGPRenderer(AABB, 1.0, 5.0, grid_resolution=16, marching_steps=128, **SMALL)
    for step in range(3):
        a.update_step(step)
    b = NGPRenderer(AABB, 1.0, 5.0, grid_resolution=16, marching_steps=128, **SMALL)
    b.load_state_dict(a.state_dict())
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert any(key.startswith("grid.") for key in a.state_dict())
    rays_o, rays_d = _rays(32, seed=1)
    with torch.no_grad():
        out_a = a.render_rays(rays_o, rays_d, background=torch.ones(3), train=False)
        out_b = b.render_rays(rays_o, rays_d, background=torch.ones(3), train=False)
    assert torch.equal(out_a["rgb"], out_b["rgb"])


def test_build_renderer():
    assert isinstance(build_renderer("ngp", AABB, 1.0, 5.0, grid_resolution=16, **SMALL),
                      NGPRenderer)
    vanilla = build_renderer("vanilla", AABB, 2.0, 6.0, num_coarse=8, num_fine=0, width=16,
                             depth=2, skip=None)
    assert type(vanilla).__name__ == "VanillaNeRF"
    with pytest.raises(ValueError, match="unknown model"):
        build_renderer("mip", AABB, 1.0, 5.0)


def test_smooth_l1_loss_is_mse_for_small_errors_and_linear_for_large():
    renderer = NGPRenderer(AABB, 0.1, 4.0, smooth_l1_beta=0.05, **SMALL)
    target = torch.rand(64, 3)
    small = target + (torch.rand(64, 3) - 0.5) * 0.05  # |error| < beta / 2
    loss, mse = renderer.training_loss({"rgb": small}, target)
    torch.testing.assert_close(loss, mse)  # below beta: 0.5 e^2 / beta * (2 beta) = e^2
    big = target.clone()
    big[0, 0] += 0.5  # one outlier pixel
    loss, mse = renderer.training_loss({"rgb": big}, target)
    expected = (0.5 - 0.05 / 2) * (2 * 0.05) / target.numel()  # linear: 2 beta (|e| - beta/2)
    torch.testing.assert_close(loss, torch.tensor(expected))
    assert loss < 0.2 * mse  # the outlier counts linearly, not squared
    plain = NGPRenderer(AABB, 0.1, 4.0, **SMALL)
    loss, mse = plain.training_loss({"rgb": big}, target)
    assert loss is mse
