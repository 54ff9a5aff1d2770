"""OccupancyGrid and march_rays: invariants, the dense twin, uniform stepping, the update schedule."""

import math

import pytest
import torch
from conftest import DEVICES, needs_cuda_session, run_on_cpu_backend

from taichi_nerf import reference as ref
from taichi_nerf.kernels import _common
from taichi_nerf.kernels.marching import OccupancyGrid, march_rays

DTYPES = [torch.float32, torch.float64]

#: A float32 midpoint can round onto a cell face differently in the kernel (fused multiply-add)
#: and in torch; such samples (and only those) may differ. Distance to a face, in cells.
FACE_SLACK_CELLS = 1e-4
#: Slack, in t, for "inside [near, far]" and "inside the box" checks of float32 samples.
T_SLACK = {torch.float32: 1e-5, torch.float64: 1e-12}


def random_grid(resolution, occupied_share, device, aabb=(-1.0, -0.5, -1.5, 1.2, 0.5, 1.0)):
    grid = OccupancyGrid(torch.tensor(aabb), resolution=resolution).to(device)
    grid.occupancy.copy_(torch.rand(resolution**3, device=device) < occupied_share)
    return grid


def random_rays(n_rays, dtype, device, axis_aligned_share=0.1):
    """Rays from around the box aimed near its centre; a share with zero direction components."""
    origins = torch.randn(n_rays, 3, dtype=torch.float64) * 1.5
    origins = origins + torch.nn.functional.normalize(origins, dim=-1) * 1.5
    dirs = -origins + torch.randn(n_rays, 3, dtype=torch.float64) * 0.7
    zero = torch.rand(n_rays) < axis_aligned_share
    dirs[zero, torch.randint(0, 3, (int(zero.sum()),))] = 0.0
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    return origins.to(dtype=dtype, device=device), dirs.to(dtype=dtype, device=device)


def per_ray(ray_indices, values, n_rays):
    return [values[ray_indices == r] for r in range(n_rays)]


