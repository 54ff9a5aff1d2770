"""Videos of a run and camera paths: a fake run (untrained renderer, trainer-style checkpoint)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from taichi_nerf.camera_paths import focus_point, look_at, orbit_path, spiral_path
from taichi_nerf.commands import render as render_cli
from taichi_nerf.data import load_scene
from taichi_nerf.data.demo import demo_camera_poses
from taichi_nerf.models import make_renderer
from taichi_nerf.poses import CameraPoseParameters, perturb_poses
from taichi_nerf.rays import image_rays
from taichi_nerf.render import render_image
from taichi_nerf.training.checkpoint import save_checkpoint
from taichi_nerf.training.config import TrainConfig, config_to_dict, resolve_config
from taichi_nerf.video import load_render_run, path_cameras, render_frames

SIZE = 16  # the image size of conftest.tiny_demo_dir



@pytest.fixture(scope="module")
def demo_dir(tiny_demo_dir) -> Path:
    return tiny_demo_dir


def _fake_run(run_dir: Path, scene: str, model: str) -> Path:
    """A checkpoint with the trainer's keys: an untrained renderer, poses moved a little."""
    train = load_scene(scene, splits=("train",))["train"]
    cfg = resolve_config(TrainConfig(scene=scene, model=model, device="cpu",
                                     output_dir=str(run_dir.parent)), torch.device("cpu"),
                         image_width=train.width)
    torch.manual_seed(0)
    renderer = make_renderer(cfg, train.scene_aabb, train.near, train.far)
    initial = perturb_poses(train.poses, rotation_noise_deg=2.0, translation_noise_pct=1.0)
    poses = CameraPoseParameters(initial)
    with torch.no_grad():
        poses.rotation_delta.normal_(0.0, 0.01)
    run_dir.mkdir(parents=True)
    save_checkpoint(run_dir, {"step": 0, "config": config_to_dict(cfg),
                              "renderer": renderer.state_dict(), "poses": poses.state_dict(),
                              "initial_poses": initial, "ground_truth_poses": train.poses,
                              "field_optimizer": {}}, is_best=False)
    return run_dir


@pytest.fixture(scope="module")
def ngp_run(tmp_path_factory, demo_dir) -> Path:
    return _fake_run(tmp_path_factory.mktemp("outputs") / "run", str(demo_dir), "ngp")


def _mp4_frames(path: Path, width: int, height: int) -> np.ndarray:
    """Decode an MP4 with imageio-ffmpeg's own ffmpeg (imageio's reader leaks its pipes)."""
    import imageio_ffmpeg

    count = imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path),
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    assert len(raw) == count * height * width * 3, "frames are not width x height"
    return np.frombuffer(raw, np.uint8).reshape(count, height, width, 3)


