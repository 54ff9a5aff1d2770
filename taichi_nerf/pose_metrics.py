"""Pose errors against a ground truth, in degrees, scene units **and pixels**; Sim(3) alignment.

- Rotation error: geodesic angle ``acos((tr(R Rgt^T) - 1) / 2)`` in degrees; in pixels it is
  divided by the per-pixel angle of the image (horizontal field of view / width), i.e. how far
  the error moves the image centre.
- Translation error: distance between camera centres (scene units, and % of the mean camera
  distance); in pixels it is ``distance * focal_px / |c_gt - scene_center|``, how far the error
  moves the image of the scene centre.
- Raw (same frame) and, with ``align``, after a Sim(3) (Umeyama) alignment of the centres, plus
  BARF's aligned world-to-camera translation metric.
"""

from __future__ import annotations

import math

import torch

__all__ = ["align_sim3", "anchor_to_initial", "apply_sim3_to_poses", "pose_errors",
           "pixel_angle_deg", "pixel_units", "sim3_degeneracy"]


def _as_3x4(poses: torch.Tensor, name: str = "poses") -> torch.Tensor:
    from taichi_nerf.poses import _as_3x4 as as_3x4

    return as_3x4(poses, name)


def rotation_geodesic_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from taichi_nerf.poses import rotation_geodesic_deg as geodesic

    return geodesic(a, b)


def pixel_angle_deg(focal_px: float, width: int) -> float:
    """Degrees per pixel of an image: horizontal field of view ``2 atan(W / 2f)`` / ``W``."""
    return math.degrees(2.0 * math.atan(0.5 * width / focal_px)) / width


def pixel_units(image_set) -> dict[str, object]:
    """``pose_errors`` keyword arguments for the pixel units of an ``ImageSet``: its first
    camera's focal length and width, and the centre of its scene box."""
    focal = float(image_set.intrinsics[0, 0])
    aabb = torch.as_tensor(image_set.scene_aabb, dtype=torch.float64).reshape(6)
    return {"pixel_deg": pixel_angle_deg(focal, int(image_set.width)), "focal_px": focal,
            "scene_center": 0.5 * (aabb[:3] + aabb[3:])}


def sim3_degeneracy(src: torch.Tensor, dst: torch.Tensor) -> str | None:
    """Why a Sim(3) fit of points ``src`` onto ``dst`` (``[N, 3]``) says nothing, or None.

    The fit has 7 degrees of freedom: with fewer than three non-collinear points on either side
    (one camera, duplicate or identical frames, cameras on a line) it can match the points
    (nearly) exactly whatever their error, or leaves the rotation about the line free, so an
    "aligned" error of ~0 would be meaningless. Non-finite points are reported too.
    """
    for name, points in (("predicted", src), ("reference", dst)):
        points = points.detach().double()
        if not torch.isfinite(points).all():
            return f"the {name} camera centres are not finite"
        if points.shape[0] < 3:
            return f"{points.shape[0]} camera(s): a Sim(3) fit needs 3 non-collinear centres"
        spread = torch.linalg.svdvals(points - points.mean(0))
        if spread[0] <= 1e-9 * max(1.0, points.abs().max().item()):
            return f"the {name} camera centres all coincide"
        if spread[1] <= 1e-6 * spread[0]:
            return f"the {name} camera centres lie on one line"
    return None


