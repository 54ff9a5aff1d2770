"""Tests for the vanilla NeRF renderer (taichi_nerf/models/vanilla.py): encoding, sampling,
compositing, shapes, learning on a tiny problem, gradients into the rays and the camera poses,
state_dict round trip. Small widths keep each test to a second or two on 2 CPU cores."""

import math

import pytest
import torch
import torch.nn.functional as F

from taichi_nerf.models.vanilla import (
    VanillaNeRF,
    composite_dense,
    positional_encoding,
    sample_pdf,
    stratified_samples,
)

#: Compositing is a few sums of exp; float32 round-off only.
ATOL_F32 = 1e-5
#: A tiny config: seconds per test on 2 CPU cores.
TINY = dict(num_coarse=16, num_fine=16, width=32, depth=3, skip=1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These tests run many small ops; on a busy 2-core machine two OpenMP threads wait on each
    other (measured: 10 tiny steps 0.18 s with 1 thread, 14 s with 2 under load 5)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _orbit_rays(n_rays: int, generator: torch.Generator, radius: float = 4.0):
    """Rays from points on a sphere of ``radius`` aimed near the origin: ``[R, 3]`` each."""
    origins = F.normalize(torch.randn(n_rays, 3, generator=generator), dim=-1) * radius
    target = 0.3 * torch.randn(n_rays, 3, generator=generator)
    return origins, F.normalize(target - origins, dim=-1)


def _sphere_target(rays_o, rays_d, radius: float = 1.0):
    """Red unit sphere on white: the rgb each ray should see ``[R, 3]``."""
    b = (rays_o * rays_d).sum(-1)
    hit = b * b - (rays_o * rays_o).sum(-1) + radius**2 > 0
    red = torch.tensor([0.9, 0.1, 0.1])
    return torch.where(hit[:, None], red, torch.ones(3))


def test_positional_encoding_layout():
    x = torch.randn(5, 3)
    enc = positional_encoding(x, 10)
    assert enc.shape == (5, 63)  # 3 + 3 * 2 * 10, the paper's 63 position channels
    assert positional_encoding(torch.randn(5, 3), 4).shape == (5, 27)
    torch.testing.assert_close(enc[:, :3], x)
    # Original ordering: sin(2^k x) then cos(2^k x), three channels each, k ascending.
    torch.testing.assert_close(enc[:, 3:6], torch.sin(x))
    torch.testing.assert_close(enc[:, 6:9], torch.cos(x))
    torch.testing.assert_close(enc[:, 9:12], torch.sin(2.0 * x))
    torch.testing.assert_close(enc[:, -3:], torch.cos(2.0**9 * x))


def test_stratified_samples_cover_range():
    t = stratified_samples(7, 2.0, 6.0, 64, perturb=False)
    assert t.shape == (7, 64)
    assert t[0, 0] == 2.0 and t[0, -1] == 6.0
    torch.manual_seed(0)
    tp = stratified_samples(7, 2.0, 6.0, 64, perturb=True)
    assert (tp >= 2.0).all() and (tp <= 6.0).all()
    assert (tp[:, 1:] >= tp[:, :-1]).all(), "jittered strata stay sorted"
    assert not torch.equal(tp, t)


def test_composite_dense_limits():
    r, s = 4, 8
    t = stratified_samples(r, 2.0, 6.0, s, perturb=False)
    rgbs = torch.rand(r, s, 3)
    bg = torch.tensor([0.2, 0.4, 0.6])
    rgb, opacity, depth, weights = composite_dense(torch.zeros(r, s), rgbs, t, 6.0, bg)
    torch.testing.assert_close(rgb, bg.expand(r, 3))
    assert opacity.abs().max() < ATOL_F32 and weights.abs().max() < ATOL_F32
    # An opaque first sample hides everything behind it.
    sig = torch.zeros(r, s)
    sig[:, 0] = 1e4
    rgb, opacity, depth, _ = composite_dense(sig, rgbs, t, 6.0, bg)
    torch.testing.assert_close(rgb, rgbs[:, 0], atol=ATOL_F32, rtol=0)
    torch.testing.assert_close(opacity, torch.ones(r), atol=ATOL_F32, rtol=0)
    torch.testing.assert_close(depth, t[:, 0], atol=1e-4, rtol=0)


def test_composite_dense_matches_closed_form():
    """Constant density sigma over [near, far]: opacity 1 - exp(-sigma (far - near))."""
    sigma = 0.3
    t = stratified_samples(2, 2.0, 6.0, 33, perturb=False)
    _, opacity, _, weights = composite_dense(torch.full((2, 33), sigma), torch.rand(2, 33, 3), t,
                                             6.0, None)
    torch.testing.assert_close(opacity, torch.full((2,), 1 - math.exp(-sigma * 4.0)))
    torch.testing.assert_close(weights.sum(-1), opacity)


def test_sample_pdf_follows_weights():
    torch.manual_seed(0)
    bins = torch.linspace(2.0, 6.0, 9).expand(3, 9).contiguous()  # 8 bins of width 0.5
    weights = torch.zeros(3, 8)
    weights[:, 5] = 1.0  # all mass in [4.5, 5.0]
    for deterministic in (True, False):
        t = sample_pdf(bins, weights, 128, deterministic=deterministic)
        assert t.shape == (3, 128)
        inside = ((t >= 4.5 - 1e-6) & (t <= 5.0 + 1e-6)).float().mean()
        # Deterministic levels include u = 0 and u = 1, which land on the range ends (the 1e-5
        # floor gives the empty bins a little mass), as in the original: 2 of 128 samples.
        assert inside > 0.98, f"{inside:.3f} of samples in the weighted bin"
    # Two bins 1:3 -> samples split 1:3 (random levels, many samples).
    weights = torch.zeros(1, 8)
    weights[0, 1], weights[0, 6] = 1.0, 3.0
    t = sample_pdf(bins[:1], weights, 20000, deterministic=False)
    frac_late = ((t >= 5.0) & (t <= 5.5)).float().mean().item()
    assert abs(frac_late - 0.75) < 0.02
    assert t.requires_grad is False


class _Slab(torch.nn.Module):
    """A fake field: density 50 inside the slab |z| < 0.2, zero elsewhere; grey."""

    def forward(self, pos_enc, dir_enc):
        z = pos_enc[:, 2]
        return 50.0 * (z.abs() < 0.2).to(z), torch.full((z.shape[0], 3), 0.5)


class _Recorder(torch.nn.Module):
    """A fake fine field that records where it was queried."""

    def forward(self, pos_enc, dir_enc):
        self.positions = pos_enc[:, :3].detach().clone()
        return torch.zeros_like(pos_enc[:, 0]), torch.zeros(pos_enc.shape[0], 3)


@pytest.mark.parametrize("train", [False, True])
def test_importance_samples_land_on_the_surface(train):
    model = VanillaNeRF(2.0, 6.0, num_coarse=64, num_fine=128, width=8, depth=2, skip=None)
    model.coarse, model.fine = _Slab(), _Recorder()
    n_rays = 10
    rays_o = torch.tensor([0.0, 0.0, 4.0]).expand(n_rays, 3)
    rays_d = torch.tensor([0.0, 0.0, -1.0]).expand(n_rays, 3)
    torch.manual_seed(1)
    model.render_rays(rays_o, rays_d, background=torch.ones(3), train=train)
    z = model.fine.positions[:, 2].view(n_rays, 64 + 128)
    near_surface = (z.abs() <= 0.3).sum(-1)  # the slab's front face is at z = 0.2 (t = 3.8)
    coarse_near = 64 * 0.6 / 4.0 + 2  # coarse samples that fall within |z| <= 0.3 anyway
    assert (near_surface >= 0.9 * 128 + coarse_near - 2).all(), near_surface


def test_render_rays_shapes_and_determinism():
    torch.manual_seed(0)
    model = VanillaNeRF(2.0, 6.0, **TINY)
    rays_o, rays_d = _orbit_rays(12, torch.Generator().manual_seed(0))
    out = model.render_rays(rays_o, rays_d, background=torch.ones(3), train=True)
    assert out["rgb"].shape == (12, 3) and out["rgb_coarse"].shape == (12, 3)
    assert out["opacity"].shape == (12,) and out["depth"].shape == (12,)
    assert out["num_samples"] == 12 * (16 + 32) and isinstance(out["num_samples"], int)
    assert ((out["rgb"] >= 0) & (out["rgb"] <= 1)).all()
    assert ((out["opacity"] >= 0) & (out["opacity"] <= 1 + ATOL_F32)).all()
    with torch.no_grad():
        a = model.render_rays(rays_o, rays_d, background=torch.ones(3), train=False)
        b = model.render_rays(rays_o, rays_d, background=torch.ones(3), train=False)
    torch.testing.assert_close(a["rgb"], b["rgb"], rtol=0, atol=0)
    # Per-ray background [R, 3] works too.
    c = model.render_rays(rays_o, rays_d, background=torch.rand(12, 3), train=False)
    assert c["rgb"].shape == (12, 3)
    model.update_step(0)  # protocol hook; a no-op


def test_default_architecture_is_the_papers():
    model = VanillaNeRF(2.0, 6.0)
    assert model.coarse.pts_linears[0].in_features == 63
    assert model.coarse.pts_linears[5].in_features == 256 + 63  # skip after layer 4
    assert len(model.coarse.pts_linears) == 8
    assert model.coarse.dir_linear.in_features == 256 + 27
    assert model.coarse.dir_linear.out_features == 128
    # 595,844 weights per network in the original TF code (D=8, W=256, skips=[4], viewdirs).
    assert sum(p.numel() for p in model.coarse.parameters()) == 595_844
    assert model.num_coarse == 64 and model.num_fine == 128


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="near < far"):
        VanillaNeRF(6.0, 2.0)
    with pytest.raises(ValueError, match="skip"):
        VanillaNeRF(2.0, 6.0, depth=2, skip=4)
    model = VanillaNeRF(2.0, 6.0, **TINY)
    with pytest.raises(ValueError, match=r"\[R, 3\]"):
        model.render_rays(torch.zeros(4, 3), torch.zeros(5, 3), background=None, train=False)


