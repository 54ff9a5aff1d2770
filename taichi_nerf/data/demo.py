"""The built-in demo scene: a procedural scene rendered by an analytic ray tracer in numpy.

Five textured solids stand inside the box ``[-1, 1]^3`` (world z is up, as in Blender): a thin
ground disc with a rotated checkerboard, a large sphere with a beach-ball checker, a rotated cube
with a checker on every face, a small sphere on the cube with wavy marble bands, and a capped
cylinder with helical stripes. Shading is Lambertian (ambient plus one directional light with hard
shadows), so a surface point has the same colour from every camera; the textures are soft-edged
and each pixel averages ``supersample x supersample`` rays, so the images do not alias at the
default 128 px. The background is transparent (alpha 0), like the Blender scenes.

Cameras sit on a sphere of radius 4 around the origin, looking at it with no roll: train views on a
Fibonacci spiral over the upper hemisphere, val views spread between them, test views on a ring at
30 degrees elevation (see ``demo_camera_poses``). Poses are camera-to-world in the Blender/OpenGL
convention (camera looks down -z, +y up, +x right); the ray of pixel ``(u, v)`` is
``d = R . normalize([(u + 0.5 - cx) / fx, -(v + 0.5 - cy) / fy, -1])``, ``o = t`` with
``fx = fy = 0.5 W / tan(0.5 camera_angle_x)``, ``cx = W / 2``, ``cy = H / 2``.

Everything is deterministic (fixed seeds, nothing time-dependent): the same call writes the same
bytes with the same numpy build.

Example::

    from taichi_nerf.data.demo import ensure_demo_scene
    scene_dir = ensure_demo_scene(Path("data"))   # data/demo/, generated on first use only
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

__all__ = [
    "DEMO_SCENE_VERSION",
    "DEMO_CAMERA_ANGLE_X",
    "ensure_demo_scene",
    "demo_camera_poses",
    "render_demo_rays",
    "render_demo_view",
]

#: Bump when the scene, cameras or file layout change: a folder with an older marker is rewritten.
DEMO_SCENE_VERSION = 1
#: Horizontal field of view in radians, the same as nerf_synthetic/lego.
DEMO_CAMERA_ANGLE_X = 0.6911112070083618
DEMO_CAMERA_RADIUS = 4.0
DEMO_NEAR, DEMO_FAR = 2.0, 6.0
DEMO_AABB = [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]
MARKER_NAME = ".demo_scene.json"

_SHARPNESS = 3.0  # tanh(k sin x): edges about a pixel wide at 128 px, so textures stay band-limited
_AMBIENT = 0.3
_LIGHT_DIR = np.array([-0.45, -0.35, 0.82]) / np.linalg.norm([-0.45, -0.35, 0.82])
_EPS = 1e-6
_GROUND_TOP, _GROUND_BOTTOM, _GROUND_RADIUS = -0.4, -0.5, 0.95
_BIG_SPHERE = (np.array([0.32, 0.22, _GROUND_TOP + 0.44]), 0.44)
_CUBE_CENTRE, _CUBE_HALF, _CUBE_YAW = np.array([-0.38, -0.3, _GROUND_TOP + 0.25]), 0.25, 0.5
_SMALL_SPHERE = (np.array([-0.38, -0.3, _GROUND_TOP + 0.5 + 0.2]), 0.2)
_CYLINDER = (np.array([-0.3, 0.5]), 0.2, _GROUND_TOP, _GROUND_TOP + 0.97)  # xy, radius, z range


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


_CUBE_R = _rot_z(_CUBE_YAW)  # cube frame -> world
_SPHERE_TILT = _rot_z(0.6)[[2, 0, 1]][:, [2, 0, 1]]  # the same turn about the x axis


# numpy's BLAS matmul of a tall [N, 3] by a 3x3 is pathologically slow (tens of ms) on small
# shared CPUs; these column-wise forms are 10-20x faster and give identical results everywhere.
def _dot(x, v):
    """Row-wise dot products: [N, k] . [N, k] or [k] -> [N]."""
    v = np.asarray(v)
    return sum(x[:, i] * v[..., i] for i in range(x.shape[1]))


def _matmul(x, m):
    """``x @ m`` for a tall [N, k] and a small [k, j] matrix."""
    return sum(x[:, i, None] * m[i] for i in range(x.shape[1]))


# ------------------------------------------------ intersections: (t [N], normal [N, 3]) per primitive
def _hit_sphere(o, d, centre, radius):
    oc = o - centre
    b = _dot(oc, d)
    disc = b * b - (_dot(oc, oc) - radius * radius)
    with np.errstate(invalid="ignore"):
        t = -b - np.sqrt(disc)
    t = np.where((disc > 0) & (t > _EPS), t, np.inf)
    normal = (o + np.where(np.isfinite(t), t, 0.0)[:, None] * d - centre) / radius
    return t, normal


def _hit_cube(o, d):
    ol = _matmul(o - _CUBE_CENTRE, _CUBE_R)  # world -> cube frame (row vectors times R)
    dl = _matmul(d, _CUBE_R)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dl
        t1, t2 = (-_CUBE_HALF - ol) * inv, (_CUBE_HALF - ol) * inv
    t_near_axes = np.fmin(t1, t2)
    t_near = np.fmax.reduce(t_near_axes, axis=1)  # fmax skips the NaN of 0 * inf
    t_far = np.fmin.reduce(np.fmax(t1, t2), axis=1)
    t = np.where((t_near <= t_far) & (t_near > _EPS), t_near, np.inf)
    axis = np.argmax(np.nan_to_num(t_near_axes, nan=-np.inf), axis=1)
    normal_local = np.zeros_like(o)
    normal_local[np.arange(len(o)), axis] = -np.sign(dl[np.arange(len(o)), axis])
    return t, _matmul(normal_local, _CUBE_R.T)


def _hit_capped_cylinder(o, d, centre_xy, radius, z0, z1):
    """Vertical cylinder (axis +z through ``centre_xy``) between heights z0 < z1, with both caps."""
    ox, oy = o[:, 0] - centre_xy[0], o[:, 1] - centre_xy[1]
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = ox * d[:, 0] + oy * d[:, 1]
    disc = b * b - a * (ox * ox + oy * oy - radius * radius)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(disc)) / a
        z_side = o[:, 2] + t_side * d[:, 2]
        valid = (disc > 0) & (a > 1e-12) & (t_side > _EPS) & (z_side >= z0) & (z_side <= z1)
        t_side = np.where(valid, t_side, np.inf)
        caps = []
        for z_cap in (z0, z1):
            t_cap = (z_cap - o[:, 2]) / d[:, 2]
            px, py = ox + t_cap * d[:, 0], oy + t_cap * d[:, 1]
            inside = (t_cap > _EPS) & (px * px + py * py <= radius * radius)
            caps.append(np.where(inside, t_cap, np.inf))
    t = np.minimum(t_side, np.minimum(*caps))
    t_finite = np.where(np.isfinite(t), t, 0.0)
    normal = np.zeros_like(o)
    normal[:, 0] = (ox + t_finite * d[:, 0]) / radius
    normal[:, 1] = (oy + t_finite * d[:, 1]) / radius
    normal[t == caps[0]] = (0.0, 0.0, -1.0)
    normal[t == caps[1]] = (0.0, 0.0, 1.0)
    return t, normal


def _rays_hitting_sphere(o, d, centre, radius):
    """Indices of the rays (unit d) that meet a bounding sphere in front of their origin."""
    oc = o - centre
    b = _dot(oc, d)
    disc = b * b - (_dot(oc, oc) - radius * radius)
    return np.flatnonzero((disc > 0) & (-b + np.sqrt(np.maximum(disc, 0.0)) > _EPS))


# (intersection function, its arguments, bounding sphere (centre, radius) or None) per primitive
# id. Culling by a bounding sphere pays only for the costlier tests (cube, cylinder).
_PRIMITIVES = [
    (_hit_capped_cylinder, ((0.0, 0.0), _GROUND_RADIUS, _GROUND_BOTTOM, _GROUND_TOP), None),
    (_hit_sphere, _BIG_SPHERE, None),
    (_hit_cube, (), (_CUBE_CENTRE, np.sqrt(3.0) * _CUBE_HALF + 1e-3)),
    (_hit_sphere, _SMALL_SPHERE, None),
    (_hit_capped_cylinder, _CYLINDER, (np.array([*_CYLINDER[0], _GROUND_TOP + 0.485]), 0.53)),
]
_SCENE_BOUND = (np.array([0.0, 0.0, 0.02]), 1.1)  # contains all the geometry


def _intersect(o, d):
    """Nearest hit (unit d): (t [N] inf on a miss, normal [N,3], primitive id [N], -1 on a miss)."""
    t_best = np.full(len(o), np.inf)
    normal = np.zeros_like(o)
    prim = np.full(len(o), -1)
    scene_idx = _rays_hitting_sphere(o, d, *_SCENE_BOUND)  # cheap culling before the exact tests
    o_scene, d_scene = o[scene_idx], d[scene_idx]
    for prim_id, (hit_fn, args, bound) in enumerate(_PRIMITIVES):
        if bound is None:
            t, n = hit_fn(o_scene, d_scene, *args)
            idx = scene_idx
        else:
            sub = _rays_hitting_sphere(o_scene, d_scene, *bound)
            t, n = hit_fn(o_scene[sub], d_scene[sub], *args)
            idx = scene_idx[sub]
        closer = t < t_best[idx]
        sel = idx[closer]
        t_best[sel], normal[sel], prim[sel] = t[closer], n[closer], prim_id
    return t_best, normal, prim


# ------------------------------------------------ textures (albedo of a world point)
def _sq(x, period):
    """Soft square wave in [-1, 1] with the given period (band-limited checker edges)."""
    return np.tanh(_SHARPNESS * np.sin(2.0 * np.pi * x / period))


def _mix(colour_a, colour_b, v):
    w = (0.5 + 0.5 * v)[:, None]
    return np.asarray(colour_a) * (1.0 - w) + np.asarray(colour_b) * w


def _albedo(p, normal, prim):
    """Texture colour [N, 3] of surface points p [N, 3] with normals [N, 3] on primitives [N]."""
    albedo = np.zeros_like(p)
    m = prim == 0  # ground: rotated checker on top, plain rim
    q = _matmul(p[m, :2], _rot_z(0.35)[:2, :2])
    v = _sq(q[:, 0], 0.25) * _sq(q[:, 1], 0.25)
    v = np.where(normal[m, 2] > 0.5, v, 0.6)
    albedo[m] = _mix((0.18, 0.45, 0.48), (0.93, 0.9, 0.8), v)
    m = prim == 1  # big sphere: latitude/longitude checker about a tilted axis, caps plain
    q = _matmul(normal[m], _SPHERE_TILT)
    lat, lon = np.arcsin(np.clip(q[:, 2], -1.0, 1.0)), np.arctan2(q[:, 1], q[:, 0])
    v = np.tanh(_SHARPNESS * np.sin(8.0 * lat))
    v = v * np.where(np.abs(lat) < 3 * np.pi / 8, np.tanh(_SHARPNESS * np.sin(8.0 * lon)), 1.0)
    albedo[m] = _mix((0.85, 0.15, 0.1), (0.96, 0.92, 0.78), v)
    m = prim == 2  # cube: 4x4 checker on every face (in-plane axes of the face only)
    s = _sq(_matmul(p[m] - _CUBE_CENTRE, _CUBE_R), 0.25)
    face_axis = np.argmax(np.abs(_matmul(normal[m], _CUBE_R)), axis=1)
    s[np.arange(len(s)), face_axis] = 1.0
    albedo[m] = _mix((0.12, 0.25, 0.75), (0.97, 0.82, 0.2), s.prod(axis=1))
    m = prim == 3  # small sphere: marble bands (a stripe warped by a slower wave)
    q = p[m]
    warp = 0.4 * np.sin(2.0 * np.pi * _dot(q, (-0.7, 0.7, 0.2)) / 0.35)
    phase = 2.0 * np.pi * (_dot(q, (0.6, 0.5, 0.62)) / 0.12 + warp)  # ~3 bands across
    albedo[m] = _mix((0.12, 0.55, 0.22), (0.9, 0.95, 0.85), np.tanh(_SHARPNESS * np.sin(phase)))
    m = prim == 4  # cylinder: helical stripes on the side, rings on the caps
    q = p[m, :2] - _CYLINDER[0]
    side = np.abs(normal[m, 2]) < 0.5
    helix = np.sin(6.0 * np.arctan2(q[:, 1], q[:, 0]) + 2.0 * np.pi * p[m, 2] / 0.3)
    rings = np.sin(2.0 * np.pi * np.hypot(q[:, 0], q[:, 1]) / 0.1)
    albedo[m] = _mix(
        (0.95, 0.5, 0.08), (0.4, 0.14, 0.55), np.tanh(_SHARPNESS * np.where(side, helix, rings))
    )
    return albedo


def render_demo_rays(
    rays_o: np.ndarray, rays_d: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trace rays through the demo scene (one sample per ray, no anti-aliasing).

    Args:
        rays_o: [N, 3] world-space origins.
        rays_d: [N, 3] directions (need not be unit; depth is in units of ``|d|``).

    Returns:
        rgb [N, 3] in [0, 1] (0 on a miss), alpha [N] (1 hit, 0 miss), depth [N] (inf on a miss).
        The colour of a hit depends on the surface point only (Lambertian), not on the ray.
    """
    o = np.asarray(rays_o, dtype=np.float64).reshape(-1, 3)
    d = np.asarray(rays_d, dtype=np.float64).reshape(-1, 3)
    d_norm = np.linalg.norm(d, axis=1)
    d = d / d_norm[:, None]
    t, normal, prim = _intersect(o, d)
    hit = np.isfinite(t)
    rgb = np.zeros_like(o)
    if hit.any():
        p, n = o[hit] + t[hit, None] * d[hit], normal[hit]
        cos_light = np.clip(_dot(n, _LIGHT_DIR), 0.0, None)
        lit = cos_light > 0
        shadow_o = p[lit] + 1e-4 * n[lit]
        t_shadow = _intersect(shadow_o, np.broadcast_to(_LIGHT_DIR, shadow_o.shape))[0]
        cos_light[np.flatnonzero(lit)[np.isfinite(t_shadow)]] = 0.0
        rgb[hit] = _albedo(p, n, prim[hit]) * (_AMBIENT + (1.0 - _AMBIENT) * cos_light)[:, None]
    return np.clip(rgb, 0.0, 1.0), hit.astype(np.float64), t / d_norm


