"""Data: scene lookup, Blender and transforms.json loaders on tiny fixtures, bad-input errors,
and the pixel sampler. Every fixture is written here into tmp_path (never the real dataset)."""

import json
import math
import sys
import types
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import DEVICES

from taichi_nerf.data import DatasetError, ImageSet, PixelSampler, find_scene, load_scene
from taichi_nerf.data.paths import DATA_ENV_VAR, NERF_EXAMPLE_DATA_URL, NERF_SYNTHETIC_URL
from taichi_nerf.data.transforms import NEAR_FRACTION

#: Poses are stored as float32: compare with the float64 source at float32 resolution.
POSE_ATOL = 1e-6
#: Intrinsics are stored as float32 too.
INTRINSICS_RTOL = 1e-6

# ---------------------------------------------------------------------------------------------
# Fixture writers


def _rng() -> np.random.Generator:
    return np.random.default_rng()  # fresh inputs every run


def _random_pose(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = q, rng.normal(scale=3.0, size=3)
    return pose


def _random_rgba(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    img = rng.integers(0, 256, size=(height, width, 4), dtype=np.uint8)
    img[0, 0, 3], img[0, 1, 3] = 0, 255  # always one transparent and one opaque pixel
    return img


def _composite(rgba: np.ndarray, background) -> np.ndarray:
    rgb, alpha = rgba[..., :3] / 255.0, rgba[..., 3:] / 255.0
    out = rgb * alpha + np.asarray(background, dtype=np.float64) * (1.0 - alpha)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def _write_blender(
    scene_dir: Path, counts=None, width=6, height=4, extra=None, rng=None
) -> dict[str, dict]:
    """Blender layout with random RGBA PNGs; returns per split the written images and poses."""
    rng = rng or _rng()
    counts = counts or {"train": 3, "val": 2, "test": 2}
    angle = float(rng.uniform(0.4, 1.2))
    written = {}
    for split, n in counts.items():
        (scene_dir / split).mkdir(parents=True, exist_ok=True)
        frames, images, poses = [], [], []
        for i in range(n):
            img, pose = _random_rgba(rng, height, width), _random_pose(rng)
            iio.imwrite(scene_dir / split / f"r_{i}.png", img)
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
            images.append(img)
            poses.append(pose)
        meta = {"camera_angle_x": angle, "frames": frames, **(extra or {})}
        (scene_dir / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))
        written[split] = {"images": images, "poses": poses, "angle": angle}
    return written


def _write_transforms(scene_dir: Path, n=10, width=6, height=4, meta_extra=None, rng=None):
    """instant-ngp / nerfstudio single transforms.json, frames listed in a shuffled order."""
    rng = rng or _rng()
    (scene_dir / "images").mkdir(parents=True, exist_ok=True)
    frames, by_name = [], {}
    for i in range(n):
        img, pose = _random_rgba(rng, height, width)[..., :3], _random_pose(rng)
        name = f"images/frame_{i:05d}"
        iio.imwrite(scene_dir / f"{name}.png", img)
        # Alternate between file_path with and without its extension.
        frames.append(
            {"file_path": name + (".png" if i % 2 else ""), "transform_matrix": pose.tolist()}
        )
        by_name[name] = (img, pose)
    order = rng.permutation(n)
    meta = {
        "fl_x": float(rng.uniform(5, 9)),
        "fl_y": float(rng.uniform(5, 9)),
        "cx": float(rng.uniform(2, 4)),
        "cy": float(rng.uniform(1, 3)),
        "w": width,
        "h": height,
        "frames": [frames[i] for i in order],
        **(meta_extra or {}),
    }
    (scene_dir / "transforms.json").write_text(json.dumps(meta, indent=2))
    return meta, by_name


# ---------------------------------------------------------------------------------------------
# Blender loader


def test_blender_scene_loads_composited_images_poses_intrinsics(tmp_path):
    rng = _rng()
    written = _write_blender(tmp_path / "chair", rng=rng)
    background = tuple(rng.uniform(0, 1, size=3).tolist())
    scene = load_scene("chair", data_dir=tmp_path, background=background)
    assert list(scene) == ["train", "val", "test"]
    for split, ref in written.items():
        s = scene[split]
        assert isinstance(s, ImageSet) and len(s) == len(ref["images"])
        assert s.images.dtype == torch.uint8 and s.images.shape == (len(s), 4, 6, 3)
        assert (s.width, s.height) == (6, 4)
        expected = np.stack([_composite(img, background) for img in ref["images"]])
        np.testing.assert_array_equal(s.images.numpy(), expected)
        assert s.poses.dtype == torch.float32 and s.poses.shape == (len(s), 3, 4)
        np.testing.assert_allclose(s.poses.numpy(), np.stack(ref["poses"])[:, :3], atol=POSE_ATOL)
        fx = 0.5 * 6 / math.tan(0.5 * ref["angle"])
        np.testing.assert_allclose(
            s.intrinsics.numpy(), np.tile([fx, fx, 3.0, 2.0], (len(s), 1)), rtol=INTRINSICS_RTOL
        )
        assert [Path(p).name for p in s.file_paths] == [f"r_{i}.png" for i in range(len(s))]
        assert (s.near, s.far) == (2.0, 6.0)
        assert s.scene_aabb.tolist() == [-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]
        assert s.camera(0).fx == pytest.approx(fx, rel=INTRINSICS_RTOL)
    # Transparent pixel -> background, opaque pixel -> its own colour.
    img = written["train"]["images"][0]
    assert scene["train"].images[0, 0, 0].tolist() == [round(c * 255) for c in background]
    assert scene["train"].images[0, 0, 1].tolist() == img[0, 1, :3].tolist()

    only = load_scene("chair", data_dir=tmp_path, splits=("test",))
    assert list(only) == ["test"]


def test_blender_json_overrides_bounds(tmp_path):
    extra = {"near": 0.5, "far": 3.25, "aabb": [[-1, -2, -0.5], [1, 2, 0.5]]}
    _write_blender(tmp_path / "s", counts={"train": 1}, extra=extra)
    s = load_scene("s", data_dir=tmp_path, splits=("train",))["train"]
    assert (s.near, s.far) == (0.5, 3.25)
    assert s.scene_aabb.tolist() == [-1, -2, -0.5, 1, 2, 0.5]


def test_downscale_area_average_exact_numbers(tmp_path):
    # One 4x4 RGBA image = four 2x2 blocks, downscaled by 2 on a white background.
    img = np.zeros((4, 4, 4), dtype=np.uint8)
    img[:2, :2] = [[[10, 0, 50, 255], [20, 0, 60, 255]], [[30, 0, 70, 255], [41, 3, 80, 255]]]
    img[:2, 2:] = [[[255, 0, 0, 255], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]]
    img[2:, :2] = [0, 0, 0, 128]  # half transparent black on white: 255 * (1 - 128/255) = 127
    img[2:, 2:] = [[[200, 100, 0, 255], [0, 0, 0, 255]], [[0, 0, 0, 255], [0, 0, 0, 255]]]
    scene_dir = tmp_path / "tiny"
    (scene_dir / "train").mkdir(parents=True)
    iio.imwrite(scene_dir / "train" / "r_0.png", img)
    meta = {
        "camera_angle_x": 0.8,
        "frames": [{"file_path": "./train/r_0.png", "transform_matrix": np.eye(4).tolist()}],
    }
    (scene_dir / "transforms_train.json").write_text(json.dumps(meta))

    s = load_scene(str(scene_dir), splits=("train",), downscale=2)["train"]
    expected = [
        # (10+20+30+41)/4 = 25.25 -> 25, 3/4 = 0.75 -> 1, (50+60+70+80)/4 = 65
        [[25, 1, 65], [255, 191, 191]],  # red + 3 white: (255, 191.25, 191.25)
        [[127, 127, 127], [50, 25, 0]],  # 200/4 = 50, 100/4 = 25
    ]
    assert s.images[0].tolist() == expected
    assert (s.width, s.height) == (2, 2)
    fx = 0.5 * 4 / math.tan(0.4)
    np.testing.assert_allclose(s.intrinsics[0].numpy(), [fx / 2, fx / 2, 1.0, 1.0], rtol=1e-6)


def test_downscale_crops_partial_blocks_random(tmp_path):
    rng = _rng()
    written = _write_blender(tmp_path / "s", counts={"train": 2}, width=7, height=5, rng=rng)
    s = load_scene("s", data_dir=tmp_path, splits=("train",), downscale=2)["train"]
    assert s.images.shape == (2, 2, 3, 3)
    for k, rgba in enumerate(written["train"]["images"]):
        rgb = rgba[..., :3] / 255.0 * (rgba[..., 3:] / 255.0) + (1.0 - rgba[..., 3:] / 255.0)
        for y in range(2):
            for x in range(3):
                mean = rgb[2 * y : 2 * y + 2, 2 * x : 2 * x + 2].mean(axis=(0, 1))
                np.testing.assert_array_equal(s.images[k, y, x].numpy(), np.round(mean * 255))
    fx = 0.5 * 7 / math.tan(0.5 * written["train"]["angle"])
    np.testing.assert_allclose(s.intrinsics[1].numpy(), [fx / 2, fx / 2, 1.75, 1.25], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# instant-ngp / nerfstudio transforms.json


def test_transforms_json_holdout_splits_and_intrinsics(tmp_path):
    meta, by_name = _write_transforms(tmp_path / "cap", n=10)
    scene = load_scene("cap", data_dir=tmp_path)
    names = sorted(by_name)
    held = [names[0], names[8]]
    split_names = {
        k: [Path(p).with_suffix("").name for p in v.file_paths] for k, v in scene.items()
    }
    assert split_names["test"] == [Path(n).name for n in held]
    assert split_names["val"] == split_names["test"]
    assert split_names["train"] == [Path(n).name for n in names if n not in held]
    for s in scene.values():
        for k, path in enumerate(s.file_paths):
            img, pose = by_name["images/" + Path(path).with_suffix("").name]
            np.testing.assert_array_equal(s.images[k].numpy(), img)
            np.testing.assert_allclose(s.poses[k].numpy(), pose[:3], atol=POSE_ATOL)
        expected_k = [meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"]]
        np.testing.assert_allclose(
            s.intrinsics.numpy(), np.tile(expected_k, (len(s), 1)), rtol=1e-6
        )

    every3 = load_scene("cap", data_dir=tmp_path, splits=("train", "test"), holdout_every=3)
    assert (len(every3["train"]), len(every3["test"])) == (6, 4)


def test_transforms_per_frame_intrinsics_angle_and_resized_images(tmp_path):
    meta, _ = _write_transforms(tmp_path / "cap", n=3)
    for key in ("fl_x", "fl_y", "cx", "cy"):
        del meta[key]
    meta["camera_angle_x"] = 1.0
    meta["frames"][1].update({"fl_x": 7.0, "cx": 2.5})  # per-frame keys win
    meta["w"], meta["h"] = 12, 8  # json describes 2x larger images than the files (6x4)
    (tmp_path / "cap" / "transforms.json").write_text(json.dumps(meta))
    scene = load_scene(str(tmp_path / "cap"), splits=("train", "test"), holdout_every=2)
    by_path = {
        Path(p).stem: k.tolist() for s in scene.values() for p, k in zip(s.file_paths, s.intrinsics)
    }
    assert len(by_path) == 3
    f_global = 0.5 * 12 / math.tan(0.5)
    frame1 = Path(meta["frames"][1]["file_path"]).stem
    for stem, k in by_path.items():
        if stem == frame1:
            np.testing.assert_allclose(k, [3.5, 3.5, 1.25, 2.0], rtol=1e-6)
        else:
            np.testing.assert_allclose(k, [f_global / 2, f_global / 2, 3.0, 2.0], rtol=1e-6)


def test_transforms_bounds_from_camera_centres_and_overrides(tmp_path):
    meta, by_name = _write_transforms(tmp_path / "cap", n=5)
    s = load_scene("cap", data_dir=tmp_path, splits=("test",))["test"]
    centres = np.stack([pose[:3, 3] for _, pose in by_name.values()])
    centre = centres.mean(axis=0)
    half = np.abs(centres - centre).max()
    np.testing.assert_allclose(s.scene_aabb.numpy(), np.r_[centre - half, centre + half], rtol=1e-5)
    assert s.near == pytest.approx(NEAR_FRACTION * half)
    assert s.far == pytest.approx(2 * math.sqrt(3) * half)

    meta.update({"near": 0.1, "far": 9.0, "aabb": [[-2, -2, -2], [2, 2, 2]]})
    (tmp_path / "cap" / "transforms.json").write_text(json.dumps(meta))
    s = load_scene("cap", data_dir=tmp_path, splits=("test",))["test"]
    assert (s.near, s.far, s.scene_aabb.tolist()) == (0.1, 9.0, [-2, -2, -2, 2, 2, 2])


def test_transforms_named_split_lists(tmp_path):
    meta, by_name = _write_transforms(tmp_path / "cap", n=4)
    names = sorted(by_name)
    meta["train_filenames"] = [n + ".png" for n in names[:3]]
    meta["test_filenames"] = [names[3] + ".png"]
    (tmp_path / "cap" / "transforms.json").write_text(json.dumps(meta))
    scene = load_scene("cap", data_dir=tmp_path)
    assert [Path(p).stem for p in scene["train"].file_paths] == [Path(n).name for n in names[:3]]
    assert [Path(p).stem for p in scene["val"].file_paths] == [Path(names[3]).name]


def test_lens_distortion_warns(tmp_path):
    _write_transforms(tmp_path / "cap", n=2, meta_extra={"k1": 0.1})
    with pytest.warns(UserWarning, match="distortion"):
        load_scene("cap", data_dir=tmp_path, splits=("test",), holdout_every=2)


# ---------------------------------------------------------------------------------------------
# Bad input -> one DatasetError naming the file


def _blender_one_split(tmp_path: Path, n=2) -> Path:
    scene_dir = tmp_path / "bad"
    _write_blender(scene_dir, counts={"train": n})
    return scene_dir


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, indent=2))


def _set_matrix(index: int, matrix):
    def edit(meta):
        meta["frames"][index]["transform_matrix"] = matrix

    return edit


def _scaled_pose():
    m = np.eye(4)
    m[:3, :3] *= 2.0
    return m.tolist()


def _reflected_pose():
    m = np.eye(4)
    m[0, 0] = -1.0
    return m.tolist()


def _nan_pose():
    m = np.eye(4).tolist()
    m[1][3] = float("nan")
    return m


BAD_JSON_EDITS = {
    "non_finite": (_set_matrix(1, _nan_pose()), ["frame 1", "r_1", "NaN"]),
    "scaled_rotation": (_set_matrix(0, _scaled_pose()), ["frame 0", "not rigid", "orthonormal"]),
    "reflection": (_set_matrix(1, _reflected_pose()), ["frame 1", "determinant"]),
    "bad_bottom_row": (
        _set_matrix(0, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]),
        ["frame 0", "bottom row"],
    ),
    "matrix_shape": (_set_matrix(0, [[1, 0, 0], [0, 1, 0]]), ["frame 0", "3x4 or 4x4"]),
    "empty_frames": (lambda m: m.update(frames=[]), ["empty"]),
    "no_frames_key": (lambda m: m.pop("frames"), ["frames"]),
    "no_matrix": (
        lambda m: m["frames"][0].pop("transform_matrix"),
        ["frame 0", "transform_matrix"],
    ),
    "no_focal": (lambda m: m.pop("camera_angle_x"), ["focal", "camera_angle_x"]),
    "bad_aabb": (lambda m: m.update(aabb=[1, 2, 3]), ["aabb"]),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON_EDITS))
