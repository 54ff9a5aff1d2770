"""Instant-NGP radiance field and its occupancy-grid renderer.

:class:`NGPField`: world position -> unit cube (scene box) -> :class:`~taichi_nerf.kernels.HashGrid`
-> density MLP (one hidden layer) -> density (truncated exp) + a 15-dim geometry feature; SH
(degree 4) of the view direction + feature -> colour MLP (two hidden layers) -> sigmoid rgb.
Differentiable in its parameters **and** in the positions and directions, so gradients reach the
rays and the camera poses.

:class:`NGPRenderer` follows the renderer protocol of :mod:`taichi_nerf.models`: an occupancy
grid over the scene box updated from the field's density (``update_step``), and
``render_rays`` = march (no grad) -> field -> composite (:func:`taichi_nerf.render.render_rays`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from taichi_nerf.render import render_rays

__all__ = ["trunc_exp", "NGPField", "NGPRenderer", "instant_ngp_step_size"]


class _TruncExp(torch.autograd.Function):
    # exp forward; backward clamps the exponent at 15 (instant-ngp / torch-ngp trunc_exp), so a
    # large raw density early in training cannot blow the hash-table gradients up.
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, v_out):
        (x,) = ctx.saved_tensors
        return v_out * torch.exp(x.clamp(-15.0, 15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` whose gradient uses ``exp(clamp(x, -15, 15))``."""
    return _TruncExp.apply(x)


def instant_ngp_step_size(scene_aabb: torch.Tensor, marching_steps: int = 1024) -> float:
    """Marching step = sqrt(3) * longest box side / marching_steps (scene units).

    instant-ngp marches with ``SQRT3 / NERF_STEPS`` (1024) in its unit cube; for the Blender
    box ``[-1.5, 1.5]^3`` this is ``5.07e-3``, nerfacc's 5e-3. A constant step (no cone tracing)
    suits object-centred scenes, where rays never leave the box for long.
    """
    aabb = torch.as_tensor(scene_aabb, dtype=torch.float64).reshape(6)
    side = float((aabb[3:] - aabb[:3]).max())
    return math.sqrt(3.0) * side / marching_steps


