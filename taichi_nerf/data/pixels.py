"""Random training pixels: the images stay on the device as uint8; rays are made per batch.

No rays are precomputed: the poses change during pose optimization, so the trainer turns each
batch's ``(camera_ids, pixels)`` into rays from the *current* poses with
``taichi_nerf.rays.pixels_to_rays``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

__all__ = ["PixelDataset", "PixelSampler", "edge_strength", "edge_sampling_keys"]


def edge_strength(images: torch.Tensor) -> torch.Tensor:
    """``[N, H, W]`` float32 image-gradient magnitude of ``uint8 [N, H, W, 3]`` images: the
    largest over the colour channels of the Sobel gradient's length (in [0, 1] colour units per
    pixel, edges replicated at the borders).

    Plain float64 arithmetic on shifted slices, one image at a time: the same bits on every
    device and thread count (a resumed run rebuilds the sampling keys from it), and memory of
    a few copies of one image, not of the whole set.
    """
    out = torch.empty(images.shape[:3], dtype=torch.float32, device=images.device)
    for i in range(images.shape[0]):
        x = images[i].to(torch.float64).permute(2, 0, 1) / 255.0  # [3, H, W]
        x = torch.cat([x[:, :1], x, x[:, -1:]], dim=1)
        x = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)  # replicate-padded [3, H+2, W+2]
        rows = (x[:, :-2] + 2 * x[:, 1:-1] + x[:, 2:]) / 8  # vertical smoothing
        cols = (x[:, :, :-2] + 2 * x[:, :, 1:-1] + x[:, :, 2:]) / 8  # horizontal smoothing
        gx = rows[:, :, 2:] - rows[:, :, :-2]
        gy = cols[:, 2:, :] - cols[:, :-2, :]
        out[i] = torch.sqrt(gx * gx + gy * gy).amax(dim=0).to(torch.float32)
    return out


def edge_sampling_keys(images: torch.Tensor, mix: float) -> torch.Tensor:
    """Sorted ``[N*H*W]`` float64 keys that draw pixels in proportion to
    ``(1 - mix) + mix * edge / mean(edge of that image)`` within each image.

    Key ``i`` of image ``c`` is ``c`` plus the cumulative share of that image's weights up to
    and including pixel ``i``, so ``searchsorted(keys, c + u, right=True)`` with ``u ~ U[0,1)``
    draws a pixel of image ``c`` with its weight's probability. An image with no edges at all
    is drawn uniformly. Memory: 8 bytes per pixel (2.7x the uint8 images).
    """
    if not 0.0 <= float(mix) <= 1.0:
        raise ValueError(f"edge_sampling_keys: mix must be in [0, 1], got {mix!r}")
    edges = edge_strength(images).to(torch.float64).flatten(1)
    mean = edges.mean(dim=1, keepdim=True)
    weights = (1.0 - mix) + mix * torch.where(mean > 0, edges / mean.clamp_min(1e-30), 1.0)
    cdf = torch.cumsum(weights, dim=1)
    cdf = cdf / cdf[:, -1:]
    offsets = torch.arange(images.shape[0], device=images.device, dtype=torch.float64)
    return (cdf + offsets[:, None]).reshape(-1).contiguous()


@dataclasses.dataclass
class PixelDataset:
    """The training pixels of a split, what :class:`PixelSampler` draws from.

    Attributes:
        images: ``uint8 [N, H, W, 3]`` (row ``v``, column ``u``).
        intrinsics: ``[N, 4]`` ``(fx, fy, cx, cy)`` per camera, pixels.
        camera_ids: ``[N]`` long, the pose index of each image (``arange(N)`` by default).
    """

    images: torch.Tensor
    intrinsics: torch.Tensor
    camera_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.camera_ids is None:
            self.camera_ids = torch.arange(self.images.shape[0])

    @classmethod
    def from_image_set(cls, image_set) -> PixelDataset:
        """The pixels of an ``ImageSet`` (``load_scene(...)["train"]``)."""
        return cls(image_set.images, image_set.intrinsics)

    @property
    def num_cameras(self) -> int:
        return int(self.images.shape[0])


class PixelSampler:
    """Random training pixels with a seeded generator: uniform over all pixels of all images, or
    stratified over cameras.

    Args:
        images: ``uint8 [N, H, W, 3]`` training images (e.g. ``ImageSet.images``) or a
            :class:`PixelDataset`; a copy is kept on ``device``.
        seed: seed of the ``torch.Generator`` (on ``device``) that draws the pixels.
        device: where the images live and batches are returned.
        mode: ``"uniform"`` (every pixel equally likely) or ``"per_camera"`` (every camera gets
            ``floor(B / N)`` rays of each batch, the remainder goes to cameras drawn at random;
            pixels uniform within each image), so each camera's pose gradient is less noisy.
        alphas: ``uint8 [N, H, W]`` the images' alpha (``ImageSet.alphas``), for
            :meth:`random_background`; None: that method is unavailable.

    Example:
        >>> sampler = PixelSampler(image_set.images, seed=0, device="cuda")
        >>> camera_ids, pixels, rgb = sampler.sample(4096)
        >>> rays_o, rays_d = pixels_to_rays(pixels, camera_ids, poses, image_set.intrinsics)
    """

    def __init__(
        self, images: torch.Tensor, seed: int = 0, device: torch.device | str = "cpu",
        mode: str = "uniform", alphas: torch.Tensor | None = None, edge_mix: float = 0.0,
    ) -> None:
        if isinstance(images, PixelDataset):
            images = images.images
        if mode not in ("uniform", "per_camera"):
            raise ValueError(f"PixelSampler: mode must be 'uniform' or 'per_camera', got {mode!r}")
        self.mode = mode
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"PixelSampler: images must be a uint8 tensor [N, H, W, 3], got {got}")
        if images.dim() != 4 or images.shape[3] != 3 or images.numel() == 0:
            raise ValueError(
                f"PixelSampler: images must have shape [N, H, W, 3] with N, H, W > 0, "
                f"got {list(images.shape)}"
            )
        self.device = torch.device(device)
        self.images = images.to(self.device).contiguous()
        self.num_images, self.height, self.width = (int(s) for s in images.shape[:3])
        self.num_pixels = self.num_images * self.height * self.width
        self.seed = int(seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self._flat_rgb = self.images.view(-1, 3)
        self._flat_alpha = None
        if alphas is not None:
            if alphas.dtype != torch.uint8 or tuple(alphas.shape) != tuple(images.shape[:3]):
                raise ValueError(f"PixelSampler: alphas must be uint8 {list(images.shape[:3])} "
                                 f"like the images, got {alphas.dtype} {list(alphas.shape)}")
            self._flat_alpha = alphas.to(self.device).reshape(-1)
        if not 0.0 <= float(edge_mix) <= 1.0:
            raise ValueError(f"PixelSampler: edge_mix must be in [0, 1], got {edge_mix!r}")
        self.edge_mix = float(edge_mix)
        # Keys of the pure edge distribution: a draw takes it with probability edge_mix and the
        # uniform one otherwise, which is the mixture (1 - mix) U + mix E for any mix.
        self._edge_keys = edge_sampling_keys(self.images, 1.0) if edge_mix > 0 else None

    def sample(self, batch_size: int, edge_mix: float | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` pixels (with replacement) as ``mode`` says; with edge sampling
        (``edge_mix`` here, else the constructor's; 0 switches it off for this batch) each
        pixel comes from the edge distribution with that probability.

        Returns:
            ``camera_ids [B]`` long image indices, ``pixels [B, 2]`` long ``(u, v)`` =
            (column, row), and ``rgb [B, 3]`` float32 targets in [0, 1], all on ``device``.
        """
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(
                f"PixelSampler.sample: batch_size must be an integer >= 1, got {batch_size!r}"
            )
        pixels_per_image = self.height * self.width
        mix = self.edge_mix if edge_mix is None else float(edge_mix)
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"PixelSampler.sample: edge_mix must be in [0, 1], got {edge_mix!r}")
        if mix > 0 and self._edge_keys is None:
            raise ValueError("PixelSampler.sample: edge_mix > 0 needs a sampler built with "
                             "edge_mix > 0 (its edge keys)")
        if mix > 0:
            flat = self._edges(int(batch_size), mix, pixels_per_image)
        elif self.mode == "per_camera":
            flat = self._per_camera(int(batch_size), pixels_per_image)
        else:
            flat = torch.randint(0, self.num_pixels, (int(batch_size),),
                                 generator=self.generator, device=self.device)
        camera_ids = flat // pixels_per_image
        within = flat - camera_ids * pixels_per_image
        v = within // self.width
        u = within - v * self.width
        rgb = self._flat_rgb[flat].to(torch.float32) / 255.0
        return camera_ids, torch.stack([u, v], dim=-1), rgb

    def random_background(self, camera_ids: torch.Tensor, pixels: torch.Tensor,
                          rgb: torch.Tensor, background: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random colour behind each pixel of a batch (instant-ngp's and nerfacc's training
        trick for images with alpha): the field must then make empty space truly empty and
        every silhouette sharp, since no colour of its own matches a background it cannot know.

        Args:
            camera_ids, pixels: a batch from :meth:`sample`.
            rgb: its targets, composited on ``background`` ``[3]`` (the images' colour).

        Returns:
            ``colours [B, 3]`` uniform in [0, 1] (drawn from this sampler's generator, so a
            resumed run draws the same) and the targets re-composited on them,
            ``rgb + (1 - alpha) (colours - background)``.
        """
        if self._flat_alpha is None:
            raise ValueError("PixelSampler.random_background: the sampler has no alphas")
        flat = (camera_ids * self.height + pixels[:, 1]) * self.width + pixels[:, 0]
        rest = 1.0 - self._flat_alpha[flat].to(torch.float32)[:, None] / 255.0
        colours = torch.rand(rgb.shape, generator=self.generator, device=self.device)
        return colours, rgb + rest * (colours - background.to(rgb))

    def _cameras(self, batch_size: int) -> torch.Tensor:
        """``[B]`` camera of each ray: ``batch // N`` per camera (camera-major), the rest at
        random (``per_camera``), or every camera equally likely."""
        if self.mode != "per_camera":
            return torch.randint(0, self.num_images, (batch_size,), generator=self.generator,
                                 device=self.device)
        share, rest = divmod(batch_size, self.num_images)
        cams = torch.arange(self.num_images, device=self.device).repeat_interleave(share)
        extra = torch.randint(0, self.num_images, (rest,), generator=self.generator,
                              device=self.device)
        return torch.cat([cams, extra])

    def _per_camera(self, batch_size: int, pixels_per_image: int) -> torch.Tensor:
        """Flat pixel indices, cameras stratified, pixels uniform within each image."""
        cams = self._cameras(batch_size)
        within = torch.randint(0, pixels_per_image, (batch_size,), generator=self.generator,
                               device=self.device)
        return cams * pixels_per_image + within

    def _edges(self, batch_size: int, mix: float, pixels_per_image: int) -> torch.Tensor:
        """Flat pixel indices, cameras as ``mode`` says; within an image a pixel comes with
        probability ``mix`` from the edge distribution (:func:`edge_sampling_keys`, inverse CDF:
        camera ``c`` and ``u ~ U[0,1)`` -> key ``c + u``), else uniformly (``floor(u * H W)``)."""
        cams = self._cameras(batch_size)
        u = torch.rand(batch_size, generator=self.generator, device=self.device,
                       dtype=torch.float64)
        on_edges = torch.rand(batch_size, generator=self.generator, device=self.device) < mix
        edge = torch.searchsorted(self._edge_keys, cams.to(torch.float64) + u, right=True)
        edge = edge.clamp_(max=self.num_pixels - 1)
        within = (u * pixels_per_image).long().clamp_(max=pixels_per_image - 1)
        return torch.where(on_edges, edge, cams * pixels_per_image + within)

    def state_dict(self) -> dict[str, Any]:
        """Generator state (and the image-set shape it belongs to) for an exact resume."""
        return {
            "generator_state": self.generator.get_state(),
            "seed": self.seed,
            "shape": (self.num_images, self.height, self.width),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``: later batches equal those the saved sampler would draw."""
        shape = tuple(state.get("shape", ()))
        if shape != (self.num_images, self.height, self.width):
            raise ValueError(
                f"PixelSampler.load_state_dict: state is for images of shape {list(shape)} "
                f"[N, H, W], this sampler has {[self.num_images, self.height, self.width]}"
            )
        self.generator.set_state(state["generator_state"].cpu())
        self.seed = int(state.get("seed", self.seed))

    def __repr__(self) -> str:
        return (
            f"PixelSampler(images=[{self.num_images}, {self.height}, {self.width}, 3], "
            f"seed={self.seed}, device={self.device}, mode={self.mode!r})"
        )