def test_bad_transform_json_content(tmp_path, case):
    edit, words = BAD_JSON_EDITS[case]
    scene_dir = _blender_one_split(tmp_path)
    json_path = scene_dir / "transforms_train.json"
    _edit_json(json_path, edit)
    with pytest.raises(DatasetError) as info:
        load_scene(str(scene_dir), splits=("train",))
    message = str(info.value)
    assert str(json_path) in message
    for word in words:
        assert word in message, (word, message)
    assert isinstance(info.value, ValueError)


def test_missing_split_json(tmp_path):
    scene_dir = _blender_one_split(tmp_path)
    with pytest.raises(DatasetError, match=r"transforms_val\.json: file not found"):
        load_scene(str(scene_dir), splits=("train", "val"))


def test_malformed_json_names_file_and_line(tmp_path):
    scene_dir = _blender_one_split(tmp_path)
    json_path = scene_dir / "transforms_train.json"
    json_path.write_text('{\n  "camera_angle_x": 0.5,\n  "frames": [,]\n}\n')
    with pytest.raises(DatasetError) as info:
        load_scene(str(scene_dir), splits=("train",))
    assert str(json_path) in str(info.value) and "line 3" in str(info.value)
    json_path.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="JSON object"):
        load_scene(str(scene_dir), splits=("train",))