def cell_of(grid, points):
    """Flat cell index and fractional cell coordinates of points (float64)."""
    box = grid.aabb.double().to(points.device)
    u = (points.double() - box[:3]) / (box[3:] - box[:3]) * grid.resolution
    cell = torch.floor(u).long().clamp(0, grid.resolution - 1)
    res = grid.resolution
    return (cell[:, 0] * res + cell[:, 1]) * res + cell[:, 2], u


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stratified", [False, True])
def test_matches_dense_twin_exactly_float64(device, stratified):
    grid = random_grid(int(torch.randint(5, 20, ())), 0.15, device)
    rays_o, rays_d = random_rays(300, torch.float64, device)
    near = torch.rand(300, dtype=torch.float64, device=device)
    far = near + 0.5 + 5 * torch.rand(300, dtype=torch.float64, device=device)
    step = 0.004 + 0.03 * float(torch.rand(()))
    seed = int(torch.randint(0, 2**31, ()))
    outs = []
    for fn in (march_rays, ref.march_rays):
        gen = torch.Generator(device=device).manual_seed(seed)
        outs.append(fn(grid, rays_o, rays_d, near, far, step, 40, stratified, gen))
    got, want = outs
    assert want[0].numel() > 100
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_matches_dense_twin_float32_up_to_faces(device):
    grid = random_grid(12, 0.2, device)
    rays_o, rays_d = random_rays(400, torch.float32, device)
    step = 0.01
    got = march_rays(grid, rays_o, rays_d, 0.2, 6.0, step)
    want = ref.march_rays(grid, rays_o, rays_d, 0.2, 6.0, step)
    key = lambda out: {(int(r), float(t)) for r, t in zip(out[0].tolist(), out[1].tolist())}
    got_keys, want_keys = key(got), key(want)
    for r, t in got_keys ^ want_keys:
        # Only samples whose midpoint sits on a cell face may disagree.
        t_end = min(t + step, float(ref.ray_aabb_bounds(grid.aabb, rays_o[r : r + 1],
                    rays_d[r : r + 1], 0.2, 6.0, step)[1]))  # fmt: skip
        mid = rays_o[r].double() + (t + t_end) / 2 * rays_d[r].double()
        _, u = cell_of(grid, mid[None])
        assert float((u - u.round()).abs().min()) < FACE_SLACK_CELLS, (r, t)
    assert len(got_keys ^ want_keys) <= 2
    assert len(got_keys) > 100


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_invariants(device, dtype):
    grid = random_grid(16, 0.1, device)
    n_rays, cap, near, far, step = 500, 25, 0.3, 5.0, 0.013
    rays_o, rays_d = random_rays(n_rays, dtype, device)
    ray_indices, t_starts, t_ends = march_rays(grid, rays_o, rays_d, near, far, step, cap)
    assert ray_indices.dtype == torch.long and t_starts.dtype == dtype
    assert ray_indices.numel() > 100
    assert bool((ray_indices[1:] >= ray_indices[:-1]).all())  # sorted by ray
    counts = torch.bincount(ray_indices, minlength=n_rays)
    assert int(counts.max()) <= cap and int(counts.max()) == cap  # the cap binds and holds
    slack = T_SLACK[dtype]
    assert bool((t_starts >= near - slack).all()) and bool((t_ends <= far + slack).all())
    assert bool((t_ends > t_starts).all()) and bool((t_ends - t_starts <= step * (1 + 1e-6)).all())
    for starts, ends in zip(
        per_ray(ray_indices, t_starts, n_rays), per_ray(ray_indices, t_ends, n_rays)
    ):
        assert bool((starts[1:] > starts[:-1]).all()) and bool(
            (ends[:-1] <= starts[1:] + slack).all()
        )
    mids = ((t_starts + t_ends) / 2)[:, None]
    points = rays_o[ray_indices].double() + mids.double() * rays_d[ray_indices].double()
    box = grid.aabb.double().to(device)
    assert bool((points >= box[:3] - slack).all()) and bool((points <= box[3:] + slack).all())
    cells, u = cell_of(grid, points)
    on_face = ((u - u.round()).abs() < FACE_SLACK_CELLS).any(dim=1)
    assert bool((grid.occupancy[cells] | on_face).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_occupied_is_uniform_stepping(device, dtype):
    grid = random_grid(8, 0.0, device)
    grid.mark_all_occupied()
    n_rays, near, far, step = 200, 0.5, 4.5, 0.02
    rays_o, rays_d = random_rays(n_rays, dtype, device)
    ray_indices, t_starts, t_ends = march_rays(grid, rays_o, rays_d, near, far, step)
    # Independent slab test in float64 for the clipped segment of each ray.
    o, d = rays_o.double().cpu(), rays_d.double().cpu()
    box = grid.aabb.double()
    with torch.no_grad():
        inv = 1.0 / torch.where(d == 0, torch.full_like(d, 1e-300), d)
        t_a, t_b = (box[:3] - o) * inv, (box[3:] - o) * inv
        t_in = torch.minimum(t_a, t_b).max(dim=1).values.clamp(min=near)
        t_out = torch.maximum(t_a, t_b).min(dim=1).values.clamp(max=far)
    starts_per_ray = per_ray(ray_indices.cpu(), t_starts.cpu().double(), n_rays)
    ends_per_ray = per_ray(ray_indices.cpu(), t_ends.cpu().double(), n_rays)
    hits = 0
    for r in range(n_rays):
        starts, ends = starts_per_ray[r], ends_per_ray[r]
        if t_out[r] <= t_in[r]:
            assert starts.numel() == 0
            continue
        hits += 1
        want_n = math.ceil((t_out[r] - t_in[r]) / step)
        assert abs(starts.numel() - want_n) <= 1  # the last step may round either way
        k = torch.arange(starts.numel(), dtype=torch.float64)
        torch.testing.assert_close(starts, t_in[r] + k * step, rtol=0, atol=1e-4)
        torch.testing.assert_close(ends[-1], t_out[r], rtol=0, atol=1e-4)
        torch.testing.assert_close(ends[:-1], starts[1:], rtol=0, atol=1e-5)
    assert hits > 50


@pytest.mark.parametrize("device", DEVICES)
def test_stratified_offsets_stay_within_one_step(device):
    grid = random_grid(8, 0.0, device)
    grid.mark_all_occupied()
    rays_o, rays_d = random_rays(100, torch.float64, device, axis_aligned_share=0.0)
    plain = march_rays(grid, rays_o, rays_d, 0.0, 10.0, 0.05)
    gen = torch.Generator(device=device).manual_seed(1)
    jittered = march_rays(grid, rays_o, rays_d, 0.0, 10.0, 0.05, stratified=True, generator=gen)

    def first_t(out):
        return {r: t for r, t in zip(out[0].tolist()[::-1], out[1].tolist()[::-1])}

    plain_first, jittered_first = first_t(plain), first_t(jittered)
    # A ray shorter than its shift loses its only sample; all others start later by < 1 step.
    assert set(jittered_first) <= set(plain_first) and len(jittered_first) > 50
    shift = torch.tensor([jittered_first[r] - plain_first[r] for r in jittered_first])
    assert bool((shift >= 0).all()) and bool((shift < 0.05).all()) and float(shift.std()) > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_poisoned_outputs_and_empty_cases(device, dtype, monkeypatch):
    monkeypatch.setattr(_common, "POISON_OUTPUTS", True)
    grid = random_grid(10, 0.3, device)
    rays_o, rays_d = random_rays(100, dtype, device)
    ray_indices, t_starts, t_ends = march_rays(grid, rays_o, rays_d, 0.0, 10.0, 0.03)
    assert bool(torch.isfinite(t_starts).all()) and bool(torch.isfinite(t_ends).all())
    assert bool((ray_indices >= 0).all()) and bool((ray_indices < 100).all())
    # Zero rays; rays that miss the box; an empty grid; near beyond far.
    for args in (
        (grid, rays_o[:0], rays_d[:0], 0.0, 10.0),
        (
            grid,
            rays_o + 100.0,
            rays_d * 0 + torch.tensor([1.0, 0, 0], dtype=dtype, device=device),
            0.0,
            10.0,
        ),
        (random_grid(10, 0.0, device), rays_o, rays_d, 0.0, 10.0),
        (grid, rays_o, rays_d, 5.0, 4.0),
    ):
        out = march_rays(*args, 0.03)
        assert [t.shape for t in out] == [(0,)] * 3 and out[1].dtype == dtype


@pytest.mark.parametrize("device", DEVICES)
def test_near_far_per_ray_tensors(device):
    grid = random_grid(8, 0.0, device)
    grid.mark_all_occupied()
    rays_o, rays_d = random_rays(50, torch.float64, device, axis_aligned_share=0.0)
    near = torch.rand(50, dtype=torch.float64, device=device) * 3
    far = near + 0.3
    ray_indices, t_starts, t_ends = march_rays(grid, rays_o, rays_d, near, far, 0.01)
    assert bool((t_starts >= near[ray_indices]).all()) and bool((t_ends <= far[ray_indices]).all())
    got = march_rays(grid, rays_o, rays_d, near, far, 0.01)
    want = ref.march_rays(grid, rays_o, rays_d, near, far, 0.01)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_invalid_inputs_raise_value_error():
    grid = random_grid(4, 0.5, "cpu")
    rays_o, rays_d = random_rays(5, torch.float32, "cpu")
    cases = [
        ("grid", dict(grid=object())),
        ("rays_o", dict(rays_o=rays_o[:, :2])),
        ("rays_d", dict(rays_d=rays_d.double())),
        ("rays_d", dict(rays_d=rays_d[:3])),
        ("step_size", dict(step_size=0.0)),
        ("step_size", dict(step_size=float("nan"))),
        ("max_samples_per_ray", dict(max_samples_per_ray=0)),
        ("near", dict(near=torch.zeros(3))),
    ]
    base = dict(grid=grid, rays_o=rays_o, rays_d=rays_d, near=0.0, far=5.0, step_size=0.1)
    for needle, change in cases:
        with pytest.raises(ValueError, match="march_rays") as info:
            march_rays(**{**base, **change})
        assert needle in str(info.value)
    with pytest.raises(ValueError, match="scene_aabb"):
        OccupancyGrid([0, 0, 0, 1, -1, 1])


# --- occupancy grid updates -------------------------------------------------------------------


def ball_density(radius=0.6, value=10.0):
    return lambda x: value * (x.norm(dim=-1) < radius).float()


class Recorder:
    """A density function that remembers its calls."""

    def __init__(self, fn):
        self.fn, self.points = fn, []

    def __call__(self, x):
        self.points.append(x.clone())
        return self.fn(x)


@pytest.mark.parametrize("device", DEVICES)
def test_update_schedule_and_warmup(device):
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=16).to(device)
    rec = Recorder(ball_density())
    assert grid.update(5, rec) is False and rec.points == []  # only every 16 steps
    assert not bool(grid.occupancy.any())
    assert grid.update(32, rec, chunk_size=1000) is True  # warm-up: every cell once, jittered
    assert max(p.shape[0] for p in rec.points) <= 1000
    points = torch.cat(rec.points)
    cells, u = cell_of(grid, points)
    assert torch.equal(torch.sort(cells).values, torch.arange(16**3, device=device))
    assert float((u - u.floor()).std()) > 0.2  # positions spread inside their cells
    # Cells well inside the ball are occupied, cells well outside are not.
    centres = grid.aabb[:3].to(device) + (
        grid.cell_coords(torch.arange(16**3, device=device)) + 0.5
    ) * (2 / 16)
    dist = centres.norm(dim=-1)
    half_diag = math.sqrt(3) / 16
    assert bool(grid.occupancy[dist < 0.6 - half_diag].all())
    assert not bool(grid.occupancy[dist > 0.6 + half_diag].any())


