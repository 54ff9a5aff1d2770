"""The built-in demo scene: deterministic files, valid cameras, geometry and shading sanity."""

from __future__ import annotations

import functools
import json
import math
import os
import time

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from taichi_nerf.data import demo
from taichi_nerf.data.demo import (
    DEMO_CAMERA_ANGLE_X,
    DEMO_SCENE_VERSION,
    demo_camera_poses,
    ensure_demo_scene,
    render_demo_rays,
    render_demo_view,
)

SMALL = dict(size=32, num_train=6, num_val=2, num_test=3)  # keeps each generation well under 1 s
SPLITS = ("train", "val", "test")
RIGID_TOL = 1e-8  # poses are rounded to 9 decimals
# Texture: mean |horizontal luminance step| over covered pixels at 128 px; textured views measure
# 0.04-0.07, the same views with a flat albedo 0.008-0.015 (shading and shadow edges only).
MIN_GRADIENT_ENERGY = 0.02
# Mean |2x2 - 4x4 supersampled| composited colour at 128 px: measured ~0.002 (no strong aliasing).
MAX_ALIASING = 0.01


def _generate(root, **overrides):
    return ensure_demo_scene(root, **{**SMALL, **overrides})


def _files(scene_dir):
    return {
        p.relative_to(scene_dir).as_posix(): p.read_bytes()
        for p in sorted(scene_dir.rglob("*"))
        if p.is_file()
    }


def _pixel_rays(c2w, u, v, width, height, angle=DEMO_CAMERA_ANGLE_X):
    """The rays module's convention, written out: pixel centres at +0.5, camera looks down -z."""
    focal = 0.5 * width / math.tan(0.5 * angle)
    d_cam = np.stack(
        [(u + 0.5 - width / 2) / focal, -(v + 0.5 - height / 2) / focal, -np.ones_like(u)], -1
    )
    d_cam = d_cam / np.linalg.norm(d_cam, axis=-1, keepdims=True)
    return np.broadcast_to(c2w[:3, 3], d_cam.shape), d_cam @ c2w[:3, :3].T


def test_generation_is_deterministic_and_complete(tmp_path):
    a = _generate(tmp_path / "a")
    b = _generate(tmp_path / "b")
    files_a, files_b = _files(a), _files(b)
    assert files_a == files_b
    expected = {f"transforms_{s}.json" for s in SPLITS} | {demo.MARKER_NAME}
    for split, count in zip(SPLITS, (6, 2, 3)):
        expected |= {f"{split}/r_{k}.png" for k in range(count)}
    assert set(files_a) == expected
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["demo"]  # no temporary folders left
    for split, count in (("train", 100), ("val", 8), ("test", 16)):
        np.testing.assert_array_equal(
            demo_camera_poses(split, count), demo_camera_poses(split, count)
        )


@pytest.mark.parametrize("split", SPLITS)
def test_transforms_files_are_valid_blender_metadata(tmp_path, split):
    scene = _generate(tmp_path)
    meta = json.loads((scene / f"transforms_{split}.json").read_text())
    assert meta["camera_angle_x"] == DEMO_CAMERA_ANGLE_X
    assert (meta["near"], meta["far"]) == (2.0, 6.0)
    aabb = np.array(meta["aabb"])
    assert aabb.shape == (2, 3) and (aabb[0] < aabb[1]).all()
    corners = np.array([[x, y, z] for x in aabb[:, 0] for y in aabb[:, 1] for z in aabb[:, 2]])
    assert len(meta["frames"]) == SMALL[f"num_{split}"]
    for k, frame in enumerate(meta["frames"]):
        assert frame["file_path"] == f"./{split}/r_{k}"
        image = iio.imread(scene / f"{split}/r_{k}.png")
        assert image.shape == (32, 32, 4) and image.dtype == np.uint8
        c2w = np.array(frame["transform_matrix"])
        assert c2w.shape == (4, 4)
        np.testing.assert_array_equal(c2w[3], [0, 0, 0, 1])
        rot, centre = c2w[:3, :3], c2w[:3, 3]
        np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=RIGID_TOL)
        assert abs(np.linalg.det(rot) - 1.0) < RIGID_TOL
        assert abs(np.linalg.norm(centre) - 4.0) < 1e-6 and centre[2] > 0  # upper hemisphere
        np.testing.assert_allclose(-rot[:, 2], -centre / np.linalg.norm(centre), atol=1e-8)
        assert abs(rot[2, 0]) < 1e-8  # no roll: camera +x stays horizontal
        dist = np.linalg.norm(corners - centre, axis=1)
        assert (dist > meta["near"]).all() and (dist < meta["far"]).all()  # near/far bracket aabb