def test_missing_image(tmp_path):
    scene_dir = _blender_one_split(tmp_path)
    (scene_dir / "train" / "r_1.png").unlink()
    with pytest.raises(DatasetError) as info:
        load_scene(str(scene_dir), splits=("train",))
    message = str(info.value)
    assert "transforms_train.json" in message and "r_1" in message and "not found" in message


def test_unreadable_image(tmp_path):
    scene_dir = _blender_one_split(tmp_path)
    bad = scene_dir / "train" / "r_0.png"
    bad.write_bytes(b"this is not a png" * 10)
    with pytest.raises(DatasetError) as info:
        load_scene(str(scene_dir), splits=("train",))
    assert str(bad) in str(info.value) and "cannot read image" in str(info.value)


def test_images_of_differing_sizes(tmp_path):
    scene_dir = _blender_one_split(tmp_path, n=3)
    odd = scene_dir / "train" / "r_2.png"
    iio.imwrite(odd, np.zeros((5, 6, 4), dtype=np.uint8))
    with pytest.raises(DatasetError) as info:
        load_scene(str(scene_dir), splits=("train",))
    message = str(info.value)
    assert str(odd) in message and "6x5" in message and "6x4" in message


def test_transforms_json_bad_inputs(tmp_path):
    meta, _ = _write_transforms(tmp_path / "cap", n=3)
    json_path = tmp_path / "cap" / "transforms.json"
    _edit_json(json_path, lambda m: m.update(w=10, h=10))  # aspect differs from the 6x4 files
    with pytest.raises(DatasetError, match="aspect") as info:
        load_scene(str(tmp_path / "cap"))
    assert str(json_path) in str(info.value)
    _edit_json(json_path, lambda m: m.update(w=6, h=4, camera_model="OPENCV_FISHEYE"))
    with pytest.raises(DatasetError, match="OPENCV_FISHEYE"):
        load_scene(str(tmp_path / "cap"))
    _edit_json(json_path, lambda m: (m.pop("camera_model"), m.update(frames=m["frames"][:1])))
    with pytest.raises(DatasetError, match="'train' split is empty") as info:
        load_scene(str(tmp_path / "cap"))  # one frame: it is the held-out test view
    assert str(json_path) in str(info.value)
    _edit_json(json_path, lambda m: m.update(frames=m["frames"] * 2))  # two views, one centre
    with pytest.raises(DatasetError, match="one point") as info:
        load_scene(str(tmp_path / "cap"), holdout_every=2)
    assert str(json_path) in str(info.value) and "'aabb'" in str(info.value)