@pytest.mark.parametrize("device", DEVICES)
def test_update_after_warmup_draws_uniform_and_occupied_cells(device):
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8).to(device)
    grid.update(0, ball_density())
    occupied = grid.occupancy.clone()
    rec = Recorder(ball_density())
    grid.update(512, rec)
    cells, _ = cell_of(grid, torch.cat(rec.points))
    m = 8**3 // 4
    assert cells.numel() == 2 * m
    assert bool(occupied[cells[m:]].all())  # the second half comes from occupied cells
    empty = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8).to(device)
    rec = Recorder(ball_density())
    empty.update(512, rec)
    assert torch.cat(rec.points).shape[0] == m  # nothing occupied: uniform cells only


@pytest.mark.parametrize("device", DEVICES)
def test_ema_decay_and_threshold(device):
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=4).to(device)
    const = lambda value: lambda x: torch.full(x.shape[:1], value, device=x.device)
    grid.update(0, const(2.0))
    assert torch.equal(grid.density, torch.full_like(grid.density, 2.0))
    assert bool(grid.occupancy.all())
    grid.update(16, const(0.0), ema_decay=0.5)  # max(old * decay, new)
    torch.testing.assert_close(grid.density, torch.full_like(grid.density, 1.0))
    grid.update(32, const(5.0), ema_decay=0.5)
    torch.testing.assert_close(grid.density, torch.full_like(grid.density, 5.0))
    # Threshold min(occ_thre, mean): with tiny densities the mean decides.
    grid.density.copy_(torch.linspace(0, 1e-3, 64, device=device))
    grid.update(48, const(0.0), ema_decay=1.0)
    assert torch.equal(grid.occupancy, grid.density > grid.density.mean())
    grid.update(64, const(0.0), ema_decay=1.0, occ_thre=1e-4)
    assert torch.equal(grid.occupancy, grid.density > 1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_state_dict_round_trip_and_exact_resume(device):
    a = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8, seed=7).to(device)
    a.update(0, ball_density())
    b = OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=8, seed=0).to(device)
    b.load_state_dict(a.state_dict())
    for name, buf in a.state_dict().items():
        assert torch.equal(buf, b.state_dict()[name]), name
    for step in (256, 272, 288):  # past warm-up: random cells, the same in both
        a.update(step, ball_density(0.5))
        b.update(step, ball_density(0.5))
    assert torch.equal(a.density, b.density) and torch.equal(a.occupancy, b.occupancy)
    assert a.occupied_fraction() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_nan_density_counts_as_empty(device):
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=6).to(device)
    ball = ball_density()
    grid.update(0, lambda x: torch.where(x[:, 0] > 0, torch.nan, ball(x)))
    assert bool(torch.isfinite(grid.density).all())
    assert grid.occupied_fraction() > 0


