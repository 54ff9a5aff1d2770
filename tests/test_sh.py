"""sh_encode: Taichi kernels against the torch twin, closed-form values, gradcheck, edge cases."""

import math

import pytest
import torch
from conftest import DEVICES, needs_cuda_session, run_on_cpu_backend

from taichi_nerf import reference as ref
from taichi_nerf.kernels import _common
from taichi_nerf.kernels.sh import SH_OUTPUT_DIM, sh_encode

FWD_ATOL = {torch.float32: 1e-6, torch.float64: 1e-14}
# Gradient entries are O(10) (degree-3 polynomials with constants up to ~3).
BWD_ATOL = {torch.float32: 2e-5, torch.float64: 1e-13}
GRADCHECK_EPS = 1e-6
GRADCHECK_ATOL = 1e-6


def _directions(n, dtype, device):
    d = torch.randn(n, 3, dtype=dtype, device=device)
    d = d / d.norm(dim=-1, keepdim=True)
    d[:3] = torch.eye(3, dtype=dtype, device=device)  # axis directions
    return d


def _closed_form(d):
    """Real SH from the textbook formulas (tcnn signs), written independently of SH_C."""
    sp = math.sqrt(math.pi)
    x, y, z = (float(v) for v in d)
    return [
        1 / (2 * sp),
        -math.sqrt(3) * y / (2 * sp),
        math.sqrt(3) * z / (2 * sp),
        -math.sqrt(3) * x / (2 * sp),
        math.sqrt(15) * x * y / (2 * sp),
        -math.sqrt(15) * y * z / (2 * sp),
        math.sqrt(5) * (3 * z * z - 1) / (4 * sp),
        -math.sqrt(15) * x * z / (2 * sp),
        math.sqrt(15) * (x * x - y * y) / (4 * sp),
        math.sqrt(70) * y * (-3 * x * x + y * y) / (8 * sp),
        math.sqrt(105) * x * y * z / (2 * sp),
        math.sqrt(42) * y * (1 - 5 * z * z) / (8 * sp),
        math.sqrt(7) * z * (5 * z * z - 3) / (4 * sp),
        math.sqrt(42) * x * (1 - 5 * z * z) / (8 * sp),
        math.sqrt(105) * z * (x * x - y * y) / (4 * sp),
        math.sqrt(70) * x * (-x * x + 3 * y * y) / (8 * sp),
    ]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_matches_twin(device, dtype, monkeypatch):
    monkeypatch.setattr(_common, "POISON_OUTPUTS", True)  # unwritten outputs would be NaN
    d = _directions(5000, dtype, device)
    out = sh_encode(d)
    assert out.shape == (5000, SH_OUTPUT_DIM) and out.dtype == dtype
    assert not out.isnan().any()
    torch.testing.assert_close(out, ref.sh_encode(d), atol=FWD_ATOL[dtype], rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_known_directions(device):
    sp = math.sqrt(math.pi)
    s = 1 / math.sqrt(3)
    dirs = [(0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (s, s, s), (0.6, -0.8, 0.0)]
    d = torch.tensor(dirs, dtype=torch.float64, device=device)
    out = sh_encode(d).cpu()
    expected = torch.tensor([_closed_form(v) for v in dirs], dtype=torch.float64)
    torch.testing.assert_close(out, expected, atol=FWD_ATOL[torch.float64], rtol=0)
    # +z: only the m = 0 harmonics are non-zero, each sqrt(2l+1) / (2 sqrt(pi)).
    plus_z = out[0]
    zonal = {0: 1.0, 2: math.sqrt(3), 6: math.sqrt(5), 12: math.sqrt(7)}
    for k in range(SH_OUTPUT_DIM):
        assert plus_z[k].item() == pytest.approx(zonal.get(k, 0.0) / (2 * sp), abs=1e-14)
    # Orthonormality, integrated numerically: mean over the sphere of Y_i Y_j = delta_ij / (4 pi).
    many = _directions(200_000, torch.float64, device)
    y = sh_encode(many)
    gram = (y.T @ y / many.shape[0] * 4 * math.pi).cpu()
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.03, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_matches_twin(device, dtype):
    d = _directions(3000, dtype, device).requires_grad_()
    out = sh_encode(d)
    v = torch.randn_like(out)
    (v_d,) = torch.autograd.grad((out * v).sum(), [d])
    (v_d_ref,) = torch.autograd.grad((ref.sh_encode(d) * v).sum(), [d])
    torch.testing.assert_close(v_d, v_d_ref, atol=BWD_ATOL[dtype], rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_float64(device):
    # Also off the unit sphere: the polynomial is differentiated as given.
    d = torch.randn(8, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(sh_encode, (d,), eps=GRADCHECK_EPS, atol=GRADCHECK_ATOL)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_input(device):
    d = torch.zeros(0, 3, device=device, requires_grad=True)
    out = sh_encode(d)
    assert out.shape == (0, SH_OUTPUT_DIM)
    (v_d,) = torch.autograd.grad(out.sum(), [d])
    assert v_d.shape == (0, 3)


def test_non_contiguous_input():
    d = _directions(30, torch.float32, "cpu").t().contiguous().t()
    assert not d.is_contiguous()
    torch.testing.assert_close(sh_encode(d), ref.sh_encode(d), atol=FWD_ATOL[torch.float32], rtol=0)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match=r"d must have shape \[N, 3\]"):
        sh_encode(torch.rand(4, 2))
    with pytest.raises(ValueError, match="d must be float32 or float64"):
        sh_encode(torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="d must be a torch.Tensor"):
        sh_encode([[0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="only cpu and cuda"):
        sh_encode(torch.rand(4, 3, device="meta"))


def _sh_outputs(d, v):
    """Forward and d-gradient on the tensors' device (module level: the CPU subprocess runs it)."""
    d = d.clone().requires_grad_()
    out = sh_encode(d)
    (g,) = torch.autograd.grad((out * v).sum(), [d])
    return [out.detach().cpu(), g.cpu()]


@pytest.mark.cuda
@needs_cuda_session
def test_cuda_matches_cpu_kernel():
    # The CPU side runs on a real CPU backend, in a subprocess (one backend per process).
    d = _directions(1000, torch.float32, "cpu")
    v = torch.randn(1000, SH_OUTPUT_DIM)
    out, g = run_on_cpu_backend(_sh_outputs, d, v)
    out_cuda, g_cuda = _sh_outputs(d.cuda(), v.cuda())
    torch.testing.assert_close(out_cuda, out, atol=FWD_ATOL[torch.float32], rtol=0)
    torch.testing.assert_close(g_cuda, g, atol=BWD_ATOL[torch.float32], rtol=0)