def test_loss_falls_on_a_tiny_scene():
    torch.manual_seed(0)
    model = VanillaNeRF(2.0, 6.0, **TINY)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    bg = torch.ones(3)
    losses = []
    for _ in range(40):
        rays_o, rays_d = _orbit_rays(128, gen)
        target = _sphere_target(rays_o, rays_d)
        out = model.render_rays(rays_o, rays_d, background=bg, train=True)
        loss = F.mse_loss(out["rgb"], target) + F.mse_loss(out["rgb_coarse"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, f"loss {first:.4f} -> {last:.4f}"


def test_gradients_reach_rays_exactly():
    """float64 gradcheck in rays_o / rays_d (coarse only and eval: t is fixed, so the
    autograd gradient is the full derivative)."""
    torch.manual_seed(0)
    model = VanillaNeRF(2.0, 6.0, num_coarse=8, num_fine=0, pos_freqs=3, dir_freqs=2,
                        width=8, depth=2, skip=0).double()
    rays_o, rays_d = _orbit_rays(3, torch.Generator().manual_seed(2))
    rays_o = rays_o.double().requires_grad_()
    rays_d = rays_d.double().requires_grad_()
    bg = torch.ones(3, dtype=torch.float64)

    def fn(o, d):
        out = model.render_rays(o, d, background=bg, train=False)
        return out["rgb"], out["opacity"]

    assert torch.autograd.gradcheck(fn, (rays_o, rays_d), eps=1e-6, atol=1e-5)


def test_gradients_reach_camera_poses():
    """A few steps through pixels_to_rays move CameraPoseParameters' deltas."""
    from taichi_nerf.poses import CameraPoseParameters
    from taichi_nerf.rays import Intrinsics, pixels_to_rays

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    centres = F.normalize(torch.randn(2, 3, generator=gen), dim=-1) * 4.0
    poses = []
    for c in centres:  # look at the origin, world +z up (Blender camera: -z forward)
        back = F.normalize(c, dim=0)
        right = F.normalize(torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0]), back), dim=0)
        up = torch.linalg.cross(back, right)
        poses.append(torch.stack([right, up, back, c], dim=1))
    cams = CameraPoseParameters(torch.stack(poses))
    intr = Intrinsics.from_blender(0.69, 16, 16)
    model = VanillaNeRF(2.0, 6.0, **TINY)
    pose_opt = torch.optim.Adam(cams.parameters(), lr=1e-3)
    field_opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        camera_ids = torch.randint(0, 2, (64,), generator=gen)
        pixels = torch.randint(0, 16, (64, 2), generator=gen)
        rays_o, rays_d = pixels_to_rays(pixels, camera_ids, cams(), intr)
        out = model.render_rays(rays_o, rays_d, background=torch.ones(3), train=True)
        target = _sphere_target(rays_o.detach(), rays_d.detach())
        loss = F.mse_loss(out["rgb"], target) + F.mse_loss(out["rgb_coarse"], target)
        pose_opt.zero_grad()
        field_opt.zero_grad()
        loss.backward()
        for p in (cams.rotation_delta, cams.translation_delta):
            assert p.grad is not None and torch.isfinite(p.grad).all()
            assert p.grad.abs().sum() > 0
        pose_opt.step()
        field_opt.step()
    assert cams.rotation_delta.abs().sum() > 0 and cams.translation_delta.abs().sum() > 0