def _march_outputs(occupancy, aabb, resolution, rays_o, rays_d):
    """march_rays on the rays' device from a grid's state (run by the CPU subprocess too)."""
    grid = OccupancyGrid(aabb, resolution=resolution).to(rays_o.device)
    grid.occupancy.copy_(occupancy.to(rays_o.device))
    return [t.cpu() for t in march_rays(grid, rays_o, rays_d, 0.1, 6.0, 0.01, 64)]


@pytest.mark.cuda
@needs_cuda_session
def test_cuda_matches_cpu():
    # Bit-exact, as against the twin (fast_math off; float64 rays). The CPU side runs on a real
    # CPU backend in a subprocess. Not yet run on a GPU: if FMA contraction on CUDA moves a
    # midpoint across a cell face, this needs the measured tolerance instead.
    grid = random_grid(16, 0.2, "cpu")
    rays_o, rays_d = random_rays(500, torch.float64, "cpu")
    state = (grid.occupancy, grid.aabb, grid.resolution)
    cpu = run_on_cpu_backend(_march_outputs, *state, rays_o, rays_d)
    gpu = _march_outputs(*(t.cuda() if torch.is_tensor(t) else t for t in state),
                         rays_o.cuda(), rays_d.cuda())
    assert all(torch.equal(a, b) for a, b in zip(cpu, gpu))
    ball = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=16).cuda()
    ball.update(0, ball_density())
    assert ball.occupied_fraction() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_packed_info_matches_the_twin(device):
    grid = random_grid(16, 0.3, device)
    rays_o, rays_d = random_rays(300, torch.float64, device)
    *samples, info = march_rays(grid, rays_o, rays_d, 0.1, 6.0, 0.02, 64, return_packed_info=True)
    *twin_samples, twin_info = ref.march_rays(grid, rays_o, rays_d, 0.1, 6.0, 0.02, 64,
                                              return_packed_info=True)
    assert all(torch.equal(a, b) for a, b in zip(samples, twin_samples))
    assert torch.equal(info.counts, twin_info.counts) and torch.equal(info.starts, twin_info.starts)
    assert (info.n_samples, info.max_count) == (twin_info.n_samples, twin_info.max_count)
    assert info.counts.dtype == info.starts.dtype == torch.int32
    assert torch.equal(torch.repeat_interleave(torch.arange(300, device=device), info.counts.long()),
                       samples[0])


@pytest.mark.parametrize("device", DEVICES)
def test_block_occupancy_is_cached_until_the_grid_changes(device):
    from taichi_nerf.kernels.marching import _block_occupancy

    grid = random_grid(16, 0.0, device)
    blocks = _block_occupancy(grid)
    assert _block_occupancy(grid) is blocks and int(blocks.sum()) == 0  # cached
    rays_o, rays_d = random_rays(50, torch.float32, device)
    assert march_rays(grid, rays_o, rays_d, 0.1, 6.0, 0.02)[0].numel() == 0
    grid.mark_all_occupied()  # an in-place write: the cache must not serve the old blocks
    assert march_rays(grid, rays_o, rays_d, 0.1, 6.0, 0.02)[0].numel() > 0
    state = random_grid(16, 0.0, device).state_dict()
    grid.load_state_dict(state)
    assert march_rays(grid, rays_o, rays_d, 0.1, 6.0, 0.02)[0].numel() == 0
    grid.update(0, ball_density())
    assert int(_block_occupancy(grid).sum()) > 0