def test_bad_options_are_value_errors(tmp_path):
    scene_dir = _blender_one_split(tmp_path)
    with pytest.raises(ValueError, match="downscale"):
        load_scene(str(scene_dir), splits=("train",), downscale=0)
    with pytest.raises(ValueError, match="background"):
        load_scene(str(scene_dir), splits=("train",), background=(2.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="unknown split"):
        load_scene(str(scene_dir), splits=("training",))
    with pytest.raises(DatasetError, match="smaller than downscale"):
        load_scene(str(scene_dir), splits=("train",), downscale=5)


# ---------------------------------------------------------------------------------------------
# Scene lookup


def test_find_scene_roots_in_order(tmp_path, monkeypatch):
    flag_root, env_root, cwd = tmp_path / "flag", tmp_path / "env", tmp_path / "cwd"
    _write_blender(flag_root / "lego", counts={"train": 1})
    _write_blender(env_root / "nerf_synthetic" / "lego", counts={"train": 1})
    _write_blender(cwd / "data" / "lego", counts={"train": 1})
    monkeypatch.chdir(cwd)
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    assert find_scene("lego").resolve() == (cwd / "data" / "lego").resolve()
    monkeypatch.setenv(DATA_ENV_VAR, str(env_root))
    assert find_scene("lego") == env_root / "nerf_synthetic" / "lego"
    assert find_scene("lego", data_dir=str(flag_root)) == flag_root / "lego"
    assert find_scene(str(flag_root / "lego")) == flag_root / "lego"


def test_missing_scene_message_names_places_and_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    (tmp_path / "ship").mkdir()  # exists but holds no transforms file
    with pytest.raises(DatasetError) as info:
        find_scene("ship", data_dir=tmp_path)
    message = str(info.value)
    for needle in (
        str(tmp_path / "ship"),
        str(tmp_path / "nerf_synthetic" / "ship"),
        "transforms_train.json",
        NERF_SYNTHETIC_URL,
        NERF_EXAMPLE_DATA_URL,
        "--data-dir",
        DATA_ENV_VAR,
    ):
        assert needle in message, (needle, message)
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match=r"\$TAICHI_NERF_DATA"):
        load_scene("lego")


