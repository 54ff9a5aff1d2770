"""Vanilla NeRF (Mildenhall et al., ECCV 2020) in plain torch: the original recipe, as a renderer.

Positional encoding (10 frequencies for positions, 4 for view directions, each with the raw input
kept), an 8x256 ReLU MLP with the encoded position concatenated back in after layer 4, a density
head, a 256-wide feature and a 128-wide view-direction branch to rgb. A coarse network sees 64
stratified samples per ray (jittered while training); a fine network sees those 64 plus 128
importance samples drawn by inverse CDF from the coarse weights (detached, as in the paper).

The module follows the renderer protocol of ``taichi_nerf.models``: ``render_rays(rays_o, rays_d,
*, background, train)``, ``update_step(step)`` (a no-op here) and a ``state_dict`` that holds the
coarse and the fine weights. Sample distances ``t`` carry no gradient, but positions
``o + t * d`` and view directions are computed in torch from ``rays_o`` / ``rays_d``, so the
photometric loss reaches the rays and, through ``taichi_nerf.rays.pixels_to_rays``, the camera
poses (joint pose optimization works on this backend too).

Volume rendering is dense ``[R, S]`` alpha compositing in torch (transmittance
``exp(-exclusive_cumsum(sigma * delta))``) rather than the packed Taichi ``composite`` op: every
ray has the same number of samples here, so the dense form is as fast, needs no index bookkeeping
and keeps this baseline free of custom kernels. Each sample covers the interval up to the next
sample and the last one up to ``far`` (the original used a 1e10 last interval, which turns the
farthest sample into an opaque backdrop); the opacity is then the true opacity inside
``[near, far]`` and the background colour fills the rest, the same convention as the ngp renderer.

Conventions: rays are world-space with unit directions (Blender/OpenGL cameras, see
``taichi_nerf.rays``); ``t`` is metric distance along the ray; ``near`` / ``far`` come from the
dataset (Blender: 2 and 6).

Example::

    model = VanillaNeRF(near=2.0, far=6.0)
    out = model.render_rays(rays_o, rays_d, background=torch.ones(3), train=True)
    loss = mse(out["rgb"], target) + mse(out["rgb_coarse"], target)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "NeRFMLP",
    "VanillaNeRF",
    "composite_dense",
    "positional_encoding",
    "sample_pdf",
    "stratified_samples",
]


def positional_encoding(x: Tensor, num_freqs: int, include_input: bool = True) -> Tensor:
    """NeRF's frequency encoding ``[x, sin(2^0 x), cos(2^0 x), ..., cos(2^(L-1) x)]``.

    Args:
        x: ``[..., C]`` (positions in scene units or unit directions).
        num_freqs: L, frequencies ``2^0 .. 2^(L-1)`` (no factor pi, as in the original code).
        include_input: keep ``x`` itself in front.

    Returns:
        ``[..., C * (include_input + 2 L)]``, differentiable in ``x``.
    """
    freqs = 2.0 ** torch.arange(num_freqs, dtype=x.dtype, device=x.device)
    xb = x[..., None, :] * freqs[:, None]  # [..., L, C]
    enc = torch.stack([torch.sin(xb), torch.cos(xb)], dim=-2).flatten(-3)  # sin/cos per freq
    return torch.cat([x, enc], dim=-1) if include_input else enc


def encoding_dim(in_dim: int, num_freqs: int, include_input: bool = True) -> int:
    """Output width of :func:`positional_encoding` for ``in_dim`` inputs."""
    return in_dim * (int(include_input) + 2 * num_freqs)


class NeRFMLP(nn.Module):
    """The NeRF field: encoded position (and view direction) -> density and rgb.

    ``depth`` ReLU layers of ``width``; the encoded position is concatenated to the output of
    layer ``skip`` (0-based, the paper's skip at layer 4 of 8). Density ``relu(sigma)``; rgb
    ``sigmoid`` after a ``dir_width`` layer that also sees the encoded view direction.
    """

    def __init__(
        self,
        pos_dim: int,
        dir_dim: int,
        width: int = 256,
        depth: int = 8,
        skip: int | None = 4,
        dir_width: int | None = None,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"NeRFMLP depth must be >= 1, got {depth}")
        if skip is not None and not 0 <= skip < depth - 1:
            raise ValueError(f"NeRFMLP skip must be in [0, depth - 1) or None, got {skip}")
        self.skip = skip
        dir_width = width // 2 if dir_width is None else dir_width
        layers, in_dim = [], pos_dim
        for i in range(depth):
            layers.append(nn.Linear(in_dim, width))
            in_dim = width + (pos_dim if i == skip else 0)
        self.pts_linears = nn.ModuleList(layers)
        self.sigma_linear = nn.Linear(width, 1)
        self.feature_linear = nn.Linear(width, width)
        self.dir_linear = nn.Linear(width + dir_dim, dir_width)
        self.rgb_linear = nn.Linear(dir_width, 3)

    def forward(self, pos_enc: Tensor, dir_enc: Tensor) -> tuple[Tensor, Tensor]:
        """``pos_enc [N, P]``, ``dir_enc [N, D]`` -> ``(sigma [N] >= 0, rgb [N, 3] in (0, 1))``."""
        h = pos_enc
        for i, layer in enumerate(self.pts_linears):
            h = F.relu(layer(h))
            if i == self.skip:
                h = torch.cat([pos_enc, h], dim=-1)
        sigma = F.relu(self.sigma_linear(h)).squeeze(-1)
        h = F.relu(self.dir_linear(torch.cat([self.feature_linear(h), dir_enc], dim=-1)))
        return sigma, torch.sigmoid(self.rgb_linear(h))


def stratified_samples(
    n_rays: int,
    near: float,
    far: float,
    num_samples: int,
    *,
    perturb: bool,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sample distances ``[R, S]``, sorted, in ``[near, far]`` (no grad).

    Evenly spaced points including ``near`` and ``far``; with ``perturb`` each point is drawn
    uniformly within its stratum (bounded by the midpoints to its neighbours), as in the paper.
    Uses the global torch RNG.
    """
    t_vals = torch.linspace(0.0, 1.0, num_samples, device=device, dtype=dtype)
    t = (near * (1.0 - t_vals) + far * t_vals).expand(n_rays, num_samples)
    if not perturb or num_samples < 2:
        return t.contiguous()
    mids = 0.5 * (t[:, 1:] + t[:, :-1])
    upper = torch.cat([mids, t[:, -1:]], dim=-1)
    lower = torch.cat([t[:, :1], mids], dim=-1)
    return lower + (upper - lower) * torch.rand(t.shape, device=device, dtype=dtype)


@torch.no_grad()
def sample_pdf(bins: Tensor, weights: Tensor, num_samples: int, *, deterministic: bool) -> Tensor:
    """Inverse-CDF sampling of a piecewise-constant pdf (NeRF's hierarchical sampling; no grad).

    Args:
        bins: ``[R, B + 1]`` sorted bin edges (distances along the ray).
        weights: ``[R, B]`` non-negative weight per bin (need not sum to 1; 1e-5 is added so an
            empty ray samples uniformly).
        num_samples: N samples per ray.
        deterministic: evenly spaced CDF levels instead of uniform random ones (evaluation).

    Returns:
        ``[R, N]`` distances, each inside the bin its CDF level falls into; not sorted when random.
    """
    weights = weights + 1e-5
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    if deterministic:
        u = torch.linspace(0.0, 1.0, num_samples, device=bins.device, dtype=bins.dtype)
        u = u.expand(bins.shape[0], num_samples).contiguous()
    else:
        u = torch.rand(bins.shape[0], num_samples, device=bins.device, dtype=bins.dtype)
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (idx - 1).clamp(min=0)
    above = idx.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    bin_lo, bin_hi = bins.gather(-1, below), bins.gather(-1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


def composite_dense(
    sigmas: Tensor, rgbs: Tensor, t: Tensor, far: float, background: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Alpha compositing of ``S`` samples per ray, all rays alike.

    Args:
        sigmas: ``[R, S]`` densities; rgbs: ``[R, S, 3]``; t: ``[R, S]`` sorted sample distances.
            Sample ``i`` covers ``[t_i, t_{i+1}]``, the last one ``[t_{S-1}, far]``.
        far: end of the last interval.
        background: ``[3]`` or ``[R, 3]`` colour behind the ray, or None (black).

    Returns:
        ``(rgb [R, 3], opacity [R], depth [R], weights [R, S])``; differentiable in sigmas and
        rgbs (t is treated as a constant). Depth is ``sum(w * t)`` (not normalized by opacity).
    """
    from taichi_nerf.kernels.packed import exclusive_transmittance, packed_info_from_counts

    deltas = torch.cat([t[:, 1:] - t[:, :-1], far - t[:, -1:]], dim=-1).clamp_min(0.0)
    tau = sigmas * deltas  # optical depth of each interval
    n_rays, n_samples = tau.shape
    # The dense [R, S] layout as packed samples: the one transmittance primitive of the project.
    counts = torch.full((n_rays,), n_samples, dtype=torch.int32, device=tau.device)
    ray_indices = torch.arange(n_rays, device=tau.device).repeat_interleave(n_samples)
    info = packed_info_from_counts(counts, n_rays * n_samples, n_samples)
    transmittance = exclusive_transmittance(tau.reshape(-1), ray_indices, n_rays, info)
    weights = (1.0 - torch.exp(-tau)) * transmittance.view(n_rays, n_samples)
    opacity = weights.sum(dim=-1)
    rgb = (weights[..., None] * rgbs).sum(dim=-2)
    if background is not None:
        rgb = rgb + (1.0 - opacity)[:, None] * background.to(rgb)
    depth = (weights * t).sum(dim=-1)
    return rgb, opacity, depth, weights


class VanillaNeRF(nn.Module):
    """Coarse + fine NeRF renderer with the original recipe (see the module docstring).

    Args:
        near, far: sampling range along each ray (scene units; Blender scenes: 2, 6).
        num_coarse: stratified samples per ray for the coarse network (64).
        num_fine: importance samples per ray for the fine network (128); 0 renders with the
            coarse network alone (small tests).
        pos_freqs, dir_freqs: encoding frequencies (10, 4); the raw input is kept as well.
        width, depth, skip: MLP size (256, 8, skip after layer 4).
        dir_width: view-direction branch width (default ``width // 2`` = 128).
        eval_chunk: rays per chunk when rendering whole images.
    """

    def __init__(
        self,
        near: float,
        far: float,
        num_coarse: int = 64,
        num_fine: int = 128,
        pos_freqs: int = 10,
        dir_freqs: int = 4,
        width: int = 256,
        depth: int = 8,
        skip: int | None = 4,
        dir_width: int | None = None,
        eval_chunk: int = 4096,
    ) -> None:
        super().__init__()
        if not 0.0 <= near < far:
            raise ValueError(f"VanillaNeRF needs 0 <= near < far, got near={near}, far={far}")
        if num_coarse < 3 or num_fine < 0:
            raise ValueError(
                f"VanillaNeRF needs num_coarse >= 3 and num_fine >= 0, got {num_coarse}, {num_fine}"
            )
        self.near, self.far = float(near), float(far)
        self.num_coarse, self.num_fine = int(num_coarse), int(num_fine)
        self.eval_chunk = int(eval_chunk)
        self.pos_freqs, self.dir_freqs = int(pos_freqs), int(dir_freqs)
        pos_dim, dir_dim = encoding_dim(3, pos_freqs), encoding_dim(3, dir_freqs)
        self.coarse = NeRFMLP(pos_dim, dir_dim, width, depth, skip, dir_width)
        self.fine = NeRFMLP(pos_dim, dir_dim, width, depth, skip, dir_width) if num_fine else None

    def update_step(self, step: int) -> None:
        """Per-step hook of the renderer protocol; vanilla NeRF keeps no schedule or grid."""

    # --- training policy (what the trainer asks the model; see taichi_nerf.models) ---
    def make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """The paper's Adam (torch defaults: betas (0.9, 0.999), eps 1e-8)."""
        return torch.optim.Adam(self.parameters(), lr=lr)

    def training_loss(self, out: dict, target: Tensor) -> tuple[Tensor, Tensor]:
        """``(loss, mse)``: fine MSE + coarse MSE, as in the paper; ``mse`` is the fine one."""
        mse = F.mse_loss(out["rgb"], target)
        return mse + F.mse_loss(out["rgb_coarse"], target), mse

    def next_num_rays(self, num_rays: int, out: dict) -> int:
        """A fixed batch: the paper's rays per step never change."""
        return num_rays

    def _query(self, mlp: NeRFMLP, rays_o: Tensor, rays_d: Tensor, t: Tensor):
        """Evaluate ``mlp`` at ``o + t d`` for ``t [R, S]``: ``sigma [R, S]``, ``rgb [R, S, 3]``."""
        n_rays, n_samples = t.shape
        positions = rays_o[:, None, :] + t[..., None] * rays_d[:, None, :]
        view_dirs = F.normalize(rays_d, dim=-1)
        pos_enc = positional_encoding(positions.reshape(-1, 3), self.pos_freqs)
        dir_enc = positional_encoding(view_dirs, self.dir_freqs)
        dir_enc = dir_enc[:, None, :].expand(n_rays, n_samples, -1).reshape(pos_enc.shape[0], -1)
        sigma, rgb = mlp(pos_enc, dir_enc)
        return sigma.view(n_rays, n_samples), rgb.view(n_rays, n_samples, 3)

    def render_rays(
        self, rays_o: Tensor, rays_d: Tensor, *, background: Tensor | None, train: bool
    ) -> dict[str, Tensor | int]:
        """Render ``R`` rays with the coarse and the fine network.

        Args:
            rays_o: ``[R, 3]`` world-space origins; rays_d: ``[R, 3]`` unit directions.
            background: ``[3]`` or ``[R, 3]`` colour composited behind each ray (None: black).
            train: jitter the coarse strata and draw the importance samples at random; else both
                are deterministic.

        Returns:
            dict with ``rgb [R, 3]``, ``opacity [R]``, ``depth [R]`` (fine network when
            ``num_fine > 0``), ``rgb_coarse [R, 3]`` (its MSE is added by :meth:`training_loss`, as in the
            paper; with ``num_fine == 0`` it is ``rgb`` itself, which only doubles the loss scale
            and leaves Adam's steps nearly unchanged), ``num_samples`` (int, network evaluations in this call). Gradients reach both
            networks and ``rays_o`` / ``rays_d``; the sample distances are detached.
        """
        if rays_o.shape != rays_d.shape or rays_o.dim() != 2 or rays_o.shape[-1] != 3:
            raise ValueError(
                f"render_rays needs rays_o and rays_d of shape [R, 3], got "
                f"{tuple(rays_o.shape)} and {tuple(rays_d.shape)}"
            )
        n_rays = rays_o.shape[0]
        t_coarse = stratified_samples(
            n_rays, self.near, self.far, self.num_coarse, perturb=train,
            device=rays_o.device, dtype=rays_o.dtype,
        )
        sigma_c, rgb_c = self._query(self.coarse, rays_o, rays_d, t_coarse)
        rgb_coarse, opacity, depth, weights = composite_dense(
            sigma_c, rgb_c, t_coarse, self.far, background
        )
        out: dict[str, Tensor | int] = {"rgb_coarse": rgb_coarse}
        num_samples = n_rays * self.num_coarse
        rgb = rgb_coarse
        if self.fine is not None:
            mids = 0.5 * (t_coarse[:, 1:] + t_coarse[:, :-1])
            t_new = sample_pdf(
                mids, weights[:, 1:-1].detach(), self.num_fine, deterministic=not train
            )
            t_fine, _ = torch.sort(torch.cat([t_coarse, t_new], dim=-1), dim=-1)
            sigma_f, rgb_f = self._query(self.fine, rays_o, rays_d, t_fine.detach())
            rgb, opacity, depth, _ = composite_dense(sigma_f, rgb_f, t_fine, self.far, background)
            num_samples += n_rays * t_fine.shape[1]
        out.update(rgb=rgb, opacity=opacity, depth=depth, num_samples=int(num_samples))
        return out

    def extra_repr(self) -> str:
        return (
            f"near={self.near}, far={self.far}, num_coarse={self.num_coarse}, "
            f"num_fine={self.num_fine}, pos_freqs={self.pos_freqs}, dir_freqs={self.dir_freqs}"
        )
