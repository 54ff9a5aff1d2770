"""render_rays / render_image: occlusion pruning, agreement with dense compositing, chunking."""

import pytest
import torch
from conftest import DEVICES, random_rays

from taichi_nerf.render import prune_occluded, render_image, render_rays

AABB = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
RENDER_TOL = 1e-5  # float32 compositing, different summation order


def _blob_field(positions, directions):
    """A soft ball of density with a colour that depends on position and direction."""
    sigma = 30.0 * torch.exp(-4.0 * (positions**2).sum(-1))
    rgb = torch.sigmoid(torch.cat([positions[:, :2], directions[:, :1]], -1) * 2.0)
    return sigma, rgb


def _rays(n, seed=0, device="cpu"):
    return tuple(t.to(device) for t in random_rays(n, seed, target_std=0.5))


def _full_grid(device="cpu"):
    from taichi_nerf.kernels.marching import OccupancyGrid

    grid = OccupancyGrid(AABB, resolution=8).to(device)
    grid.mark_all_occupied()
    return grid


def _dense_reference(rays_o, rays_d, ray_indices, t_starts, t_ends, background):
    """Per-ray loop: alpha compositing with T_i = exp(-sum_{j<i} sigma_j dt_j)."""
    out = background.repeat(rays_o.shape[0], 1).clone()
    for r in range(rays_o.shape[0]):
        m = ray_indices == r
        if not m.any():
            continue
        t0, t1 = t_starts[m].double(), t_ends[m].double()
        tm = 0.5 * (t0 + t1)
        pos = rays_o[r].double() + tm[:, None] * rays_d[r].double()
        sigma, rgb = _blob_field(pos, rays_d[r].double().expand_as(pos))
        tau = sigma * (t1 - t0)
        trans = torch.exp(-(torch.cumsum(tau, 0) - tau))
        w = trans * (1 - torch.exp(-tau))
        out[r] = ((w[:, None] * rgb).sum(0) + (1 - w.sum()) * background.double()).float()
    return out


def test_prune_occluded_matches_a_per_ray_loop():
    torch.manual_seed(0)
    n_rays = 20
    counts = torch.randint(0, 40, (n_rays,))
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    t_starts = torch.cat([torch.arange(int(c)) * 0.05 + 2.0 for c in counts])
    t_ends = t_starts + 0.05
    rays_o, rays_d = _rays(n_rays)
    eps = 1e-2
    keep = prune_occluded(lambda p: _blob_field(p, p)[0], rays_o, rays_d, ray_indices,
                          t_starts, t_ends, early_stop_eps=eps)
    for r in range(n_rays):
        m = ray_indices == r
        tm = 0.5 * (t_starts[m] + t_ends[m])
        sigma = _blob_field(rays_o[r] + tm[:, None] * rays_d[r], rays_d[r].expand(len(tm), 3))[0]
        tau = (sigma * 0.05).double()
        trans = torch.exp(-(torch.cumsum(tau, 0) - tau))
        assert torch.equal(keep[m], trans >= eps), r


@pytest.mark.parametrize("device", DEVICES)
def test_render_rays_matches_dense_compositing_and_chunking(device):
    from taichi_nerf.kernels.marching import march_rays

    rays_o, rays_d = _rays(48, device=device)
    background = torch.tensor([1.0, 0.5, 0.0], device=device)
    grid = _full_grid(device)
    out = render_rays(_blob_field, grid, rays_o, rays_d, near=1.0, far=5.0, step_size=0.02,
                      background=background)
    ray_indices, t_starts, t_ends = march_rays(grid, rays_o, rays_d, 1.0, 5.0, 0.02)
    expected = _dense_reference(rays_o, rays_d, ray_indices, t_starts, t_ends, background)
    assert torch.allclose(out["rgb"], expected, atol=RENDER_TOL)
    assert out["num_samples"] == ray_indices.numel() > 1000

    class Wrapper(torch.nn.Module):
        def render_rays(self, o, d, *, background, train):
            return render_rays(_blob_field, grid, o, d, near=1.0, far=5.0, step_size=0.02,
                               background=background)

    whole = render_image(Wrapper(), rays_o, rays_d, background=background, chunk=48)
    pieces = render_image(Wrapper(), rays_o, rays_d, background=background, chunk=7,
                          height=6, width=8)
    assert torch.allclose(whole["rgb"].reshape(6, 8, 3), pieces["rgb"], atol=1e-6)
    assert pieces["depth"].shape == (6, 8)


@pytest.mark.parametrize("device", DEVICES)
def test_pruning_changes_the_image_by_less_than_eps(device):
    rays_o, rays_d = _rays(48, seed=2, device=device)
    background = torch.ones(3, device=device)
    grid = _full_grid(device)
    full = render_rays(_blob_field, grid, rays_o, rays_d, near=1.0, far=5.0, step_size=0.02,
                       background=background)
    pruned = render_rays(_blob_field, grid, rays_o, rays_d, near=1.0, far=5.0, step_size=0.02,
                         background=background, density_fn=lambda p: _blob_field(p, p)[0],
                         early_stop_eps=1e-4)
    assert pruned["num_samples"] < full["num_samples"]
    assert (pruned["rgb"] - full["rgb"]).abs().max() < 2e-4


@pytest.mark.parametrize("device", DEVICES)
def test_render_rays_sends_gradients_to_the_rays(device):
    rays_o, rays_d = _rays(16, seed=3, device=device)
    rays_o.requires_grad_()
    rays_d.requires_grad_()
    out = render_rays(_blob_field, _full_grid(device), rays_o, rays_d, near=1.0, far=5.0,
                      step_size=0.05, background=torch.ones(3, device=device))
    v_o, v_d = torch.autograd.grad(out["rgb"].sum(), [rays_o, rays_d])
    assert v_o.abs().sum() > 0 and v_d.abs().sum() > 0


