"""Pinhole intrinsics and pixel -> ray conversion, differentiable in the camera poses.

Conventions (the Blender / OpenGL camera used by nerf_synthetic, instant-ngp and nerfstudio):

- Poses are camera-to-world ``[N, 3, 4]`` (``[N, 4, 4]`` accepted): columns 0..2 of the
  rotation are the camera's +x (right), +y (up) and +z (backwards) axes in world coordinates,
  column 3 is the camera centre. The camera looks down its own -z axis.
- Pixel ``(u, v)`` is (column, row), both counted from the top-left corner; the pixel's centre
  is at ``(u + 0.5, v + 0.5)``. Image rows grow downwards, camera +y points up, hence the minus.
- ``rays_d = R @ normalize([(u + 0.5 - cx) / fx, -(v + 0.5 - cy) / fy, -1])`` and
  ``rays_o = t``; both are plain torch expressions of the pose, so autograd carries the
  photometric gradient from a ray back into the pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Intrinsics", "pixels_to_rays", "image_pixels", "image_rays"]


@dataclass
class Intrinsics:
    """Pinhole intrinsics of one camera, in pixels of an image of ``width x height``.

    Attributes:
        fx, fy: focal lengths in pixels.
        cx, cy: principal point in pixels, measured from the top-left image corner (so the
            image centre of a ``W x H`` image is ``(W / 2, H / 2)``).
        width, height: image size in pixels.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_blender(
        cls,
        camera_angle_x: float,
        width: int,
        height: int,
        camera_angle_y: float | None = None,
    ) -> Intrinsics:
        """Intrinsics from the field of view of a Blender ``transforms_*.json``.

        ``fx = 0.5 * width / tan(0.5 * camera_angle_x)``; ``fy`` comes from ``camera_angle_y``
        when given, else ``fy = fx`` (square pixels). The principal point is the image centre.

        Args:
            camera_angle_x: horizontal field of view in radians.
            width, height: image size in pixels.
            camera_angle_y: optional vertical field of view in radians.
        """
        fx = 0.5 * width / math.tan(0.5 * camera_angle_x)
        fy = fx if camera_angle_y is None else 0.5 * height / math.tan(0.5 * camera_angle_y)
        return cls(
            fx=float(fx),
            fy=float(fy),
            cx=0.5 * width,
            cy=0.5 * height,
            width=int(width),
            height=int(height),
        )

    def scaled(self, factor: float) -> Intrinsics:
        """Intrinsics of the same camera for an image resized by ``factor``.

        ``factor = 1 / d`` for a downscale by ``d``: focal lengths and principal point are
        multiplied by ``factor`` and the size is ``floor(size * factor)`` (a downscale crops the
        last partial block of pixels on the right and bottom, which leaves ``cx, cy`` exact).
        """
        if not factor > 0:
            raise ValueError(f"Intrinsics.scaled: factor must be > 0, got {factor}")
        return Intrinsics(
            fx=self.fx * factor,
            fy=self.fy * factor,
            cx=self.cx * factor,
            cy=self.cy * factor,
            width=int(math.floor(self.width * factor + 1e-6)),
            height=int(math.floor(self.height * factor + 1e-6)),
        )

    def as_tensor(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``[4]`` tensor ``(fx, fy, cx, cy)``, the layout ``pixels_to_rays`` accepts."""
        return torch.tensor([self.fx, self.fy, self.cx, self.cy], dtype=dtype, device=device)


def _intrinsics_per_ray(
    intrinsics: Intrinsics | torch.Tensor,
    camera_ids: torch.Tensor,
    num_cameras: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """``[B, 4]`` or ``[4]`` tensor of ``(fx, fy, cx, cy)`` for each ray, in ``dtype``."""
    if isinstance(intrinsics, Intrinsics):
        return intrinsics.as_tensor(dtype=dtype, device=device)
    if not isinstance(intrinsics, torch.Tensor):
        raise ValueError(
            "pixels_to_rays: intrinsics must be an Intrinsics, a [4] or an [N, 4] tensor, "
            f"got {type(intrinsics).__name__}"
        )
    k = intrinsics.to(device=device, dtype=dtype)
    if k.shape == (4,):
        return k
    if k.dim() == 2 and k.shape[1] == 4:
        if k.shape[0] != num_cameras:
            raise ValueError(
                f"pixels_to_rays: intrinsics has {k.shape[0]} rows but poses has {num_cameras} "
                "cameras; pass one (fx, fy, cx, cy) row per camera or a single [4] tensor"
            )
        return k[camera_ids]
    raise ValueError(
        f"pixels_to_rays: intrinsics must have shape [4] or [N, 4], got {list(k.shape)}"
    )


def pixels_to_rays(
    pixels: torch.Tensor,
    camera_ids: torch.Tensor,
    poses: torch.Tensor,
    intrinsics: Intrinsics | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixel centres of posed pinhole cameras.

    ``rays_d = R @ normalize([(u + 0.5 - cx) / fx, -(v + 0.5 - cy) / fy, -1])``,
    ``rays_o = t`` for the camera-to-world pose ``[R | t]`` of each ray's camera (OpenGL
    camera: looks down -z, +y up, +x right). Differentiable in ``poses`` (rotation and
    translation both); ``pixels``, ``camera_ids`` and ``intrinsics`` get no gradient.

    Args:
        pixels: ``[B, 2]`` pixel coordinates ``(u, v)`` = (column, row), integer or float;
            ``+0.5`` is added here to reach the pixel centre.
        camera_ids: ``[B]`` integer index into ``poses`` for each pixel.
        poses: ``[N, 3, 4]`` (or ``[N, 4, 4]``) camera-to-world matrices, float32 or float64.
            The output has this dtype and device.
        intrinsics: one ``Intrinsics`` shared by all cameras, a ``[4]`` tensor
            ``(fx, fy, cx, cy)``, or an ``[N, 4]`` tensor with one row per camera.

    Returns:
        ``rays_o [B, 3]`` (camera centres) and ``rays_d [B, 3]`` (unit directions).

    Example:
        >>> K = Intrinsics.from_blender(0.69, 401, 401)
        >>> rays_o, rays_d = pixels_to_rays(torch.tensor([[200, 200]]), torch.tensor([0]),
        ...                                 torch.eye(4)[None, :3], K)
        >>> rays_d  # the centre pixel of an identity camera looks down -z
        tensor([[ 0.,  0., -1.]])
    """
    if not isinstance(poses, torch.Tensor) or not poses.is_floating_point():
        raise ValueError("pixels_to_rays: poses must be a floating-point tensor [N, 3, 4]")
    if poses.dim() != 3 or tuple(poses.shape[1:]) not in ((3, 4), (4, 4)):
        raise ValueError(
            f"pixels_to_rays: poses must have shape [N, 3, 4] or [N, 4, 4], got {list(poses.shape)}"
        )
    if pixels.dim() != 2 or pixels.shape[1] != 2:
        raise ValueError(f"pixels_to_rays: pixels must have shape [B, 2], got {list(pixels.shape)}")
    if camera_ids.shape != (pixels.shape[0],):
        raise ValueError(
            f"pixels_to_rays: camera_ids must have shape [B] = [{pixels.shape[0]}], "
            f"got {list(camera_ids.shape)}"
        )
    if camera_ids.dtype.is_floating_point or camera_ids.dtype == torch.bool:
        raise ValueError(f"pixels_to_rays: camera_ids must be integer, got {camera_ids.dtype}")
    dtype, device = poses.dtype, poses.device
    camera_ids = camera_ids.to(device=device, dtype=torch.long)
    k = _intrinsics_per_ray(intrinsics, camera_ids, poses.shape[0], dtype, device)
    fx, fy, cx, cy = k.unbind(-1)

    uv = pixels.to(device=device, dtype=dtype) + 0.5
    x = (uv[:, 0] - cx) / fx
    y = -(uv[:, 1] - cy) / fy
    dirs_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)
    dirs_cam = dirs_cam / torch.linalg.vector_norm(dirs_cam, dim=-1, keepdim=True)

    # index_select: its CPU backward adds in index order (advanced indexing may use atomics).
    # Split [N, 3, 4] into R and t before selecting: the slices' backward is then per camera,
    # not per ray.
    rotation = poses[:, :3, :3].index_select(0, camera_ids)  # [B, 3, 3]
    rays_d = (rotation @ dirs_cam.unsqueeze(-1)).squeeze(-1)
    rays_o = poses[:, :3, 3].index_select(0, camera_ids)
    return rays_o, rays_d