def render_demo_view(
    c2w: np.ndarray,
    width: int,
    height: int,
    camera_angle_x: float = DEMO_CAMERA_ANGLE_X,
    supersample: int = 2,
) -> np.ndarray:
    """Render one view of the demo scene.

    Args:
        c2w: [4, 4] or [3, 4] camera-to-world pose, Blender/OpenGL camera (looks down -z, +y up).
        width, height: image size in pixels.
        camera_angle_x: horizontal field of view in radians; pixels are square (fy = fx).
        supersample: each pixel averages ``supersample^2`` rays on a regular sub-pixel grid.

    Returns:
        [H, W, 4] float32 RGBA in [0, 1]: alpha is the covered fraction of the pixel and RGB the
        mean colour of the covered part (straight, not premultiplied alpha, as PNG stores it), so
        ``rgb * alpha + background * (1 - alpha)`` composites like a Blender render.
    """
    pose = np.asarray(c2w, dtype=np.float64)[:3, :4]
    focal = 0.5 * width / np.tan(0.5 * camera_angle_x)
    # Trace a (H*S, W*S) grid of sub-pixel centres, then average each S x S block.
    s = supersample
    xs = ((np.arange(width * s) + 0.5) / s - 0.5 * width) / focal
    ys = -((np.arange(height * s) + 0.5) / s - 0.5 * height) / focal
    dirs = np.empty((height * s, width * s, 3))
    dirs[..., 0], dirs[..., 1], dirs[..., 2] = xs[None, :], ys[:, None], -1.0
    dirs = _matmul(dirs.reshape(-1, 3), pose[:, :3].T)
    rgb, alpha, _ = render_demo_rays(np.broadcast_to(pose[:, 3], dirs.shape), dirs)
    rgb = rgb.reshape(height, s, width, s, 3).sum(axis=(1, 3))
    coverage = alpha.reshape(height, s, width, s).sum(axis=(1, 3))
    rgb = rgb / np.maximum(coverage, 1.0)[..., None]
    return np.concatenate([rgb, (coverage / supersample**2)[..., None]], axis=-1).astype(np.float32)


