"""composite: Taichi op vs its torch twin (forward, backward), gradcheck, edge cases, errors."""

import math

import pytest
import torch
from conftest import DEVICES, needs_cuda_session, run_on_cpu_backend

from taichi_nerf import reference as ref
from taichi_nerf.kernels import _common
from taichi_nerf.kernels.compositing import composite, packed_info_from_ray_indices

DTYPES = [torch.float32, torch.float64]

#: Forward agreement with the twin: float32 differs by summation order and exp vs product of
#: exps along the ray (a few ulp of values of order 1).
FWD_TOL = {torch.float32: dict(rtol=1e-5, atol=2e-6), torch.float64: dict(rtol=1e-12, atol=1e-12)}
#: Gradients: the kernel forms the suffix sum as total - prefix (nerfacc's trick), so float32
#: loses a few ulp of the ray total (order 1-10 with random upstream gradients).
BWD_TOL = {torch.float32: dict(rtol=1e-4, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-11)}
#: float64 gradcheck against central differences.
GRADCHECK_EPS, GRADCHECK_ATOL = 1e-6, 1e-6


def random_samples(n_rays, max_per_ray, dtype, device, empty_share=0.2):
    """Packed random samples: some rays empty, sigmas from ~0 to large, increasing t's."""
    counts = torch.randint(1, max_per_ray + 1, (n_rays,))
    counts[torch.rand(n_rays) < empty_share] = 0
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    m = int(counts.sum())
    deltas = torch.rand(m, dtype=torch.float64) * 0.2 + 1e-3
    gaps = torch.rand(m, dtype=torch.float64) * 0.05 * (torch.rand(m) < 0.3)
    steps = deltas + gaps
    starts = torch.cumsum(counts, 0) - counts
    ends = torch.cumsum(steps, 0)
    offset = torch.zeros(n_rays, dtype=torch.float64)
    nonempty = counts > 0
    offset[nonempty] = (ends - steps)[starts[nonempty]] - 2.0 * torch.rand(int(nonempty.sum()))
    t_starts = ends - steps - offset[ray_indices]
    t_ends = t_starts + deltas
    sigmas = torch.rand(m, dtype=torch.float64) * 20.0 * (torch.rand(m) < 0.7)
    rgbs = torch.rand(m, 3, dtype=torch.float64)
    to = dict(dtype=dtype, device=device)
    return dict(
        sigmas=sigmas.to(**to),
        rgbs=rgbs.to(**to),
        t_starts=t_starts.to(**to),
        t_ends=t_ends.to(**to),
        ray_indices=ray_indices.to(device),
        n_rays=n_rays,
    )


def make_background(kind, n_rays, dtype, device):
    if kind == "none":
        return None
    if kind == "shared":
        return torch.rand(3, dtype=dtype, device=device)
    return torch.rand(n_rays, 3, dtype=dtype, device=device)