def align_sim3(
    src: torch.Tensor, dst: torch.Tensor, estimate_scale: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity ``dst ~= s R src + t`` (Umeyama 1991) of points ``[N, 3]``.

    ``R`` is a proper rotation (det +1): the SVD's reflection is flipped away. With fewer than
    two distinct points (no spread) the result is ``s = 1, R = I`` and ``t`` the offset of the
    means; with non-finite points it is all NaN (no SVD failure). Whether the fit means anything
    (:func:`sim3_degeneracy`) is the caller's question. Computed in float64 without gradients.

    Returns:
        ``(s [] , R [3, 3], t [3])`` in ``src``'s dtype and device.
    """
    if src.dim() != 2 or src.shape[-1] != 3 or src.shape != dst.shape:
        raise ValueError(
            f"src and dst must both be [N, 3], got {list(src.shape)} and {list(dst.shape)}"
        )
    x, y = src.detach().double(), dst.detach().to(src.device).double()
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        nan = torch.full((), math.nan, dtype=src.dtype, device=src.device)
        return nan, torch.full((3, 3), math.nan, dtype=src.dtype, device=src.device), \
            torch.full((3,), math.nan, dtype=src.dtype, device=src.device)
    mean_x, mean_y = x.mean(0), y.mean(0)
    xc, yc = x - mean_x, y - mean_y
    var_x = (xc * xc).sum(-1).mean()
    rot = torch.eye(3, dtype=torch.float64, device=x.device)
    s = torch.ones_like(var_x)
    if var_x > 1e-24:
        covariance = yc.T @ xc / x.shape[0]
        u, singular, vh = torch.linalg.svd(covariance)
        flip = torch.ones(3, dtype=torch.float64, device=x.device)
        if torch.det(u) * torch.det(vh) < 0:
            flip[2] = -1.0
        rot = u @ torch.diag(flip) @ vh
        if estimate_scale:
            s = (singular * flip).sum() / var_x
    t = mean_y - s * rot @ mean_x
    return s.to(src.dtype), rot.to(src.dtype), t.to(src.dtype)


def apply_sim3_to_poses(
    poses: torch.Tensor,
    scale: torch.Tensor | float,
    rotation: torch.Tensor,
    translation: torch.Tensor,
) -> torch.Tensor:
    """Move c2w ``poses [N, 3, 4]`` (or 4x4) by the world similarity ``x -> s R x + t``.

    Camera centres map to ``s R c + t`` and orientations to ``R @ R_i`` (a camera has no scale).
    Returns ``[N, 3, 4]``.
    """
    pose = _as_3x4(poses)
    rotation = rotation.to(pose)
    scale = torch.as_tensor(scale).to(pose)
    new_rotation = rotation @ pose[:, :, :3]
    new_centre = scale * (pose[:, :, 3] @ rotation.T) + translation.to(pose)
    return torch.cat([new_rotation, new_centre[..., None]], -1)


def _stats(prefix: str, values: torch.Tensor) -> dict[str, float]:
    # Population std (ddof 0): defined for a single camera too.
    return {
        f"{prefix}_mean": values.mean().item(),
        f"{prefix}_std": values.std(correction=0).item(),
        f"{prefix}_median": values.median().item(),
        f"{prefix}_max": values.max().item(),
    }


def _errors(pred: torch.Tensor, gt: torch.Tensor, mean_distance: float, prefix: str,
            pixels: tuple[float, float, torch.Tensor] | None) -> dict[str, float]:
    rotation_error = rotation_geodesic_deg(pred[:, :, :3], gt[:, :, :3])
    translation_error = (pred[:, :, 3] - gt[:, :, 3]).norm(dim=-1)
    out = _stats(f"{prefix}rotation_error", rotation_error)
    out.update(_stats(f"{prefix}translation_error", translation_error))
    pct = (
        translation_error * (100.0 / mean_distance)
        if mean_distance > 0
        else translation_error * math.nan
    )
    out.update(_stats(f"{prefix}translation_error_pct", pct))
    if pixels is not None:
        pixel_deg, focal_px, center = pixels
        depth = (gt[:, :, 3] - center.to(gt)).norm(dim=-1).clamp_min(1e-12)
        out.update(_stats(f"{prefix}rotation_error_px", rotation_error / pixel_deg))
        out.update(_stats(f"{prefix}translation_error_px", translation_error * focal_px / depth))
    return out


@torch.no_grad()
def pose_errors(pred: torch.Tensor, gt: torch.Tensor, align: bool = True, *,
                pixel_deg: float | None = None, focal_px: float | None = None,
                scene_center: torch.Tensor | None = None,
                initial: torch.Tensor | None = None) -> dict[str, float]:
    """Rotation and translation errors of c2w poses ``pred`` vs ``gt`` (``[N, 3, 4]`` or 4x4).

    For each error the dict holds ``*_mean``, ``*_std`` (population), ``*_median``, ``*_max``:

    - ``rotation_error_*``: geodesic angle in degrees;
    - ``translation_error_*``: camera-centre distance in scene units;
    - ``translation_error_pct_*``: the same in % of the mean GT camera distance from the world
      origin (``mean_camera_distance``);

    raw (same frame, the seed's protocol) and, when ``align``, again with the prefix ``aligned_``
    after :func:`align_sim3` of the predicted centres onto the GT centres (orientations turned by
    the same ``R``). Also with ``align``: ``aligned_barf_translation_error_mean``, BARF's metric
    (distance between aligned and GT world-to-camera translations ``-R^T c``, scene units; BARF's
    tables print it x100), and the fitted ``aligned_scale``. Computed in float64.

    ``aligned_degenerate`` is 1.0 when the fit cannot mean anything (:func:`sim3_degeneracy`: one
    camera, identical frames, collinear or non-finite centres); then every ``aligned_*`` value is
    NaN instead of a perfect-looking ~0. Non-finite ``pred`` gives NaN errors, never an exception.

    With ``pixel_deg`` (degrees per pixel, :func:`pixel_angle_deg`) and ``focal_px`` also
    ``[aligned_]rotation_error_px_*`` and ``[aligned_]translation_error_px_*`` (the camera-centre
    error seen at ``scene_center`` ``[3]``, default the origin), so sizes compare.

    With ``initial`` (the poses training started from) and ``align`` also the ``anchored_*``
    errors (:func:`anchor_to_initial`: no ground truth used) and ``anchor_floor_*``, the errors
    that exact relative poses anchored the same way would have: the gauge's share of the error.
    """
    pred = _as_3x4(pred, "pred").detach().double()
    gt = _as_3x4(gt, "gt").detach().to(pred.device).double()
    if pred.shape != gt.shape or pred.shape[0] == 0:
        raise ValueError(
            f"pred and gt must be the same non-empty [N, 3, 4], got {list(pred.shape)} and {list(gt.shape)}"
        )
    mean_distance = gt[:, :, 3].norm(dim=-1).mean().item()
    pixels = None
    if pixel_deg is not None and focal_px is not None:
        center = torch.zeros(3) if scene_center is None else torch.as_tensor(scene_center)
        pixels = (float(pixel_deg), float(focal_px), center.detach().double())
    out = {"mean_camera_distance": mean_distance}
    out.update(_errors(pred, gt, mean_distance, "", pixels))
    if align:
        degenerate = sim3_degeneracy(pred[:, :, 3], gt[:, :, 3]) is not None
        scale, rotation, translation = align_sim3(pred[:, :, 3], gt[:, :, 3])
        aligned = apply_sim3_to_poses(pred, scale, rotation, translation)
        if degenerate:
            aligned = aligned * math.nan
        out.update(_errors(aligned, gt, mean_distance, "aligned_", pixels))

        def w2c_translation(pose: torch.Tensor) -> torch.Tensor:
            return -(pose[:, :, :3].transpose(1, 2) @ pose[:, :, 3:])[..., 0]

        barf_error = (w2c_translation(aligned) - w2c_translation(gt)).norm(dim=-1)
        out["aligned_barf_translation_error_mean"] = barf_error.mean().item()
        out["aligned_scale"] = math.nan if degenerate else scale.item()
        out["aligned_degenerate"] = float(degenerate)
        if initial is not None:
            out.update(_anchored_errors(pred, gt, _as_3x4(initial, "initial").detach().to(pred),
                                        mean_distance, pixels))
    return out


def anchor_to_initial(poses: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """``poses`` moved by the Sim(3) that fits their camera centres onto the ``initial`` ones.

    Images cannot see a similarity transform of the whole rig (scene and cameras together): it is
    the gauge of joint pose optimisation, and training lets it drift. The initial poses are the
    only information about it, and their centres pin it far better than their orientations (100
    centres with 1% noise fix the rig's turn to ~0.1 degree; the orientations, at 3 degrees each,
    to ~0.3). So this is the frame a user's refined poses belong in: theirs. Uses no ground truth.
    Poses as ``[N, 3, 4]`` (or 4x4) c2w; returned as float64 ``[N, 3, 4]``.
    """
    poses = _as_3x4(poses, "poses").detach().double()
    initial = _as_3x4(initial, "initial").detach().to(poses)
    if sim3_degeneracy(poses[:, :, 3], initial[:, :, 3]) is not None:
        return poses.clone()
    return apply_sim3_to_poses(poses, *align_sim3(poses[:, :, 3], initial[:, :, 3]))


def _anchored_errors(pred, gt, initial, mean_distance, pixels) -> dict[str, float]:
    if sim3_degeneracy(initial[:, :, 3], gt[:, :, 3]) is not None:
        return {}
    keep = ("rotation_error_mean", "rotation_error_median", "rotation_error_px_mean",
            "translation_error_mean", "translation_error_px_mean")
    out = _errors(anchor_to_initial(pred, initial), gt, mean_distance, "anchored_", pixels)
    floor = _errors(anchor_to_initial(gt, initial), gt, mean_distance, "", pixels)
    out.update({f"anchor_floor_{k}": floor[k] for k in keep if k in floor})
    return out