def test_default_cameras_cover_the_upper_hemisphere_without_repeats():
    train, val, test = (
        demo_camera_poses(s, n) for s, n in (("train", 100), ("val", 8), ("test", 16))
    )
    centres = np.concatenate([train, val, test])[:, :3, 3]
    dirs = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    cos = dirs @ dirs.T - 2 * np.eye(len(dirs))
    assert cos.max() < math.cos(math.radians(2.0))  # held-out views are not train views
    assert cos[:100, :100].max() < math.cos(math.radians(10.0))  # train views are spread out
    azimuth = np.arctan2(dirs[:100, 1], dirs[:100, 0])
    assert np.histogram(azimuth, bins=8, range=(-np.pi, np.pi))[0].min() >= 8
    elevation = np.degrees(np.arcsin(dirs[:, 2]))
    assert elevation.min() > 10 and elevation.max() < 76
    with pytest.raises(ValueError, match="split"):
        demo_camera_poses("training", 3)


def test_render_view_matches_the_rays_module_convention():
    from taichi_nerf.rays import Intrinsics, image_rays

    width, height = 24, 16  # non-square: cx and cy both matter
    c2w = demo_camera_poses("train", 100)[37]
    intrinsics = Intrinsics.from_blender(DEMO_CAMERA_ANGLE_X, width, height)
    rays_o, rays_d = image_rays(torch.from_numpy(c2w), intrinsics)
    rgb, alpha, _ = render_demo_rays(rays_o.numpy(), rays_d.numpy())
    view = render_demo_view(c2w, width, height, DEMO_CAMERA_ANGLE_X, supersample=1)
    assert alpha.sum() > 20
    np.testing.assert_allclose(view[..., 3].reshape(-1), alpha, atol=1e-6)
    np.testing.assert_allclose(view[..., :3].reshape(-1, 3), rgb, atol=1e-6)
    u, v = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    o2, d2 = _pixel_rays(c2w, u.reshape(-1), v.reshape(-1), width, height)
    np.testing.assert_allclose(d2, rays_d.numpy(), atol=1e-6)


def test_png_files_hold_the_rendered_views(tmp_path):
    scene = _generate(tmp_path)
    meta = json.loads((scene / "transforms_val.json").read_text())
    for k, frame in enumerate(meta["frames"]):
        view = render_demo_view(np.array(frame["transform_matrix"]), 32, 32)
        stored = iio.imread(scene / f"val/r_{k}.png")
        np.testing.assert_array_equal(stored, np.round(view * 255).astype(np.uint8))


def test_centre_rays_hit_the_object_and_outer_rays_miss():
    poses = demo_camera_poses("train", 100)
    size = 128
    centre = np.array([size / 2 - 0.5])
    for c2w in poses:
        o, d = _pixel_rays(c2w, centre, centre, size, size)
        _, alpha, depth = render_demo_rays(o, d)
        assert alpha[0] == 1.0 and 4.0 - math.sqrt(3) < depth[0] < 4.0
        corners = np.array([0.0, size - 1.0])
        o, d = _pixel_rays(c2w, np.repeat(corners, 2), np.tile(corners, 2), size, size)
        rgb, alpha, depth = render_demo_rays(o, d)
        assert (alpha == 0).all() and np.isinf(depth).all() and (rgb == 0).all()
    # Rays passing just outside the box's circumsphere (1.79 > sqrt(3) from the centre) and a
    # ray pointing away miss.
    origin = np.array([[4.0, 0.0, 0.0]] * 3)
    away = np.array([[1.0, 0.0, 0.0], [-4.0, 2.0, 0.0], [-4.0, 0.0, -2.0]])
    assert (render_demo_rays(origin, away)[1] == 0).all()