def test_demo_scene_goes_through_demo_module(tmp_path, monkeypatch):
    calls = []

    def ensure_demo_scene(root, size=128):
        calls.append(Path(root))
        out = Path(root) / "demo"
        if not out.exists():
            _write_blender(out, counts={"train": 1})
        return out

    fake = types.ModuleType("taichi_nerf.data.demo")
    fake.ensure_demo_scene = ensure_demo_scene
    monkeypatch.setitem(sys.modules, "taichi_nerf.data.demo", fake)
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "env"))
    assert find_scene("demo", data_dir=tmp_path) == tmp_path / "demo"
    assert find_scene("demo") == tmp_path / "env" / "demo"
    assert calls == [tmp_path, tmp_path / "env"]
    assert len(load_scene("demo", data_dir=tmp_path, splits=("train",))["train"]) == 1


# ---------------------------------------------------------------------------------------------
# Pixel sampler


def _random_images(n=3, h=5, w=7) -> torch.Tensor:
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8)


@pytest.mark.parametrize("device", DEVICES)
def test_sampler_returns_matching_targets(device):
    images = _random_images()
    sampler = PixelSampler(images, seed=int(torch.randint(0, 2**31, ())), device=device)
    camera_ids, pixels, rgb = sampler.sample(500)
    assert camera_ids.shape == (500,) and pixels.shape == (500, 2) and rgb.shape == (500, 3)
    assert camera_ids.dtype == pixels.dtype == torch.long and rgb.dtype == torch.float32
    assert rgb.device.type == torch.device(device).type
    u, v = pixels[:, 0].cpu(), pixels[:, 1].cpu()
    assert u.max() < 7 and v.max() < 5 and u.min() >= 0 and v.min() >= 0
    expected = images[camera_ids.cpu(), v, u].float() / 255.0
    torch.testing.assert_close(rgb.cpu(), expected, atol=0, rtol=0)