class NGPField(nn.Module):
    """Hash-grid radiance field over an axis-aligned scene box.

    Args:
        scene_aabb: ``[6]`` box ``(xmin, ymin, zmin, xmax, ymax, zmax)``; positions are mapped to
            ``[0, 1]^3`` by it (and clamped: outside the box is the box's face).
        n_levels, n_features, log2_table_size, base_resolution, finest_resolution: hash grid.
        hidden_dim: width of both MLPs; geo_feat_dim: geometry feature size (15).
        density_bias: added to the raw density before ``trunc_exp`` (nerfacc uses -1: the field
            starts nearly empty instead of a fog of density 1).
        x_grad: the hash grid's position gradient, ``"exact"`` or ``"smooth"``
            (:func:`taichi_nerf.kernels.hash_encode`).

    ``forward(positions [M,3], directions [M,3] unit) -> (sigmas [M], rgbs [M,3])``;
    ``density(positions [M,3]) -> sigmas [M]``.
    """

    def __init__(self, scene_aabb, *, n_levels: int = 16, n_features: int = 2,
                 log2_table_size: int = 19, base_resolution: int = 16,
                 finest_resolution: int = 2048, hidden_dim: int = 64, geo_feat_dim: int = 15,
                 density_bias: float = -1.0, x_grad: str = "exact"):
        super().__init__()
        from taichi_nerf.kernels import HashGrid, HashGridSpec

        aabb = torch.as_tensor(scene_aabb, dtype=torch.float32).reshape(6)
        self.register_buffer("aabb_min", aabb[:3].clone())
        self.register_buffer("aabb_size", (aabb[3:] - aabb[:3]).clone())
        self.spec = HashGridSpec(n_levels=n_levels, n_features=n_features,
                                 log2_table_size=log2_table_size, base_resolution=base_resolution,
                                 finest_resolution=finest_resolution)
        self.encoding = HashGrid(self.spec, x_grad=x_grad)
        self.geo_feat_dim = geo_feat_dim
        self.density_bias = density_bias
        self.density_mlp = nn.Sequential(
            nn.Linear(self.spec.output_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, 1 + geo_feat_dim),
        )
        # Coarse-to-fine weights per hash level (BARF's window on the encoding): finer levels
        # fade in, so early pose gradients come from the smooth coarse levels only.
        self.register_buffer("level_weights", torch.ones(n_levels))
        self._c2f_active = False
        self.register_load_state_dict_post_hook(NGPField._after_load)
        self.color_mlp = nn.Sequential(
            nn.Linear(16 + geo_feat_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, 3),
        )

    @staticmethod
    def _after_load(module: NGPField, _keys) -> None:
        module._c2f_active = bool((module.level_weights < 1).any())

    def normalize(self, positions: torch.Tensor) -> torch.Tensor:
        """World ``[M,3]`` -> ``[0,1]^3`` by the scene box (clamped; gradient inside the box)."""
        return ((positions - self.aabb_min) / self.aabb_size).clamp(0.0, 1.0)

    def set_coarse_to_fine(self, progress: float, min_levels: int = 2) -> None:
        """BARF window over the levels: ``progress`` 0 keeps ``min_levels`` levels, 1 all.

        Level ``l`` gets ``(1 - cos(pi * clamp(a - l, 0, 1))) / 2`` with
        ``a = min_levels + progress * (L - min_levels)``.
        """
        n = self.level_weights.numel()
        alpha = min_levels + min(max(progress, 0.0), 1.0) * (n - min_levels)
        x = (alpha - torch.arange(n, dtype=torch.float64)).clamp(0.0, 1.0)
        self.level_weights.copy_(((1.0 - torch.cos(math.pi * x)) / 2).to(self.level_weights))
        self._c2f_active = bool((x < 1).any())

    def _geometry(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Unclamped: hash_encode clamps to [0, 1] itself, with the same gradient rule as
        # normalize's clamp (zero outside, boundaries included), so the values and gradients
        # are those of normalize() without a clamp and its backward per step.
        features = self.encoding(((positions - self.aabb_min) / self.aabb_size).contiguous())
        if self._c2f_active:  # a Python flag: no host sync per call
            weights = self.level_weights.repeat_interleave(self.spec.n_features)
            features = features * weights
        h = self.density_mlp(features)
        sigma = trunc_exp(h[:, 0] + self.density_bias)
        return sigma, h[:, 1:]

    def density(self, positions: torch.Tensor) -> torch.Tensor:
        """Densities ``[M]`` at world positions ``[M,3]``."""
        if positions.shape[0] == 0:
            return positions.new_zeros(0)
        return self._geometry(positions)[0]

    def forward(self, positions: torch.Tensor, directions: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        from taichi_nerf.kernels import sh_encode

        if positions.shape[0] == 0:
            zero = positions.sum() * 0 + directions.sum() * 0  # keep the graph connected
            return positions.new_zeros(0) + zero, positions.new_zeros(0, 3) + zero
        sigma, geo_feat = self._geometry(positions)
        sh = sh_encode(directions.contiguous())
        rgb = torch.sigmoid(self.color_mlp(torch.cat([sh, geo_feat], dim=-1)))
        return sigma, rgb

    def forward_packed(self, positions: torch.Tensor, rays_d: torch.Tensor,
                       ray_indices: torch.Tensor, packed_info=None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward(positions, rays_d[ray_indices])`` with the view encoding made once per ray.

        Every sample of a ray shares its direction, so the SH encoding (and, when the rays need
        a gradient, its backward) runs on ``[R]`` rays instead of ``[M]`` samples and is copied
        to the samples by :func:`~taichi_nerf.kernels.packed.gather_rays` (ordered backward).
        Values are identical to :meth:`forward`; gradients equal up to float summation order.

        Args:
            positions: ``[M,3]`` world positions; rays_d: ``[R,3]`` unit ray directions;
            ray_indices: ``[M]`` ray of each sample; packed_info: its segments (or None).
        """
        from taichi_nerf.kernels import sh_encode
        from taichi_nerf.kernels.packed import gather_rays

        if positions.shape[0] == 0:
            return self.forward(positions, rays_d[ray_indices])
        sigma, geo_feat = self._geometry(positions)
        sh = gather_rays(sh_encode(rays_d.contiguous()), ray_indices, packed_info)
        rgb = torch.sigmoid(self.color_mlp(torch.cat([sh, geo_feat], dim=-1)))
        return sigma, rgb


class NGPRenderer(nn.Module):
    """Renderer protocol for :class:`NGPField`: occupancy grid + marching + compositing.

    Args:
        scene_aabb: ``[6]`` scene box (field normalisation and occupancy grid).
        near, far: ray distance bounds.
        grid_resolution: occupancy cells per axis.
        marching_steps: step size = ``sqrt(3) * side / marching_steps``
            (:func:`instant_ngp_step_size`); ``step_size`` overrides it.
        max_samples_per_ray: marching cap.
        prune: evaluate the density once without grad and drop occluded samples before the
            differentiable pass (nerfacc's ``sigma_fn``), ``early_stop_eps`` = 1e-4.
        coarse_to_fine: ``(start, end)`` steps of the BARF-style level window
            (:meth:`NGPField.set_coarse_to_fine`); None: all levels from the start.
        c2f_min_levels: levels on before ``start``.
        stratified: jitter each training ray's t grid by ``U[0, step)`` (nerfacc does), from a
            generator seeded with ``seed`` (``rng_state``/``set_rng_state`` for resume).
        target_samples, max_batch_rays, min_batch_rays: the training batch policy
            (:meth:`next_num_rays`; min: pose gradients need rays on many cameras).
        eval_chunk: rays per chunk when rendering whole images.
        smooth_l1_beta: > 0: the training loss is smooth-L1 with this threshold (see
            :meth:`training_loss`); 0: the MSE.
        **field_kwargs: :class:`NGPField` arguments.
    """

    def __init__(self, scene_aabb, near: float, far: float, *, grid_resolution: int = 128,
                 marching_steps: int = 1024, step_size: float | None = None,
                 max_samples_per_ray: int = 1024, prune: bool = True, stratified: bool = True,
                 seed: int = 0, coarse_to_fine: tuple[int, int] | None = None,
                 c2f_min_levels: int = 2, target_samples: int = 0, max_batch_rays: int = 65536,
                 min_batch_rays: int = 256, eval_chunk: int = 16384, smooth_l1_beta: float = 0.0,
                 **field_kwargs):
        super().__init__()
        from taichi_nerf.kernels.marching import OccupancyGrid

        aabb = torch.as_tensor(scene_aabb, dtype=torch.float32).reshape(6)
        self.near, self.far = float(near), float(far)
        self.field = NGPField(aabb, **field_kwargs)
        self.grid = OccupancyGrid(aabb, resolution=grid_resolution)
        self.grid.mark_all_occupied()  # a fresh grid is empty; before the first update, march all
        self.step_size = (float(step_size) if step_size is not None
                          else instant_ngp_step_size(aabb, marching_steps))
        self.max_samples_per_ray = int(max_samples_per_ray)
        self.prune = prune
        self.stratified = stratified
        self.coarse_to_fine = tuple(coarse_to_fine) if coarse_to_fine else None
        self.c2f_min_levels = int(c2f_min_levels)
        if self.coarse_to_fine:
            self.field.set_coarse_to_fine(0.0, self.c2f_min_levels)
        self.seed = int(seed)
        self.target_samples, self.eval_chunk = int(target_samples), int(eval_chunk)
        self.max_batch_rays, self.min_batch_rays = int(max_batch_rays), int(min_batch_rays)
        self._generator: torch.Generator | None = None
        self.smooth_l1_beta = float(smooth_l1_beta)

    @torch.no_grad()
    def _sigma(self, positions: torch.Tensor) -> torch.Tensor:
        """Density sigma ``[M]`` (1 / scene unit), no gradient: the pruning pass."""
        return self.field.density(positions)

    @torch.no_grad()
    def _sigma_dt(self, positions: torch.Tensor) -> torch.Tensor:
        """sigma * step ``[M]`` (about one step's opacity): what the occupancy grid thresholds,
        as nerfacc does, instead of the raw density."""
        return self.field.density(positions) * self.step_size

    # --- training policy (what the trainer asks the model; see taichi_nerf.models) ---
    def make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """instant-ngp's Adam: betas (0.9, 0.99), eps 1e-15 (hash entries get tiny gradients)."""
        return torch.optim.Adam(self.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-15)

    def training_loss(self, out: dict, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, mse)`` of a training batch: the photometric MSE, or with ``smooth_l1_beta``
        > 0 the smooth-L1 (Huber) loss with that threshold, times 2 beta so that errors below
        it weigh as in the MSE (the step sizes stay comparable)."""
        mse = torch.nn.functional.mse_loss(out["rgb"], target)
        if self.smooth_l1_beta > 0:
            beta = self.smooth_l1_beta
            loss = torch.nn.functional.smooth_l1_loss(out["rgb"], target, beta=beta) * (2 * beta)
            return loss, mse
        return mse, mse

    def next_num_rays(self, num_rays: int, out: dict) -> int:
        """Rays for the next step: nerfacc's rule ``rays *= target_samples / samples`` (fixed when
        ``target_samples`` is 0). A pruned sample had a no-grad density pass only, about a
        quarter of a shaded sample's forward + backward, so it counts 1/4."""
        if self.target_samples <= 0:
            return num_rays
        pruned = int(out.get("num_marched", out["num_samples"])) - int(out["num_samples"])
        samples = max(int(out["num_samples"]) + pruned // 4, 1)
        num_rays = int(num_rays * self.target_samples / samples)
        return max(self.min_batch_rays, min(num_rays, self.max_batch_rays))

    def update_step(self, step: int) -> None:
        """Coarse-to-fine window, then the occupancy-grid update (the grid decides when)."""
        if self.coarse_to_fine:
            start, end = self.coarse_to_fine
            self.field.set_coarse_to_fine((step - start) / max(end - start, 1),
                                          self.c2f_min_levels)
        self.grid.update(step, self._sigma_dt)

    def generator(self, device: torch.device) -> torch.Generator:
        """The generator of the stratified jitter (made on first use on ``device``)."""
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def rng_state(self) -> torch.Tensor:
        """State of the jitter generator (for checkpoints; the grid's RNG is stateless)."""
        return self.generator(self.grid.aabb.device).get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.generator(self.grid.aabb.device).set_state(state.cpu())

    def render_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor, *,
                    background: torch.Tensor | None, train: bool = True) -> dict:
        """See :func:`taichi_nerf.render.render_rays`; gradients reach field, rays_o, rays_d."""
        jitter = train and self.stratified
        return render_rays(self.field, self.grid, rays_o, rays_d, near=self.near, far=self.far,
                           step_size=self.step_size, background=background,
                           max_samples_per_ray=self.max_samples_per_ray,
                           density_fn=self._sigma if self.prune else None,
                           stratified=jitter,
                           generator=self.generator(rays_o.device) if jitter else None)

    def extra_repr(self) -> str:
        return f"near={self.near}, far={self.far}, step_size={self.step_size:.4g}"
