"""COLMAP captures: a synthetic model written with pycolmap (demo cameras) loads back exactly."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

pycolmap = pytest.importorskip("pycolmap")

from taichi_nerf.data import DatasetError, load_scene  # noqa: E402
from taichi_nerf.data.colmap import colmap_bounds, colmap_to_opengl_c2w  # noqa: E402
from taichi_nerf.data.demo import demo_camera_poses  # noqa: E402

POSE_TOLERANCE = 1e-6  # float64 model -> float32 ImageSet: rounding ~2.4e-7 at |t| = 4
WIDTH, HEIGHT = 24, 18
#: camera_id -> (model, params); camera 2 is used by every third image.
CAMERAS = {
    1: ("PINHOLE", [30.25, 31.5, 12.25, 9.5]),
    2: ("SIMPLE_PINHOLE", [28.0, 12.0, 9.0]),
}
NUM_IMAGES = 10


def _intrinsics(camera_id: int) -> list[float]:
    model, p = CAMERAS[camera_id]
    return list(p) if model == "PINHOLE" else [p[0], p[0], p[1], p[2]]


def _opengl_to_colmap(c2w: np.ndarray) -> np.ndarray:
    """OpenGL c2w [3, 4] -> COLMAP cam_from_world [3, 4] (OpenCV camera)."""
    rot_cv = c2w[:3, :3] @ np.diag([1.0, -1.0, -1.0])
    return np.concatenate([rot_cv.T, -rot_cv.T @ c2w[:3, 3:4]], axis=1)


def _write_capture(scene: Path, *, binary: bool, cameras=CAMERAS, num_images=NUM_IMAGES,
                   model_dir: str = "sparse/0", images: bool = True) -> dict:
    """Write ``scene/images/img_XX.png`` and a COLMAP model of demo train cameras."""
    rng = np.random.default_rng(0)
    rec = pycolmap.Reconstruction()
    for camera_id, (model, params) in cameras.items():
        rec.add_camera_with_trivial_rig(pycolmap.Camera(
            model=model, width=WIDTH, height=HEIGHT, params=params, camera_id=camera_id))
    c2w = demo_camera_poses("train", num_images)[:, :3, :4] if num_images else None
    names, camera_ids = [], []
    # Images are added in reverse name order: the loader must sort them by name.
    for k in reversed(range(num_images)):
        name, camera_id = f"img_{k:02d}.png", 2 if k % 3 == 2 and 2 in cameras else 1
        image = pycolmap.Image(name=name, camera_id=camera_id, image_id=k + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(_opengl_to_colmap(c2w[k])))
        names.insert(0, name)
        camera_ids.insert(0, camera_id)
    points = np.concatenate([rng.uniform(-0.8, 0.8, (400, 3)), [[40.0, 0, 0], [0, -50.0, 0]]])
    for xyz in points:
        rec.add_point3D(xyz, pycolmap.Track())
    out = scene / model_dir
    out.mkdir(parents=True)
    rec.write_binary(str(out)) if binary else rec.write_text(str(out))
    pixels = rng.integers(0, 256, (num_images, HEIGHT, WIDTH, 3), dtype=np.uint8)
    if images:
        (scene / "images").mkdir()
        for name, img in zip(names, pixels):
            iio.imwrite(scene / "images" / name, img)
    return {"c2w": c2w, "names": names, "camera_ids": camera_ids, "pixels": pixels}


def _one_line_error(scene: Path, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        load_scene(str(scene), **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_colmap_model_loads_back_poses_intrinsics_and_split(tmp_path, binary):
    written = _write_capture(tmp_path / "cap", binary=binary)
    scene = load_scene(str(tmp_path / "cap"), splits=("train", "val", "test"))
    held = [k for k in range(NUM_IMAGES) if k % 8 == 0]
    expected = {"test": held, "val": held, "train": [k for k in range(NUM_IMAGES) if k % 8]}
    for split, indices in expected.items():
        s = scene[split]
        assert s.poses_are_ground_truth is False
        assert [Path(p).name for p in s.file_paths] == [written["names"][k] for k in indices]
        torch.testing.assert_close(s.poses.double(), torch.from_numpy(written["c2w"][indices]),
                                   atol=POSE_TOLERANCE, rtol=0)
        want = torch.tensor([_intrinsics(written["camera_ids"][k]) for k in indices],
                            dtype=torch.float64)
        torch.testing.assert_close(s.intrinsics.double(), want, atol=POSE_TOLERANCE, rtol=1e-6)
        assert (s.width, s.height) == (WIDTH, HEIGHT)
        assert torch.equal(s.images, torch.from_numpy(written["pixels"][indices]))
    # Robust box: holds the cloud, not the two stray points 40-50 units out.
    box = scene["train"].scene_aabb
    assert (box[:3] < -0.6).all() and (box[3:] > 0.6).all() and (box.abs() < 2.0).all()
    assert 0 < scene["train"].near < 3.0 < 4.0 < scene["train"].far


def test_downscale_and_holdout_every(tmp_path):
    _write_capture(tmp_path / "cap", binary=True)
    scene = load_scene(str(tmp_path / "cap"), splits=("train", "test"), downscale=2,
                       holdout_every=3)
    assert len(scene["test"]) == 4 and len(scene["train"]) == 6  # 0, 3, 6, 9 held out
    assert (scene["train"].width, scene["train"].height) == (WIDTH // 2, HEIGHT // 2)
    torch.testing.assert_close(scene["train"].intrinsics[0].double(),
                               torch.tensor(_intrinsics(1), dtype=torch.float64) / 2)


def test_opengl_conversion_looks_at_the_points():
    """The converted camera looks down its -z at the scene centre, +y up (world z up here)."""
    c2w = demo_camera_poses("train", 3)[:, :3, :4]
    back = colmap_to_opengl_c2w(np.stack([_opengl_to_colmap(p) for p in c2w]))
    np.testing.assert_allclose(back, c2w, atol=1e-12)
    forward = -back[:, :, 2]
    to_origin = -back[:, :, 3] / np.linalg.norm(back[:, :, 3], axis=1, keepdims=True)
    np.testing.assert_allclose(forward, to_origin, atol=1e-6)
    near, far, aabb = colmap_bounds(np.zeros((0, 3)), back)  # no points: camera box
    assert near < far and len(aabb) == 6


def test_zero_distortion_models_load(tmp_path):
    cams = {1: ("SIMPLE_RADIAL", [30.0, 12.0, 9.0, 0.0]),
            2: ("OPENCV", [30.0, 31.0, 12.0, 9.0, 0.0, 0.0, 0.0, 0.0])}
    _write_capture(tmp_path / "cap", binary=False, cameras=cams)
    train = load_scene(str(tmp_path / "cap"), splits=("train",))["train"]
    assert train.intrinsics[0].tolist() == [30.0, 30.0, 12.0, 9.0]
    assert [31.0, 12.0, 9.0] == train.intrinsics[1, 1:].tolist()  # img_02: camera 2 (OPENCV)


def test_undistorter_output_loads(tmp_path):
    """The fix the distortion error names (COLMAP's undistorter) gives a loadable capture."""
    cams = {1: ("SIMPLE_RADIAL", [30.0, 12.0, 9.0, 0.05])}
    written = _write_capture(tmp_path / "cap", binary=True, cameras=cams, num_images=3)
    message = _one_line_error(tmp_path / "cap")
    assert "SIMPLE_RADIAL with lens distortion" in message and "image_undistorter" in message
    model, images, out = (str(tmp_path / p) for p in ("cap/sparse/0", "cap/images",
                                                        "cap_undistorted"))
    call = f"pycolmap.undistort_images('{out}', '{model}', '{images}')"
    assert call in message and message.endswith(f"--scene {out}")
    pycolmap.undistort_images(out, model, images)
    train = load_scene(out, splits=("train",), holdout_every=3)["train"]
    assert len(train) == 2
    torch.testing.assert_close(train.poses.double(), torch.from_numpy(written["c2w"][1:]),
                               atol=POSE_TOLERANCE, rtol=0)


def test_missing_sparse_model(tmp_path):
    (tmp_path / "cap" / "images").mkdir(parents=True)
    message = _one_line_error(tmp_path / "cap")
    assert "sparse/0" in message and "no COLMAP model" in message and "mapper" in message


def test_images_listed_but_not_on_disk(tmp_path):
    written = _write_capture(tmp_path / "cap", binary=True)
    (tmp_path / "cap" / "images" / written["names"][4]).unlink()
    message = _one_line_error(tmp_path / "cap")
    assert "1 of the 10 images" in message and "'img_04.png'" in message
    assert str(tmp_path / "cap" / "images") in message


def test_no_images_folder(tmp_path):
    _write_capture(tmp_path / "cap", binary=True, images=False)
    message = _one_line_error(tmp_path / "cap")
    assert "10 of the 10 images" in message and "not there" in message


def test_unsupported_camera_model(tmp_path):
    cams = {1: ("OPENCV_FISHEYE", [30.0, 30.0, 12.0, 9.0, 0.1, 0.0, 0.0, 0.0])}
    _write_capture(tmp_path / "cap", binary=False, cameras=cams)
    message = _one_line_error(tmp_path / "cap")
    assert "OPENCV_FISHEYE model, which is not supported" in message
    assert "image_undistorter" in message and "sparse/0" in message


def test_zero_registered_images(tmp_path):
    _write_capture(tmp_path / "cap", binary=True, num_images=0)
    message = _one_line_error(tmp_path / "cap")
    assert "no registered images" in message


def test_unreadable_model(tmp_path):
    model = tmp_path / "cap" / "sparse" / "0"
    model.mkdir(parents=True)
    (model / "cameras.txt").write_text("1 PINHOLE not numbers\n")
    (tmp_path / "cap" / "images").mkdir()
    message = _one_line_error(tmp_path / "cap")
    assert "cannot read the COLMAP model" in message


def test_single_image_leaves_train_empty(tmp_path):
    _write_capture(tmp_path / "cap", binary=True, num_images=1)
    message = _one_line_error(tmp_path / "cap", splits=("train",))
    assert "'train' split is empty" in message and "--holdout-every" in message


def test_without_pycolmap_one_line_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    _write_capture(tmp_path / "cap", binary=True, num_images=3)
    real_import = builtins.__import__

    def no_pycolmap(name, *args, **kwargs):
        if name == "pycolmap" or name.startswith("pycolmap."):
            raise ImportError("No module named 'pycolmap'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pycolmap)
    message = _one_line_error(tmp_path / "cap")
    assert "needs pycolmap" in message and "pip install 'taichi-nerf[colmap]'" in message