def test_sampler_is_uniform_over_all_pixels():
    n, h, w = 2, 3, 4
    cells = n * h * w
    draws_per_cell = 2000
    sampler = PixelSampler(_random_images(n, h, w), seed=int(torch.randint(0, 2**31, ())))
    camera_ids, pixels, _ = sampler.sample(cells * draws_per_cell)
    flat = (camera_ids * h + pixels[:, 1]) * w + pixels[:, 0]
    counts = torch.bincount(flat, minlength=cells).double()
    chi2 = float(((counts - draws_per_cell) ** 2 / draws_per_cell).sum())
    # chi^2 with 23 degrees of freedom: mean 23, std ~6.8; 8 std above the mean is a
    # false-alarm rate far below 1e-6, while a sampler skipping one cell scores ~2000.
    dof = cells - 1
    assert chi2 < dof + 8 * math.sqrt(2 * dof), chi2


def test_sampler_seed_determinism_and_exact_resume():
    images = _random_images()
    seed = int(torch.randint(0, 2**31, ()))
    a, b = PixelSampler(images, seed=seed), PixelSampler(images, seed=seed)
    for x, y in zip(a.sample(64), b.sample(64)):
        torch.testing.assert_close(x, y, atol=0, rtol=0)
    other = PixelSampler(images, seed=seed + 1)
    assert not torch.equal(a.sample(64)[0], other.sample(64)[0]) or not torch.equal(
        a.sample(64)[1], other.sample(64)[1]
    )

    state = a.state_dict()
    expected = [a.sample(32) for _ in range(3)]
    resumed = PixelSampler(images, seed=12345)
    resumed.load_state_dict(state)
    for want in expected:
        for x, y in zip(resumed.sample(32), want):
            torch.testing.assert_close(x, y, atol=0, rtol=0)
    # The state survives torch.save / torch.load (a checkpoint).
    restored = PixelSampler(images)
    with_checkpoint = torch.load(_save(state), weights_only=False)
    restored.load_state_dict(with_checkpoint)
    torch.testing.assert_close(restored.sample(16)[1], expected[0][1][:16], atol=0, rtol=0)


def _save(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_sampler_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        PixelSampler(torch.rand(2, 3, 4, 3))
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        PixelSampler(torch.zeros(2, 3, 4, dtype=torch.uint8))
    sampler = PixelSampler(_random_images())
    with pytest.raises(ValueError, match="batch_size"):
        sampler.sample(0)
    with pytest.raises(ValueError, match="shape"):
        sampler.load_state_dict(PixelSampler(_random_images(2)).state_dict())