def test_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    model = VanillaNeRF(2.0, 6.0, **TINY)
    keys = model.state_dict().keys()
    assert any(k.startswith("coarse.") for k in keys) and any(k.startswith("fine.") for k in keys)
    torch.save(model.state_dict(), tmp_path / "v.pt")
    torch.manual_seed(1)
    other = VanillaNeRF(2.0, 6.0, **TINY)
    other.load_state_dict(torch.load(tmp_path / "v.pt", weights_only=True))
    rays_o, rays_d = _orbit_rays(8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model.render_rays(rays_o, rays_d, background=torch.ones(3), train=False)
        b = other.render_rays(rays_o, rays_d, background=torch.ones(3), train=False)
    for key in ("rgb", "rgb_coarse", "opacity", "depth"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_demo_scene_loss_falls_and_poses_get_gradients():
    """The issue's check on the built-in demo scene: a small vanilla model trained jointly with
    noisy poses for a few dozen steps lowers the loss, and every step's gradient reaches the
    pose deltas of the cameras in the batch."""
    from pathlib import Path

    from taichi_nerf.data import PixelSampler, load_scene
    from taichi_nerf.poses import CameraPoseParameters, perturb_poses
    from taichi_nerf.rays import pixels_to_rays

    data = Path(__file__).resolve().parents[1] / "data"  # generated on first use (git-ignored)
    train = load_scene("demo", data, splits=("train",), downscale=8)["train"]
    torch.manual_seed(0)
    noisy = perturb_poses(train.poses, rotation_noise_deg=2.0, translation_noise_pct=1.0, seed=0)
    cams = CameraPoseParameters(noisy)
    model = VanillaNeRF(train.near, train.far, **TINY)
    field_opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    pose_opt = torch.optim.Adam(cams.parameters(), lr=1e-4)
    sampler = PixelSampler(train.images, seed=0)
    bg = torch.ones(3)
    losses = []
    for _ in range(30):
        camera_ids, pixels, target = sampler.sample(96)
        rays_o, rays_d = pixels_to_rays(pixels, camera_ids, cams(), train.intrinsics)
        out = model.render_rays(rays_o, rays_d, background=bg, train=True)
        loss = F.mse_loss(out["rgb"], target) + F.mse_loss(out["rgb_coarse"], target)
        field_opt.zero_grad()
        pose_opt.zero_grad()
        loss.backward()
        # A camera whose few rays in the batch all see empty space (density exactly 0 under the
        # ReLU) gets no gradient from this batch, so count the cameras that do.
        in_batch = torch.unique(camera_ids)
        for grad in (cams.rotation_delta.grad, cams.translation_delta.grad):
            assert torch.isfinite(grad).all()
            assert grad[in_batch].abs().sum(-1).gt(0).float().mean() > 0.8
        field_opt.step()
        pose_opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"demo loss {first:.4f} -> {last:.4f}")
    assert last < 0.7 * first, f"loss {first:.4f} -> {last:.4f}"