def test_gif_and_mp4_frame_count_and_size(tmp_path, ngp_run):
    pytest.importorskip("imageio_ffmpeg")
    gif, mp4 = tmp_path / "orbit.gif", tmp_path / "orbit.mp4"
    assert render_cli.main([str(ngp_run), "--path", "orbit", "--frames", "3", "--width", "12",
                            "-o", str(gif)]) == 0
    frames = iio.imread(gif, index=None)
    assert frames.shape[:3] == (3, 12, 24)  # RGB | depth, each 12 x 12
    assert render_cli.main([str(ngp_run), "--path", "spiral", "--frames", "3", "--downscale",
                            "2", "-o", str(mp4)]) == 0
    assert _mp4_frames(mp4, SIZE, SIZE // 2).shape == (3, SIZE // 2, SIZE, 3)


def test_train_path_renders_the_refined_cameras(ngp_run):
    """Frame k of the train path is the renderer's image from refined training pose k."""
    run = load_render_run(ngp_run, device="cpu")
    state = torch.load(ngp_run / "checkpoint_latest.pt", weights_only=True)
    refined = CameraPoseParameters(state["initial_poses"])
    refined.load_state_dict(state["poses"])
    poses, intrinsics = path_cameras(run, "train", num_frames=2)
    assert torch.equal(poses, refined.get_poses()[[0, 5]])
    frames = list(render_frames(run, poses, intrinsics, SIZE, SIZE, progress=False))
    assert len(frames) == 2 and frames[0].shape == (SIZE, 2 * SIZE, 3)
    rays_o, rays_d = image_rays(poses[1], intrinsics[1], SIZE, SIZE)
    out = render_image(run.renderer, rays_o, rays_d, background=run.background,
                       height=SIZE, width=SIZE)
    expected = out["rgb"].clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(frames[1][:, :SIZE], expected)


def test_test_path_uses_the_aligned_test_cameras(ngp_run, demo_dir):
    run = load_render_run(ngp_run, device="cpu")
    poses, intrinsics = path_cameras(run, "test", num_frames=None)
    test = load_scene(str(demo_dir), splits=("test",))["test"]
    assert poses.shape == (3, 3, 4) and torch.equal(intrinsics, test.intrinsics)
    assert not torch.allclose(poses, test.poses)  # moved by the train-camera Sim(3)
    torch.testing.assert_close(poses, test.poses, atol=0.2, rtol=0)  # ... but only a little


def test_vanilla_run_renders(tmp_path, demo_dir):
    pytest.importorskip("imageio_ffmpeg")
    run_dir = _fake_run(tmp_path / "outputs" / "run", str(demo_dir), "vanilla")
    out = tmp_path / "test.mp4"
    # An MP4, not a GIF: the untrained field renders identical frames, which GIF merges.
    assert render_cli.main([str(run_dir), "--path", "test", "--frames", "2", "--width", "6",
                            "-o", str(out)]) == 0
    assert _mp4_frames(out, 12, 6).shape == (2, 6, 12, 3)


@pytest.mark.parametrize("argv, message", [
    (["--path", "orbit", "-o", "out.avi"], "end -o with .mp4 or .gif"),
    (["--checkpoint", "7"], "checkpoint not found"),
    (["--path", "orbit", "--frames", "0", "-o", "x.gif"], "--frames must be >= 1"),
])
def test_bad_arguments_are_one_error_line(tmp_path, capsys, ngp_run, argv, message):
    argv = [a.replace("out.avi", str(tmp_path / "out.avi")).replace("x.gif", str(tmp_path / "x.gif"))
            for a in argv]
    assert render_cli.main([str(ngp_run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


def test_not_a_run_folder(tmp_path, capsys):
    assert render_cli.main([str(tmp_path / "nothing")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def _forward(poses: torch.Tensor) -> torch.Tensor:
    return -poses[:, :, 2]


def test_orbit_circles_the_focus_point():
    cameras = torch.from_numpy(demo_camera_poses("train", 20)[:, :3, :4])
    target = focus_point(cameras)
    torch.testing.assert_close(target, torch.zeros(3, dtype=target.dtype), atol=1e-6, rtol=0)
    path = orbit_path(cameras, 8)
    assert path.shape == (8, 3, 4)
    rotations = path[:, :, :3]
    torch.testing.assert_close(rotations.transpose(1, 2) @ rotations,
                               torch.eye(3, dtype=path.dtype).expand(8, 3, 3))
    to_target = torch.nn.functional.normalize(target - path[:, :, 3], dim=-1)
    torch.testing.assert_close(_forward(path), to_target)
    up = torch.nn.functional.normalize(cameras[:, :, 1].mean(0), dim=0)
    heights = (path[:, :, 3] - target) @ up
    torch.testing.assert_close(heights, heights[0].expand(8))  # one height, one radius
    radii = (path[:, :, 3] - target - heights[:, None] * up).norm(dim=-1)
    torch.testing.assert_close(radii, radii[0].expand(8))
    assert (path[:, :, 0] @ up).abs().max() < 1e-9  # no roll


def test_spiral_and_forward_facing_focus():
    # Forward-facing rig: cameras on a plane, all looking down -z.
    centres = torch.tensor([[x, y, 0.0] for x in (-1.0, 0.0, 1.0) for y in (-0.5, 0.5)],
                           dtype=torch.float64)
    cameras = look_at(centres, centres - torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
                      torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    target = focus_point(cameras)
    assert target[2] < -1.0 and target[:2].abs().max() < 1e-9  # ahead of the rig
    path = spiral_path(cameras, 10)
    torch.testing.assert_close(_forward(path),
                               torch.nn.functional.normalize(target - path[:, :, 3], dim=-1))
    assert (path[:, :, 3] - centres.mean(0)).norm(dim=-1).max() < 1.5
    with pytest.raises(ValueError, match="num_frames"):
        orbit_path(cameras, 0)


def test_mp4_without_imageio_ffmpeg_is_one_line(tmp_path, capsys, monkeypatch, ngp_run):
    import builtins

    real_import = builtins.__import__

    def no_ffmpeg(name, *args, **kwargs):
        if name == "imageio_ffmpeg":
            raise ImportError("No module named 'imageio_ffmpeg'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ffmpeg)
    assert render_cli.main([str(ngp_run), "-o", str(tmp_path / "v.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs imageio-ffmpeg" in err and "[video]" in err and "\n" not in err