#: gather_rays vs the twin: sums of the same float32 values in another order.
GATHER_BWD_TOL = dict(rtol=1e-5, atol=1e-5)


def test_gather_rays_matches_its_twin_and_gradchecks():
    from taichi_nerf import reference as ref
    from taichi_nerf.kernels.packed import gather_rays, packed_info_from_sorted

    counts = torch.randint(0, 9, (50,))
    counts[::7] = 0  # rays without samples
    ray_indices = torch.repeat_interleave(torch.arange(50), counts)
    info = packed_info_from_sorted(ray_indices, 50)
    values = torch.randn(50, 3, requires_grad=True)
    v = torch.randn(ray_indices.shape[0], 3)
    want = ref.gather_rays(values, ray_indices)
    (want_grad,) = torch.autograd.grad(want, values, v)
    for packed in (info, None):
        got = gather_rays(values, ray_indices, packed)
        assert torch.equal(got, want)
        (grad,) = torch.autograd.grad(got, values, v)
        torch.testing.assert_close(grad, want_grad, **GATHER_BWD_TOL)
    small = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([0, 0, 2, 3, 3, 3, 5])
    small_info = packed_info_from_sorted(idx, 6)
    assert torch.autograd.gradcheck(lambda x: gather_rays(x, idx, small_info), (small,))
    shuffled = idx[torch.randperm(7)]
    assert torch.autograd.gradcheck(lambda x: gather_rays(x, shuffled), (small,))


def test_ray_points_matches_its_twin_the_gathers_it_replaces_and_gradchecks():
    from taichi_nerf import reference as ref
    from taichi_nerf.kernels.packed import gather_rays, packed_info_from_sorted, ray_points

    counts = torch.randint(0, 9, (50,))
    counts[::7] = 0  # rays without samples
    ray_indices = torch.repeat_interleave(torch.arange(50), counts)
    info = packed_info_from_sorted(ray_indices, 50)
    o, d = torch.randn(50, 3, requires_grad=True), torch.randn(50, 3, requires_grad=True)
    t = torch.rand(ray_indices.shape[0]) * 4.0
    v = torch.randn(ray_indices.shape[0], 3)
    want = ref.ray_points(o, d, t, ray_indices)
    want_grads = torch.autograd.grad(want, (o, d), v)
    # What render_rays computed before: the same sums in the same order, so the same bits.
    before = gather_rays(o, ray_indices, info) + t[:, None] * gather_rays(d, ray_indices, info)
    before_grads = torch.autograd.grad(before, (o, d), v)
    for packed in (info, None):
        got = ray_points(o, d, t, ray_indices, packed)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        grads = torch.autograd.grad(got, (o, d), v)
        for grad, want_grad in zip(grads, want_grads):
            torch.testing.assert_close(grad, want_grad, **GATHER_BWD_TOL)
    got = ray_points(o, d, t, ray_indices, info)
    assert torch.equal(got, before)
    for grad, before_grad in zip(torch.autograd.grad(got, (o, d), v), before_grads):
        assert torch.equal(grad, before_grad)
    # Only one input needing a gradient; float64 gradcheck, sorted and shuffled samples.
    (v_d,) = torch.autograd.grad(ray_points(o.detach(), d, t, ray_indices, info), (d,), v)
    torch.testing.assert_close(v_d, want_grads[1], **GATHER_BWD_TOL)
    small_o = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    small_d = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([0, 0, 2, 3, 3, 3, 5])
    small_t = torch.rand(7, dtype=torch.float64)
    small_info = packed_info_from_sorted(idx, 6)
    assert torch.autograd.gradcheck(
        lambda a, b: ray_points(a, b, small_t, idx, small_info), (small_o, small_d))
    perm = torch.randperm(7)
    assert torch.autograd.gradcheck(
        lambda a, b: ray_points(a, b, small_t[perm], idx[perm]), (small_o, small_d))


def test_ray_points_refuses_mismatched_shapes():
    from taichi_nerf.kernels.packed import packed_info_from_sorted, ray_points

    o, idx = torch.zeros(4, 3), torch.tensor([0, 1, 1, 3])
    with pytest.raises(ValueError, match="rays_o and rays_d"):
        ray_points(o, torch.zeros(4, 2), torch.zeros(4), idx)
    with pytest.raises(ValueError, match="t must be"):
        ray_points(o, o, torch.zeros(3), idx)
    with pytest.raises(ValueError, match="packed_info has 5 rays"):
        ray_points(o, o, torch.zeros(4), idx, packed_info_from_sorted(idx, 5))


@pytest.mark.parametrize("device", DEVICES)
def test_render_rays_keys_types_and_packed_info(device):
    rays_o, rays_d = _rays(32, seed=3, device=device)
    out = render_rays(_blob_field, _full_grid(device), rays_o, rays_d, near=1.0, far=5.0,
                      step_size=0.05, background=torch.ones(3, device=device),
                      density_fn=lambda p: _blob_field(p, p)[0])
    assert {"rgb", "opacity", "depth", "num_samples", "num_marched"} <= set(out)
    assert type(out["num_samples"]) is int and type(out["num_marched"]) is int
    assert 0 < out["num_samples"] <= out["num_marched"]
    info = out["packed_info"]
    assert info.n_samples == out["num_samples"] == int(info.counts.sum())
    assert int(info.counts.max()) <= info.max_count
