"""hash_encode / HashGrid: Taichi kernels against the pure-torch twin, gradcheck, edge cases."""

import math

import pytest
import torch
from conftest import DEVICES, cpu_session, needs_cuda_session, run_on_cpu_backend

from taichi_nerf import reference as ref
from taichi_nerf.kernels import _common, hash_grid
from taichi_nerf.kernels.hash_grid import HashGrid, HashGridSpec, hash_encode

# Outputs are sums of 8 weights (summing to 1) times table values of magnitude <= 1.
FWD_ATOL = {torch.float32: 1e-6, torch.float64: 1e-12}
# Gradients are compared relative to the largest reference entry: the table gradient is summed
# by atomics in a different order, the x-gradient scales with the resolution (up to ~256 here).
BWD_RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}
GRADCHECK_EPS = 1e-6
GRADCHECK_ATOL = 1e-5
# Both kernel schedules run on any backend: one task per level with plain adds (the CPU
# default) and one thread per (level, point) with atomic adds (the GPU default).
LEVEL_TASKS = [pytest.param(True, id="level_tasks"), pytest.param(False, id="atomics")]
# gradcheck needs x at least this far (in cells) from a cell face, where trilinear is only C0.
MIN_FACE_DISTANCE = 1e-3

# Small grid hitting both branches: levels 0-1 dense, 2-4 hashed (asserted in a test).
SMALL_SPEC = HashGridSpec(
    n_levels=5, n_features=2, log2_table_size=11, base_resolution=6, finest_resolution=160
)
# Tiny grid for gradcheck: level 0 dense (3^3 <= 64 rows), levels 1-2 hashed.
TINY_SPEC = HashGridSpec(
    n_levels=3, n_features=2, log2_table_size=6, base_resolution=2, finest_resolution=12
)


def _random_table(spec, dtype, device, scale=1.0):
    return (
        torch.rand(spec.table_size, spec.n_features, dtype=dtype, device=device) * 2 - 1
    ) * scale


def _random_points(n, dtype, device, spec=SMALL_SPEC):
    """Uniform points plus points exactly on cell faces of random levels, and the cube corners."""
    x = torch.rand(n, 3, dtype=dtype, device=device)
    n_face = n // 4
    res = torch.tensor(spec.resolutions(), dtype=dtype, device=device)
    level = torch.randint(0, spec.n_levels, (n_face, 3), device=device)
    k = torch.floor(torch.rand(n_face, 3, dtype=dtype, device=device) * (res[level] + 1))
    x[:n_face] = k / res[level]
    x[n_face : n_face + 2] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=dtype)
    return x


def _assert_close_rel(actual, expected, rtol, what):
    scale = expected.abs().max().clamp_min(1.0)
    err = (actual - expected).abs().max() / scale
    assert err <= rtol, f"{what}: max error {err:.3g} (relative to {scale:.3g}) > {rtol}"


def test_small_spec_hits_dense_and_hashed_levels():
    dense = SMALL_SPEC.dense_levels()
    assert any(dense) and not all(dense)
    assert any(TINY_SPEC.dense_levels()) and not all(TINY_SPEC.dense_levels())