# ---------------------------------------------------------------- cameras
def _look_at(position: np.ndarray) -> np.ndarray:
    """[4, 4] c2w for a camera at ``position`` looking at the origin with world +z as up."""
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, position
    return c2w


def _directions(z: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """Unit vectors [N, 3] with height ``z`` (sine of the elevation) and the given azimuth."""
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(azimuth), r * np.sin(azimuth), z], axis=-1)


def _farthest(candidates: np.ndarray, taken: np.ndarray, count: int) -> np.ndarray:
    """Greedily pick ``count`` of the unit ``candidates`` farthest from ``taken`` and each other."""
    picked = []
    closest = (candidates @ taken.T).max(axis=1)  # cosine to the nearest taken direction
    for _ in range(count):
        best = int(np.argmin(closest))
        picked.append(candidates[best])
        closest = np.maximum(closest, candidates @ candidates[best])
    return np.array(picked)


def demo_camera_poses(split: str, count: int, num_train: int = 100) -> np.ndarray:
    """Deterministic [count, 4, 4] c2w poses of a split ("train", "val" or "test"), radius 4.

    Train: a Fibonacci spiral, uniform by area over elevations 12-75 degrees. Val: points of the
    same band from a fixed-seed generator, each as far as possible from the ``num_train`` train
    views and the other val views. Test: a ring at 30 degrees elevation, turned to stay clear of
    the train views. Values are rounded to 9 decimals, exactly as written to the transforms
    files and used for rendering.
    """
    lo, hi = np.sin(np.radians(12.0)), np.sin(np.radians(75.0))
    k = np.arange(num_train if split != "train" else count)
    golden_angle = np.pi * (3.0 - np.sqrt(5.0))
    train = _directions(lo + (hi - lo) * (k + 0.5) / len(k), k * golden_angle)
    if split == "train":
        dirs = train
    elif split == "val":
        rng = np.random.default_rng(20240602)
        candidates = _directions(
            rng.uniform(lo, hi, 32 * count), rng.uniform(0, 2 * np.pi, 32 * count)
        )
        dirs = _farthest(candidates, train, count)
    elif split == "test":
        rings = [
            _directions(np.full(count, 0.5), 2 * np.pi * (np.arange(count) + phase / 32) / count)
            for phase in range(32)
        ]
        dirs = max(rings, key=lambda ring: -(ring @ train.T).max())  # first best on ties
    else:
        raise ValueError(f"unknown demo split {split!r}; expected 'train', 'val' or 'test'")
    poses = np.stack([_look_at(DEMO_CAMERA_RADIUS * d) for d in dirs]).reshape(count, 4, 4)
    return np.round(poses, 9) + 0.0  # + 0.0 turns -0.0 into 0.0


