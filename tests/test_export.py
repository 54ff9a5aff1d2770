"""Pose export: a fake run folder (demo scene, no training) -> transforms.json / COLMAP -> back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from taichi_nerf.commands import export_poses as export_cli
from taichi_nerf.data import load_scene
from taichi_nerf.export import load_run_poses, rotation_to_quaternion
from taichi_nerf.poses import align_sim3, apply_sim3_to_poses, perturb_poses, pose_errors

POSE_TOLERANCE = 1e-6  # float32 poses written as float64 text, read back as float32
DOWNSCALE = 2
SIZE = 16  # the image size of conftest.tiny_demo_dir



@pytest.fixture(scope="module")
def demo_dir(tiny_demo_dir) -> Path:
    return tiny_demo_dir


def _fake_run(run_dir: Path, scene: str) -> dict:
    """Write final_poses.pt and config.json as the trainer does, with made-up refined poses."""
    train = load_scene(scene, splits=("train",), downscale=DOWNSCALE)["train"]
    gt = train.poses
    initial = perturb_poses(gt, rotation_noise_deg=3.0, translation_noise_pct=1.0, seed=1)
    optimized = perturb_poses(gt, rotation_noise_deg=0.5, translation_noise_pct=0.3, seed=2)
    run_dir.mkdir(parents=True)
    torch.save({"initial_poses": initial, "optimized_poses": optimized,
                "ground_truth_poses": gt, "pose_errors": pose_errors(optimized, gt),
                "file_paths": list(train.file_paths)}, run_dir / "final_poses.pt")
    (run_dir / "config.json").write_text(json.dumps(
        {"scene": scene, "data_dir": None, "downscale": DOWNSCALE, "model": "ngp"}))
    return {"optimized": optimized, "gt": gt, "train": train}


def _expected_held_out(scene: str, split: str, run: dict) -> torch.Tensor:
    held = load_scene(scene, splits=(split,), downscale=DOWNSCALE)[split]
    s, r, t = align_sim3(run["gt"][:, :, 3].double(), run["optimized"][:, :, 3].double())
    return apply_sim3_to_poses(held.poses.double(), s, r, t)


def test_transforms_export_loads_back_refined_poses(tmp_path, demo_dir):
    scene = str(demo_dir)
    run = _fake_run(tmp_path / "run", scene)
    assert export_cli.main([str(tmp_path / "run"), "--format", "transforms",
                            "-o", str(tmp_path / "out" / "transforms.json")]) == 0
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    # Intrinsics at the original resolution, not the run's downscaled one.
    assert (meta["w"], meta["h"]) == (SIZE, SIZE)
    assert meta["fl_x"] == pytest.approx(float(run["train"].intrinsics[0, 0]) * DOWNSCALE)
    assert [f["pose_refined"] for f in meta["frames"]] == [True] * 6 + [False] * 5
    back = load_scene(str(tmp_path / "out"), downscale=DOWNSCALE)
    torch.testing.assert_close(back["train"].poses, run["optimized"], atol=POSE_TOLERANCE, rtol=0)
    torch.testing.assert_close(back["train"].intrinsics, run["train"].intrinsics)
    assert [Path(p).resolve() for p in back["train"].file_paths] == [
        Path(p).resolve() for p in run["train"].file_paths]
    for split in ("val", "test"):
        torch.testing.assert_close(back[split].poses.double(),
                                   _expected_held_out(scene, split, run),
                                   atol=POSE_TOLERANCE, rtol=0)
    assert back["train"].scene_aabb.tolist() == run["train"].scene_aabb.tolist()
    assert back["train"].poses_are_ground_truth is False


def test_capture_export_keeps_one_held_out_set(tmp_path, demo_dir):
    """A transforms.json capture: val = test, exported once and listed in both splits."""
    capture = tmp_path / "capture"
    capture.mkdir()
    frames = []
    for split in ("train", "val", "test"):
        for f in json.loads((demo_dir / f"transforms_{split}.json").read_text())["frames"]:
            frames.append({**f, "file_path": str(demo_dir / (f["file_path"] + ".png"))})
    (capture / "transforms.json").write_text(json.dumps(
        {"camera_angle_x": 0.69, "frames": frames}))
    run = _fake_run(tmp_path / "run", str(capture))
    out = tmp_path / "run" / "transforms.json"
    assert export_cli.main([str(tmp_path / "run")]) == 0  # default format and place
    meta = json.loads(out.read_text())
    assert len(meta["frames"]) == 11 and meta["val_filenames"] == meta["test_filenames"]
    back = load_scene(str(out.parent), downscale=DOWNSCALE)
    torch.testing.assert_close(back["train"].poses, run["optimized"], atol=POSE_TOLERANCE, rtol=0)
    assert len(back["test"]) == 2  # 11 frames, every 8th by name held out


def _w2c_opencv(c2w: np.ndarray) -> np.ndarray:
    rot = c2w[:3, :3] @ np.diag([1.0, -1.0, -1.0])
    return np.concatenate([rot.T, -rot.T @ c2w[:3, 3:]], axis=1)


def test_colmap_export_reads_back_with_pycolmap(tmp_path, demo_dir):
    pycolmap = pytest.importorskip("pycolmap")
    scene = str(demo_dir)
    run = _fake_run(tmp_path / "run", scene)
    model = tmp_path / "cap" / "sparse" / "0"
    assert export_cli.main([str(tmp_path / "run"), "--format", "colmap", "-o", str(model)]) == 0
    poses = load_run_poses(tmp_path / "run")
    rec = pycolmap.Reconstruction(str(model))
    assert rec.num_images() == len(poses.frames) == 11
    for image_id, frame in enumerate(poses.frames, start=1):
        image = rec.images[image_id]
        assert (demo_dir / image.name).resolve() == frame.image.resolve()
        np.testing.assert_allclose(image.cam_from_world().matrix()[:3], _w2c_opencv(frame.c2w),
                                   atol=POSE_TOLERANCE)
        camera = rec.cameras[image.camera_id]
        assert (camera.width, camera.height) == (SIZE, SIZE)
        np.testing.assert_allclose(camera.params, frame.intrinsics, rtol=1e-12)
    torch.testing.assert_close(torch.from_numpy(np.stack([f.c2w for f in poses.frames[:6]])),
                               run["optimized"].double(), atol=0, rtol=0)
    # Our own COLMAP loader reads the export too (images/ = the folder COLMAP is told about).
    (tmp_path / "cap" / "images").symlink_to(demo_dir)
    back = load_scene(str(tmp_path / "cap"), splits=("train", "test"))
    by_name = {Path(f.image).resolve(): f.c2w for f in poses.frames}
    for split in ("train", "test"):
        for path, pose in zip(back[split].file_paths, back[split].poses):
            np.testing.assert_allclose(pose.double().numpy(), by_name[Path(path).resolve()],
                                       atol=POSE_TOLERANCE)


def test_quaternion_of_half_turns_and_identity():
    for rot in (np.eye(3), np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]),
                np.diag([-1.0, -1.0, 1.0])):
        w, x, y, z = rotation_to_quaternion(rot)
        back = np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        np.testing.assert_allclose(back, rot, atol=1e-15)


@pytest.mark.parametrize("case", ["no_folder", "no_final_poses", "not_a_run"])
def test_bad_run_folder_is_one_error_line(tmp_path, capsys, case):
    run = tmp_path / "run"
    if case != "no_folder":
        run.mkdir()
    if case == "not_a_run":
        torch.save({"something": 1}, run / "final_poses.pt")
    assert export_cli.main([str(run), "--format", "colmap"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(run) in err
    expected = {"no_folder": "not a folder", "no_final_poses": "final_poses.pt: not found",
                "not_a_run": "not a taichi-nerf final_poses.pt"}[case]
    assert expected in err


def test_fixed_pose_run_exports_input_poses_unrefined(tmp_path, demo_dir):
    scene = str(demo_dir)
    run = _fake_run(tmp_path / "run", scene)
    final = torch.load(tmp_path / "run" / "final_poses.pt", weights_only=True)
    final.update(optimized_poses=run["gt"], ground_truth_poses=None)  # a capture's fixed run
    torch.save(final, tmp_path / "run" / "final_poses.pt")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["fixed_poses"] = True
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    poses = load_run_poses(tmp_path / "run")
    assert not any(f.refined for f in poses.frames)
    test = load_scene(scene, splits=("test",), downscale=DOWNSCALE)["test"]
    held = [f for f in poses.frames if "test" in f.splits]
    np.testing.assert_array_equal(np.stack([f.c2w for f in held]), test.poses.double().numpy())