def test_default_layout_rule():
    spec = HashGridSpec()
    res = spec.resolutions()
    assert res[0] == 16 and res[-1] == 2048 and len(res) == 16
    assert all(a < b for a, b in zip(res, res[1:]))
    b = math.exp((math.log(2048) - math.log(16)) / 15)
    assert res == tuple(math.floor(16 * b**level + 1e-6) for level in range(16))
    # (res+1)^3 <= 2^19 exactly for res <= 79: levels 16, 22, 30, 42, 58 are dense.
    assert spec.dense_levels() == (True,) * 5 + (False,) * 11
    sizes = spec.level_sizes()
    assert sizes[0] == (17**3 + 7) // 8 * 8 and sizes[-1] == 2**19
    offsets = spec.level_offsets()
    assert offsets[0] == 0 and offsets[-1] == spec.table_size == sum(sizes)
    assert spec.output_dim == 32


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("level_tasks", LEVEL_TASKS)
def test_forward_matches_twin(device, dtype, level_tasks, monkeypatch):
    monkeypatch.setattr(_common, "POISON_OUTPUTS", True)  # unwritten outputs would be NaN
    monkeypatch.setattr(hash_grid, "_level_tasks", lambda: level_tasks)
    x = _random_points(3000, dtype, device)
    table = _random_table(SMALL_SPEC, dtype, device)
    out = hash_encode(x, table, SMALL_SPEC)
    expected = ref.hash_encode(x, table, SMALL_SPEC)
    assert out.shape == (3000, SMALL_SPEC.output_dim) and out.dtype == dtype
    assert not out.isnan().any()
    torch.testing.assert_close(out, expected, atol=FWD_ATOL[dtype], rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("level_tasks", LEVEL_TASKS)
def test_backward_matches_twin(device, dtype, level_tasks, monkeypatch):
    monkeypatch.setattr(_common, "POISON_OUTPUTS", True)  # x-gradient partials are poisoned too
    monkeypatch.setattr(hash_grid, "_level_tasks", lambda: level_tasks)
    x = _random_points(2000, dtype, device).requires_grad_()
    table = _random_table(SMALL_SPEC, dtype, device).requires_grad_()
    out = hash_encode(x, table, SMALL_SPEC)
    v = torch.randn_like(out)
    v_x, v_table = torch.autograd.grad((out * v).sum(), [x, table])
    out_ref = ref.hash_encode(x, table, SMALL_SPEC)
    v_x_ref, v_table_ref = torch.autograd.grad((out_ref * v).sum(), [x, table])
    _assert_close_rel(v_table, v_table_ref, BWD_RTOL[dtype], "table gradient")
    _assert_close_rel(v_x, v_x_ref, BWD_RTOL[dtype], "x gradient")
    assert v_x.abs().sum() > 0 and v_table.abs().sum() > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("level_tasks", LEVEL_TASKS)
def test_gradcheck_float64(device, level_tasks, monkeypatch):
    monkeypatch.setattr(hash_grid, "_level_tasks", lambda: level_tasks)
    dtype = torch.float64
    res = torch.tensor(TINY_SPEC.resolutions(), dtype=dtype, device=device)
    x = torch.rand(64, 3, dtype=dtype, device=device)
    pos = x[:, :, None] * res
    away = ((pos - pos.round()).abs() > MIN_FACE_DISTANCE).all(dim=(1, 2))
    x = x[away][:6].clone().requires_grad_()
    assert x.shape[0] == 6
    table = _random_table(TINY_SPEC, dtype, device).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, t: hash_encode(x, t, TINY_SPEC),
        (x, table),
        eps=GRADCHECK_EPS,
        atol=GRADCHECK_ATOL,
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("level_tasks", LEVEL_TASKS)
def test_gradient_only_where_asked(device, level_tasks, monkeypatch):
    monkeypatch.setattr(hash_grid, "_level_tasks", lambda: level_tasks)
    x = torch.rand(50, 3, device=device)
    table = _random_table(SMALL_SPEC, torch.float32, device)
    (v_table,) = torch.autograd.grad(
        hash_encode(x, table.requires_grad_(), SMALL_SPEC).sum(), [table]
    )
    (v_table_ref,) = torch.autograd.grad(ref.hash_encode(x, table, SMALL_SPEC).sum(), [table])
    _assert_close_rel(v_table, v_table_ref, BWD_RTOL[torch.float32], "table gradient")
    table = table.detach()
    x.requires_grad_()
    (v_x,) = torch.autograd.grad(hash_encode(x, table, SMALL_SPEC).sum(), [x])
    (v_x_ref,) = torch.autograd.grad(ref.hash_encode(x, table, SMALL_SPEC).sum(), [x])
    _assert_close_rel(v_x, v_x_ref, BWD_RTOL[torch.float32], "x gradient")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("level_tasks", LEVEL_TASKS)
def test_smooth_x_grad_matches_twin(device, dtype, level_tasks, monkeypatch):
    # Straight-through: the features and the table gradient are the trilinear ones, only the
    # x-gradient changes (to the twin's cosine-blend derivative).
    monkeypatch.setattr(_common, "POISON_OUTPUTS", True)
    monkeypatch.setattr(hash_grid, "_level_tasks", lambda: level_tasks)
    x = _random_points(2000, dtype, device).requires_grad_()
    table = _random_table(SMALL_SPEC, dtype, device).requires_grad_()
    out = hash_encode(x, table, SMALL_SPEC, x_grad="smooth")
    torch.testing.assert_close(out, ref.hash_encode(x, table, SMALL_SPEC),
                               atol=FWD_ATOL[dtype], rtol=0)  # fmt: skip
    v = torch.randn_like(out)
    v_x, v_table = torch.autograd.grad((out * v).sum(), [x, table])
    out_ref = ref.hash_encode(x, table, SMALL_SPEC, x_grad="smooth")
    v_x_ref, v_table_ref = torch.autograd.grad((out_ref * v).sum(), [x, table])
    out_exact = ref.hash_encode(x, table, SMALL_SPEC)
    v_x_exact, v_table_exact = torch.autograd.grad((out_exact * v).sum(), [x, table])
    _assert_close_rel(v_table, v_table_exact, BWD_RTOL[dtype], "table gradient")
    _assert_close_rel(v_table_ref, v_table_exact, BWD_RTOL[dtype], "twin table gradient")
    _assert_close_rel(v_x, v_x_ref, BWD_RTOL[dtype], "smooth x gradient")
    assert (v_x - v_x_exact).abs().max() > 0.1 * v_x_exact.abs().max()


@pytest.mark.parametrize("x_grad", ["exact", "smooth"])
def test_x_grad_integrates_to_the_feature_change(x_grad):
    # Along one axis across a whole cell, on the line through the cell's centre (where the
    # cosine weight S(1/2) = 1/2 equals the linear one), either x-gradient integrates to the
    # change of the feature: the smooth one redistributes the slope within the cell, no more.
    spec, dtype = SMALL_SPEC, torch.float64
    res = spec.resolutions()[0]  # level 0 (dense); its features are output channels 0, 1
    table = _random_table(spec, dtype, "cpu")
    cell = torch.randint(0, res, (3,)).to(dtype)
    n = 4000
    t = (torch.arange(n, dtype=dtype) + 0.5) / n  # midpoint rule over the cell
    x = ((cell + 0.5).expand(n, 3).clone())
    x[:, 0] = cell[0] + t
    x = (x / res).requires_grad_()
    out = hash_encode(x, table, spec, x_grad=x_grad)
    (v_x,) = torch.autograd.grad(out[:, 0].sum(), [x])
    ends = (cell + 0.5).expand(2, 3).clone()
    ends[:, 0] = cell[0] + torch.tensor([0.0, 1.0], dtype=dtype)
    f_ends = hash_encode(ends / res, table, spec)[:, 0]
    integral = v_x[:, 0].mean() / res
    torch.testing.assert_close(integral, f_ends[1] - f_ends[0], atol=1e-6, rtol=0)


def test_bad_x_grad_raises_value_error():
    x, table = torch.rand(4, 3), _random_table(SMALL_SPEC, torch.float32, "cpu")
    with pytest.raises(ValueError, match="x_grad must be one of"):
        hash_encode(x, table, SMALL_SPEC, x_grad="cosine")
    with pytest.raises(ValueError, match="x_grad must be one of"):
        HashGrid(SMALL_SPEC, x_grad="cosine")


@pytest.mark.parametrize("device", DEVICES)
def test_outside_points_are_clamped(device):
    table = _random_table(SMALL_SPEC, torch.float64, device)
    x = torch.tensor([[-0.5, 0.3, 1.7], [0.2, 2.0, -1e-3]], dtype=torch.float64, device=device)
    x.requires_grad_()
    out = hash_encode(x, table, SMALL_SPEC)
    torch.testing.assert_close(out, hash_encode(x.detach().clamp(0, 1), table, SMALL_SPEC))
    (v_x,) = torch.autograd.grad(out.sum(), [x])
    assert (v_x[[0, 0, 1, 1], [0, 2, 1, 2]] == 0).all()
    assert (v_x[[0, 1], [1, 0]] != 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_input(device):
    table = _random_table(SMALL_SPEC, torch.float32, device)
    x = torch.rand(3, 40, device=device).t()
    assert not x.is_contiguous()
    torch.testing.assert_close(
        hash_encode(x, table, SMALL_SPEC), ref.hash_encode(x, table, SMALL_SPEC),
        atol=FWD_ATOL[torch.float32], rtol=0,
    )  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
def test_empty_input(device):
    x = torch.zeros(0, 3, device=device, requires_grad=True)
    table = _random_table(SMALL_SPEC, torch.float32, device).requires_grad_()
    out = hash_encode(x, table, SMALL_SPEC)
    assert out.shape == (0, SMALL_SPEC.output_dim)
    v_x, v_table = torch.autograd.grad(out.sum(), [x, table])
    assert v_x.shape == (0, 3)
    assert v_table.shape == table.shape and (v_table == 0).all()


@cpu_session
def test_bad_inputs_raise_value_error():
    spec = SMALL_SPEC
    table = _random_table(spec, torch.float32, "cpu")
    x = torch.rand(4, 3)
    with pytest.raises(ValueError, match="x must have shape"):
        hash_encode(torch.rand(4, 2), table, spec)
    with pytest.raises(ValueError, match="x must be float32 or float64"):
        hash_encode(torch.randint(0, 2, (4, 3)), table, spec)
    with pytest.raises(ValueError, match="table must have shape"):
        hash_encode(x, table[:-1], spec)
    with pytest.raises(ValueError, match="table is torch.float64 but x is torch.float32"):
        hash_encode(x, table.double(), spec)
    with pytest.raises(ValueError, match="x must be a torch.Tensor"):
        hash_encode(x.numpy(), table, spec)
    with pytest.raises(ValueError, match="spec must be a HashGridSpec"):
        hash_encode(x, table, None)
    with pytest.raises(ValueError, match="only cpu and cuda"):
        hash_encode(x.to("meta"), table, spec)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="table is on cpu but x is on cuda"):
            hash_encode(x.cuda(), table, spec)


def test_bad_spec_raises_value_error():
    with pytest.raises(ValueError, match="n_levels"):
        HashGridSpec(n_levels=0)
    with pytest.raises(ValueError, match="finest_resolution"):
        HashGridSpec(base_resolution=64, finest_resolution=32)
    with pytest.raises(ValueError, match="log2_table_size"):
        HashGridSpec(log2_table_size=40)


@pytest.mark.parametrize("device", DEVICES)
def test_hash_grid_module(device):
    grid = HashGrid(SMALL_SPEC).to(device)
    assert grid.output_dim == SMALL_SPEC.output_dim
    params = dict(grid.named_parameters())
    assert list(params) == ["table"]
    assert grid.table.shape == (SMALL_SPEC.table_size, SMALL_SPEC.n_features)
    assert grid.table.abs().max() <= 1e-4 and grid.table.std() > 0
    x = torch.rand(100, 3, device=device, requires_grad=True)
    out = grid(x)
    assert out.shape == (100, grid.output_dim)
    out.pow(2).sum().backward()
    assert grid.table.grad is not None and grid.table.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    state = grid.state_dict()
    assert set(state) == {"table"}


def _hash_outputs(x, table, v):
    """Forward and both gradients on the tensors' device (run by the CPU subprocess too)."""
    x, table = x.clone().requires_grad_(), table.clone().requires_grad_()
    out = hash_encode(x, table, SMALL_SPEC)
    g_x, g_table = torch.autograd.grad((out * v).sum(), [x, table])
    return [out.detach().cpu(), g_x.cpu(), g_table.cpu()]


@pytest.mark.cuda
@needs_cuda_session
def test_cuda_matches_cpu_kernel():
    # The CPU side runs on a real CPU backend, in a subprocess (one backend per process).
    x = _random_points(1000, torch.float32, "cpu")
    table = _random_table(SMALL_SPEC, torch.float32, "cpu")
    v = torch.randn(1000, SMALL_SPEC.output_dim)
    out_cpu, *g_cpu = run_on_cpu_backend(_hash_outputs, x, table, v)
    out_cuda, *g_cuda = _hash_outputs(x.cuda(), table.cuda(), v.cuda())
    torch.testing.assert_close(out_cuda, out_cpu, atol=FWD_ATOL[torch.float32], rtol=0)
    for a, b in zip(g_cuda, g_cpu):
        _assert_close_rel(a, b, BWD_RTOL[torch.float32], "cuda vs cpu gradient")