def image_pixels(width: int, height: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[H * W, 2]`` long pixel coordinates ``(u, v)`` of a whole image in row-major order.

    Entry ``v * width + u`` is pixel ``(u, v)``, so a result reshaped to ``[H, W, ...]`` is an
    image.
    """
    v, u = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def image_rays(
    pose: torch.Tensor,
    intrinsics: Intrinsics | torch.Tensor,
    width: int | None = None,
    height: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre of one image, row-major (for evaluation / rendering).

    Args:
        pose: ``[3, 4]`` (or ``[4, 4]``) camera-to-world matrix; dtype/device of the output.
        intrinsics: an ``Intrinsics`` (its width/height are used unless given) or a ``[4]``
            tensor ``(fx, fy, cx, cy)``, which then needs ``width`` and ``height``.
        width, height: image size in pixels.

    Returns:
        ``rays_o [H * W, 3]``, ``rays_d [H * W, 3]`` (unit); ray ``v * W + u`` belongs to pixel
        ``(u, v)``, so ``rgb.reshape(H, W, 3)`` is the image. Differentiable in ``pose``.
    """
    if isinstance(intrinsics, Intrinsics):
        width = intrinsics.width if width is None else width
        height = intrinsics.height if height is None else height
    if width is None or height is None:
        raise ValueError("image_rays: pass width and height when intrinsics is a tensor")
    if pose.dim() != 2 or tuple(pose.shape) not in ((3, 4), (4, 4)):
        raise ValueError(
            f"image_rays: pose must have shape [3, 4] or [4, 4], got {list(pose.shape)}"
        )
    if isinstance(intrinsics, torch.Tensor) and intrinsics.dim() == 2:
        if intrinsics.shape[0] != 1:
            raise ValueError(
                f"image_rays: intrinsics must be [4] (one camera), got {list(intrinsics.shape)}"
            )
        intrinsics = intrinsics[0]
    pixels = image_pixels(int(width), int(height), device=pose.device)
    camera_ids = torch.zeros(pixels.shape[0], dtype=torch.long, device=pose.device)
    return pixels_to_rays(pixels, camera_ids, pose.unsqueeze(0), intrinsics)