def test_surface_points_lie_inside_the_aabb():
    c2w = demo_camera_poses("test", 16)[5]
    u, v = np.meshgrid(np.arange(48.0), np.arange(48.0))
    o, d = _pixel_rays(c2w, u.reshape(-1), v.reshape(-1), 48, 48)
    _, alpha, depth = render_demo_rays(o, d)
    hit = alpha == 1
    points = o[hit] + depth[hit, None] * d[hit]
    assert hit.sum() > 100 and (np.abs(points) <= 1.0).all()
    # Depth is measured in units of |d|.
    _, _, depth_scaled = render_demo_rays(o[hit], 2.0 * d[hit])
    np.testing.assert_allclose(depth_scaled, 0.5 * depth[hit], rtol=1e-12)


def test_culling_does_not_drop_any_hit(monkeypatch):
    c2w = demo_camera_poses("train", 100)[11]
    reference = render_demo_view(c2w, 40, 40, supersample=1)
    monkeypatch.setattr(demo, "_SCENE_BOUND", (np.zeros(3), 100.0))
    primitives = [(fn, args, None) for fn, args, _ in demo._PRIMITIVES]
    monkeypatch.setattr(demo, "_PRIMITIVES", primitives)
    np.testing.assert_array_equal(render_demo_view(c2w, 40, 40, supersample=1), reference)


def test_lambertian_colour_is_the_same_from_every_camera():
    poses = demo_camera_poses("train", 100)
    u, v = np.meshgrid(np.arange(0.0, 64.0, 2.0), np.arange(0.0, 64.0, 2.0))
    checked = 0
    centres = poses[:, :3, 3] / 4.0
    for a in (0, 20, 40, 60, 80):  # each with the camera about 40 degrees away
        b = int(np.argmin(np.abs(np.degrees(np.arccos(np.clip(centres @ centres[a], -1, 1))) - 40)))
        o_a, d_a = _pixel_rays(poses[a], u.reshape(-1), v.reshape(-1), 64, 64)
        rgb_a, alpha_a, depth_a = render_demo_rays(o_a, d_a)
        points = (o_a + depth_a[:, None] * d_a)[alpha_a == 1]
        o_b = np.broadcast_to(poses[b][:3, 3], points.shape)
        to_points = points - o_b
        dist = np.linalg.norm(to_points, axis=1)
        rgb_b, alpha_b, depth_b = render_demo_rays(o_b, to_points / dist[:, None])
        visible = (alpha_b == 1) & (np.abs(depth_b - dist) < 1e-7)  # not occluded from b
        assert visible.mean() > 0.3
        np.testing.assert_allclose(rgb_b[visible], rgb_a[alpha_a == 1][visible], atol=1e-9)
        checked += visible.sum()
    assert checked > 500


def test_textures_have_high_frequency_content_without_aliasing():
    c2w = demo_camera_poses("train", 100)[30]
    view = render_demo_view(c2w, 128, 128)
    alpha, luminance = view[..., 3], view[..., :3].mean(-1)
    covered = (alpha[:, 1:] == 1) & (alpha[:, :-1] == 1)
    assert covered.sum() > 1000
    assert np.abs(np.diff(luminance, axis=1))[covered].mean() > MIN_GRADIENT_ENERGY

    def on_white(rgba):
        return rgba[..., :3] * rgba[..., 3:] + 1.0 - rgba[..., 3:]

    finer = render_demo_view(c2w, 128, 128, supersample=4)
    assert np.abs(on_white(view) - on_white(finer)).mean() < MAX_ALIASING
    assert view.dtype == np.float32 and view.min() >= 0 and view.max() <= 1
    assert view[0, 0, 3] == 0 and (view[0, 0, :3] == 0).all()  # transparent background