# ---------------------------------------------------------------- the folder on disk
def _scene_params(size: int, num_train: int, num_val: int, num_test: int, supersample: int) -> dict:
    """What the marker records; a folder whose marker differs is stale."""
    views = {"train": int(num_train), "val": int(num_val), "test": int(num_test)}
    params = dict(version=DEMO_SCENE_VERSION, size=int(size), views=views)
    params.update(supersample=int(supersample), camera_angle_x=DEMO_CAMERA_ANGLE_X)
    blob = json.dumps(params, sort_keys=True).encode()
    return {**params, "hash": hashlib.sha256(blob).hexdigest()[:16]}


def _read_marker(scene_dir: Path) -> dict | None:
    try:
        return json.loads((scene_dir / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _write_scene(out_dir: Path, params: dict) -> None:
    size = params["size"]
    for split, count in params["views"].items():
        (out_dir / split).mkdir()
        poses = demo_camera_poses(split, count, params["views"]["train"])
        frames = []
        for k, c2w in enumerate(poses):
            rgba = render_demo_view(c2w, size, size, DEMO_CAMERA_ANGLE_X, params["supersample"])
            iio.imwrite(out_dir / split / f"r_{k}.png", np.round(rgba * 255.0).astype(np.uint8))
            frames.append({"file_path": f"./{split}/r_{k}", "transform_matrix": c2w.tolist()})
        meta = dict(camera_angle_x=DEMO_CAMERA_ANGLE_X, near=DEMO_NEAR, far=DEMO_FAR)
        meta.update(aabb=DEMO_AABB, frames=frames)
        (out_dir / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2) + "\n")
    # Written last: a folder with a valid marker is complete.
    (out_dir / MARKER_NAME).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")


def _fresh_dir(parent: Path, prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)  # mkdtemp makes it 0o700; the scene folder is an ordinary data folder
    return path


def ensure_demo_scene(
    root: Path | str,
    size: int = 128,
    force: bool = False,
    *,
    num_train: int = 100,
    num_val: int = 8,
    num_test: int = 16,
    supersample: int = 2,
) -> Path:
    """Return ``<root>/demo``, a Blender-format scene, generating it when missing or stale.

    Layout: ``{train,val,test}/r_K.png`` (RGBA, size x size, transparent background) and
    ``transforms_{split}.json`` with ``camera_angle_x``, ``near`` (2), ``far`` (6), ``aabb``
    ([[-1,-1,-1],[1,1,1]]) and frames ``{"file_path": "./train/r_0", "transform_matrix": c2w 4x4}``.
    A marker file records the version and parameters; a folder whose marker does not match them is
    rewritten, and ``force=True`` always rewrites. A folder without a marker is never overwritten
    unless forced (``FileExistsError``). The scene is rendered into a work folder next to the
    target (``<root>/demo.tmp-*``) and renamed into place, so an interrupted or concurrent first
    use never leaves a half-written scene behind; work folders of killed runs are removed an hour
    later. The default 124 views at 128 px take a few seconds on a CPU.
    """
    if size < 1 or min(num_train, num_val, num_test) < 1 or supersample < 1:
        raise ValueError("ensure_demo_scene: size, view counts and supersample must all be >= 1")
    root = Path(root)
    scene_dir = root / "demo"
    params = _scene_params(size, num_train, num_val, num_test, supersample)
    if not force and _read_marker(scene_dir) == params:
        return scene_dir
    if scene_dir.exists() and not force and _read_marker(scene_dir) is None:
        raise FileExistsError(
            f"{scene_dir} exists but is not a generated demo scene (no {MARKER_NAME}); "
            "move it away or pass force=True to overwrite it"
        )
    root.mkdir(parents=True, exist_ok=True)
    tmp_dir = _fresh_dir(root, "demo.tmp-")
    try:
        _write_scene(tmp_dir, params)
        for _ in range(3):
            if not force and _read_marker(scene_dir) == params:
                break  # a concurrent call finished first: keep its (identical) scene
            if scene_dir.exists():  # stale: move the old folder aside first, delete it after
                old_dir = _fresh_dir(root, "demo.old-")
                try:
                    os.replace(scene_dir, old_dir / "demo")
                except FileNotFoundError:  # another call moved it (or our aside folder) first
                    pass
            try:
                os.rename(tmp_dir, scene_dir)  # atomic; fails when a concurrent call got there
                break
            except OSError:
                continue
        else:
            raise RuntimeError(f"could not move the generated demo scene into {scene_dir}")
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        # Old scenes moved aside, and work folders of runs killed more than an hour ago.
        debris = [*root.glob("demo.old-*"), *root.glob("demo.tmp-*")]
        for old in debris:
            try:
                expired = (
                    old.name.startswith("demo.old-") or time.time() - old.stat().st_mtime > 3600
                )
            except OSError:  # a concurrent call removed it
                continue
            if expired:
                shutil.rmtree(old, ignore_errors=True)
    return scene_dir