def run_both(inputs, background, eps, upstream=None):
    """Outputs and gradients (sigmas, rgbs, background) of the op and of the twin."""
    results = []
    for fn in (composite, ref.composite):
        sigmas = inputs["sigmas"].clone().requires_grad_()
        rgbs = inputs["rgbs"].clone().requires_grad_()
        bg = None if background is None else background.clone().requires_grad_()
        args = (inputs["t_starts"], inputs["t_ends"], inputs["ray_indices"], inputs["n_rays"])
        outs = fn(sigmas, rgbs, *args, background=bg, early_stop_eps=eps)
        if upstream is None:
            upstream = [torch.randn_like(o) for o in outs]
        wrt = [sigmas, rgbs] + ([bg] if bg is not None else [])
        grads = torch.autograd.grad(outs, wrt, upstream)
        results.append(([o.detach() for o in outs], grads))
    return results


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("background", ["none", "shared", "per_ray"])
def test_forward_and_backward_match_twin(device, dtype, background):
    inputs = random_samples(97, 40, dtype, device)
    bg = make_background(background, 97, dtype, device)
    (outs, grads), (ref_outs, ref_grads) = run_both(inputs, bg, 0.0)
    for name, got, want in zip(("rgb", "opacity", "depth"), outs, ref_outs):
        torch.testing.assert_close(got, want, **FWD_TOL[dtype], msg=lambda m, n=name: f"{n}: {m}")
    for name, got, want in zip(("sigmas", "rgbs", "background"), grads, ref_grads):
        torch.testing.assert_close(got, want, **BWD_TOL[dtype], msg=lambda m, n=name: f"{n}: {m}")
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_early_termination_matches_twin(device, dtype):
    inputs = random_samples(64, 40, dtype, device, empty_share=0.0)
    bg = make_background("shared", 64, dtype, device)
    eps = 0.2
    (outs, grads), (ref_outs, ref_grads) = run_both(inputs, bg, eps)
    for got, want in zip(outs, ref_outs):
        torch.testing.assert_close(got, want, **FWD_TOL[dtype])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **BWD_TOL[dtype])
    # It did stop: some rays lose opacity against the full composite, and the samples past the
    # stop get exactly zero gradient.
    full_opacity = composite(**inputs)[1]
    assert bool((full_opacity > outs[1] + 1e-3).any())
    assert bool((grads[1] == 0).all(dim=1).any())


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_float64(device):
    inputs = random_samples(5, 6, torch.float64, device, empty_share=0.2)
    inputs["sigmas"] = inputs["sigmas"] * 0.3 + 0.05  # away from 0 so the check is informative
    sigmas = inputs.pop("sigmas").requires_grad_()
    rgbs = inputs.pop("rgbs").requires_grad_()
    bg = torch.rand(3, dtype=torch.float64, device=device, requires_grad=True)

    def fn(s, c, b):
        return composite(s, c, **inputs, background=b)

    assert torch.autograd.gradcheck(fn, (sigmas, rgbs, bg), eps=GRADCHECK_EPS, atol=GRADCHECK_ATOL)