def test_regeneration_is_skipped_forced_and_triggered_by_a_stale_marker(tmp_path):
    scene = _generate(tmp_path)
    original = _files(scene)
    sentinel = scene / "sentinel.txt"
    sentinel.write_text("not regenerated")
    assert _generate(tmp_path) == scene and sentinel.exists()  # present and current: skipped

    assert _generate(tmp_path, force=True) == scene and not sentinel.exists()
    assert _files(scene) == original

    sentinel.write_text("not regenerated")
    marker = json.loads((scene / demo.MARKER_NAME).read_text())
    assert marker["version"] == DEMO_SCENE_VERSION
    marker["version"] = DEMO_SCENE_VERSION - 1
    (scene / demo.MARKER_NAME).write_text(json.dumps(marker))
    _generate(tmp_path)
    assert not sentinel.exists() and _files(scene) == original

    _generate(tmp_path, size=16)  # other parameters: stale too
    assert iio.imread(scene / "train/r_0.png").shape == (16, 16, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_a_foreign_folder_is_not_overwritten_unless_forced(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="force=True"):
        _generate(tmp_path)
    assert (tmp_path / "demo" / "mine.txt").exists()
    _generate(tmp_path, force=True)
    assert not (tmp_path / "demo" / "mine.txt").exists()
    with pytest.raises(ValueError, match=">= 1"):
        _generate(tmp_path, size=0)


def test_an_interrupted_generation_leaves_the_old_scene_and_no_debris(tmp_path, monkeypatch):
    scene = _generate(tmp_path, size=16)
    before = _files(scene)
    calls = []

    def failing_imwrite(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt  # a crash half-way through the images
        return iio.imwrite(*args, **kwargs)

    monkeypatch.setattr(demo.iio, "imwrite", failing_imwrite)
    with pytest.raises(KeyboardInterrupt):
        _generate(tmp_path)  # size 32: stale, so it regenerates
    assert _files(scene) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]

    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        _generate(tmp_path / "fresh")
    assert list((tmp_path / "fresh").iterdir()) == []  # first use: no half-written demo/


def test_work_folders_of_killed_runs_are_removed_later(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    killed, running = tmp_path / "demo.tmp-killed", tmp_path / "demo.tmp-running"
    for folder in (killed, running):
        folder.mkdir()
        (folder / "train").mkdir()
    os.utime(killed, (time.time() - 7200, time.time() - 7200))  # left by a run two hours ago
    _generate(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "demo.tmp-running"]


def test_a_concurrent_first_use_keeps_one_complete_scene(tmp_path, monkeypatch):
    write_scene = demo._write_scene
    raced = []

    def racing_write(out_dir, params):
        write_scene(out_dir, params)
        if not raced:  # another process finishes its scene while this one is still rendering
            raced.append(True)
            _generate(tmp_path)

    monkeypatch.setattr(demo, "_write_scene", racing_write)
    scene = _generate(tmp_path)
    assert raced and sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    monkeypatch.undo()
    assert _files(scene) == _files(_generate(tmp_path / "reference"))


def test_the_scene_loads_through_the_dataset_loader(tmp_path, monkeypatch):
    from taichi_nerf.data import load_scene

    # find_scene("demo") calls ensure_demo_scene(root): make that the small scene for speed.
    monkeypatch.setattr(demo, "ensure_demo_scene", functools.partial(ensure_demo_scene, **SMALL))
    scene = load_scene("demo", data_dir=tmp_path)
    assert (tmp_path / "demo" / demo.MARKER_NAME).exists()
    train = scene["train"]
    assert tuple(train.images.shape) == (6, 32, 32, 3) and train.images.dtype == torch.uint8
    assert (train.near, train.far) == (2.0, 6.0)
    assert train.scene_aabb.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    focal = 0.5 * 32 / math.tan(0.5 * DEMO_CAMERA_ANGLE_X)
    np.testing.assert_allclose(train.intrinsics[0].numpy(), [focal, focal, 16, 16], rtol=1e-6)
    poses = demo_camera_poses("train", 6)[:, :3, :]
    np.testing.assert_allclose(train.poses.numpy(), poses, atol=1e-6)
    rgba = render_demo_view(poses[2], 32, 32).astype(np.float64)
    on_white = rgba[..., :3] * rgba[..., 3:] + 1.0 - rgba[..., 3:]
    np.testing.assert_allclose(train.images[2].numpy() / 255.0, on_white, atol=2.5 / 255)
    assert (train.images[:, 0, 0] == 255).all()  # background composited on white
    assert [len(scene[s]) for s in SPLITS] == [6, 2, 3]