@pytest.mark.parametrize("device", DEVICES)
def test_single_ray_closed_form(device):
    """Constant density over [t0, t1]: opacity 1 - exp(-sigma L), whatever the split."""
    n, sigma, t0, t1 = 17, 0.7, 2.0, 5.0
    edges = torch.linspace(t0, t1, n + 1, dtype=torch.float64, device=device)
    rgb, opacity, depth = composite(
        torch.full((n,), sigma, dtype=torch.float64, device=device),
        torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64, device=device).expand(n, 3),
        edges[:-1],
        edges[1:],
        torch.zeros(n, dtype=torch.long, device=device),
        1,
        background=torch.ones(3, dtype=torch.float64, device=device),
    )
    alpha = 1.0 - math.exp(-sigma * (t1 - t0))
    torch.testing.assert_close(opacity, torch.tensor([alpha], dtype=torch.float64, device=device))
    want_rgb = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64, device=device) * alpha + (
        1 - alpha
    )
    torch.testing.assert_close(rgb[0], want_rgb)
    assert 0.0 < float(depth[0]) / alpha < t1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_poisoned_outputs_are_all_written(device, dtype, monkeypatch):
    monkeypatch.setattr(_common, "POISON_OUTPUTS", True)
    inputs = random_samples(50, 30, dtype, device, empty_share=0.3)
    for eps in (0.0, 0.3):
        (outs, grads), _ = run_both(inputs, make_background("shared", 50, dtype, device), eps)
        for t in list(outs) + list(grads):
            assert bool(torch.isfinite(t).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rays_without_samples_get_background(device, dtype):
    inputs = random_samples(40, 10, dtype, device, empty_share=0.5)
    bg = make_background("per_ray", 40, dtype, device)
    rgb, opacity, depth = composite(**inputs, background=bg)
    empty = torch.bincount(inputs["ray_indices"], minlength=40) == 0
    assert bool(empty.any())
    assert torch.equal(rgb[empty], bg[empty])
    assert bool((opacity[empty] == 0).all()) and bool((depth[empty] == 0).all())


@pytest.mark.parametrize("device", DEVICES)
def test_empty_inputs(device):
    f = dict(dtype=torch.float32, device=device)
    sigmas = torch.zeros(0, **f, requires_grad=True)
    rgbs = torch.zeros(0, 3, **f, requires_grad=True)
    none = torch.zeros(0, **f)
    idx = torch.zeros(0, dtype=torch.long, device=device)
    bg = torch.tensor([0.1, 0.2, 0.3], **f, requires_grad=True)
    rgb, opacity, depth = composite(sigmas, rgbs, none, none, idx, 4, background=bg)
    assert rgb.shape == (4, 3) and torch.equal(rgb, bg.expand(4, 3))
    assert torch.equal(opacity, torch.zeros(4, **f)) and torch.equal(depth, torch.zeros(4, **f))
    g_sigmas, g_rgbs, g_bg = torch.autograd.grad((rgb.sum() + opacity.sum()), (sigmas, rgbs, bg))
    assert g_sigmas.shape == (0,) and g_rgbs.shape == (0, 3)
    assert torch.equal(g_bg, torch.full((3,), 4.0, **f))
    rgb, opacity, depth = composite(sigmas, rgbs, none, none, idx, 0)
    assert rgb.shape == (0, 3) and opacity.shape == (0,) and depth.shape == (0,)


@pytest.mark.parametrize("device", DEVICES)
def test_needs_input_grad_honoured(device):
    inputs = random_samples(20, 10, torch.float64, device)
    sigmas, rgbs = inputs.pop("sigmas"), inputs.pop("rgbs")
    (g_rgbs,) = torch.autograd.grad(
        composite(sigmas, rgbs.requires_grad_(), **inputs)[0].sum(), rgbs
    )
    want = torch.autograd.grad(ref.composite(sigmas, rgbs, **inputs)[0].sum(), rgbs)[0]
    torch.testing.assert_close(g_rgbs, want)
    rgbs = rgbs.detach()
    sigmas.requires_grad_()
    (g_sigmas,) = torch.autograd.grad(composite(sigmas, rgbs, **inputs)[1].sum(), sigmas)
    want = torch.autograd.grad(ref.composite(sigmas, rgbs, **inputs)[1].sum(), sigmas)[0]
    torch.testing.assert_close(g_sigmas, want)
    with torch.no_grad():
        outs = composite(sigmas, rgbs, **inputs)
    assert all(not o.requires_grad for o in outs)


@pytest.mark.parametrize("device", DEVICES)
def test_packed_info(device):
    idx = torch.tensor([0, 0, 2, 2, 2, 4], device=device)
    starts, counts = packed_info_from_ray_indices(idx, 6)
    assert counts.tolist() == [2, 0, 3, 0, 1, 0]
    assert [s for s, c in zip(starts.tolist(), counts.tolist()) if c] == [0, 2, 5]


def test_invalid_inputs_raise_value_error():
    inputs = random_samples(6, 5, torch.float32, "cpu", empty_share=0.0)
    m = inputs["sigmas"].shape[0]
    cases = {
        "sigmas": dict(sigmas=inputs["sigmas"][:, None]),
        "rgbs": dict(rgbs=inputs["rgbs"][:, :2]),
        "dtype": dict(t_ends=inputs["t_ends"].double()),
        "sigmas must be": dict(sigmas=inputs["sigmas"].half()),
        "ray_indices": dict(ray_indices=inputs["ray_indices"].float()),
        "sorted": dict(ray_indices=inputs["ray_indices"].flip(0)),
        "[0, n_rays": dict(n_rays=int(inputs["ray_indices"].max())),
        "n_rays": dict(n_rays=-1),
        "background": dict(background=torch.ones(4)),
        "early_stop_eps": dict(early_stop_eps=-0.1),
    }
    for needle, change in cases.items():
        kwargs = {**inputs, **change}
        with pytest.raises(ValueError, match="composite") as info:
            composite(**kwargs)
        message = str(info.value)
        expected = needle if needle != "dtype" else "t_ends"
        assert expected in message, (needle, message)
    assert m > 0


def _composite_outputs(inputs, background, upstream):
    """Op outputs and gradients on the inputs' device (run by the CPU subprocess too)."""
    (outs, grads), _ = run_both(inputs, background, 1e-3, upstream)
    return [t.cpu() for t in list(outs) + list(grads)]


@pytest.mark.cuda
@needs_cuda_session
def test_cuda_matches_cpu():
    # The CPU side runs on a real CPU backend, in a subprocess (one backend per process).
    inputs = random_samples(300, 40, torch.float32, "cpu")
    bg = make_background("per_ray", 300, torch.float32, "cpu")
    upstream = [torch.randn(300, 3), torch.randn(300), torch.randn(300)]
    want = run_on_cpu_backend(_composite_outputs, inputs, bg, upstream)
    moved = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    got = _composite_outputs(moved, bg.cuda(), [u.cuda() for u in upstream])
    for a, b in zip(want, got):
        torch.testing.assert_close(b, a, **BWD_TOL[torch.float32])


#: float32 transmittance against a float64 per-ray loop: a few ulp of values <= 1, however many
#: rays are packed together (each ray is summed on its own; no global running total).
TRANS_F32_ATOL = 2e-6


def test_exclusive_transmittance_float32_matches_a_float64_loop():
    from taichi_nerf.kernels.packed import exclusive_transmittance

    inputs = random_samples(2000, 200, torch.float64, "cpu")
    tau = inputs["sigmas"] * (inputs["t_ends"] - inputs["t_starts"])
    ray_indices, n_rays = inputs["ray_indices"], inputs["n_rays"]
    want = torch.empty_like(tau)
    for r in range(n_rays):
        m = ray_indices == r
        want[m] = torch.exp(-(torch.cumsum(tau[m], 0) - tau[m]))
    got = exclusive_transmittance(tau.float(), ray_indices, n_rays)
    assert got.dtype == torch.float32
    assert tau.sum() > 1e4  # a global float32 cumsum would lose ~1e-3 here
    torch.testing.assert_close(got.double(), want, atol=TRANS_F32_ATOL, rtol=0)


def test_exclusive_transmittance_gradcheck():
    from taichi_nerf.kernels.packed import exclusive_transmittance

    inputs = random_samples(6, 5, torch.float64, "cpu")
    tau = (inputs["sigmas"] * 0.1).requires_grad_()
    fn = lambda t: exclusive_transmittance(t, inputs["ray_indices"], inputs["n_rays"])
    assert torch.autograd.gradcheck(fn, (tau,), eps=GRADCHECK_EPS, atol=GRADCHECK_ATOL)


@pytest.mark.parametrize("device", DEVICES)
def test_packed_info_from_the_marcher_gives_the_same_result(device):
    from taichi_nerf.kernels.packed import packed_info_from_sorted

    inputs = random_samples(200, 30, torch.float32, device)
    info = packed_info_from_sorted(inputs["ray_indices"], inputs["n_rays"])
    starts, counts = packed_info_from_ray_indices(inputs["ray_indices"], inputs["n_rays"])
    assert torch.equal(info.counts, counts) and torch.equal(info.starts[counts > 0],
                                                            starts[counts > 0])
    bg = torch.rand(3, device=device)
    for fn in (composite, ref.composite):
        plain = fn(**inputs, background=bg, early_stop_eps=1e-3)
        given = fn(**inputs, background=bg, early_stop_eps=1e-3, packed_info=info)
        assert all(torch.equal(a, b) for a, b in zip(plain, given)), fn
    with pytest.raises(ValueError, match="packed_info describes"):
        composite(**inputs, packed_info=info._replace(n_samples=info.n_samples + 1))
    with pytest.raises(ValueError, match="packed_info.counts must be int32"):
        composite(**inputs, packed_info=info._replace(counts=info.counts.long()))


def test_index_sizes_past_int32_are_a_clear_error():
    from taichi_nerf.kernels.packed import packed_info_from_counts

    with pytest.raises(ValueError, match="exceed 2\\^31 - 1"):
        packed_info_from_counts(torch.zeros(4, dtype=torch.int32), 2**31, 1)
    with pytest.raises(ValueError, match="out would hold 2147483648 elements"):
        _common.check_index_size("hash_encode", out=65536 * 1024 * 32)


def test_exclusive_transmittance_dense_layout_equals_packed():
    from taichi_nerf.kernels.packed import exclusive_transmittance

    tau = torch.rand(7, 5, dtype=torch.float64)
    dense = exclusive_transmittance(tau)
    packed = exclusive_transmittance(tau.reshape(-1), torch.arange(7).repeat_interleave(5), 7)
    torch.testing.assert_close(dense.reshape(-1), packed, rtol=1e-15, atol=0)
    torch.testing.assert_close(dense[:, 0], torch.ones(7, dtype=torch.float64))
    with pytest.raises(ValueError, match="dense"):
        exclusive_transmittance(tau.reshape(-1))
