"""Run plots from a synthetic history and poses; comparison panels."""

from __future__ import annotations

import builtins

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from taichi_nerf.data.demo import demo_camera_poses
from taichi_nerf.poses import apply_sim3_to_poses, perturb_poses
from taichi_nerf.training.plots import ERROR_GAIN, save_comparison_panel, write_run_plots

PLOT_NAMES = ["psnr.png", "pose_error.png", "cameras.png"]


def _history(steps: int = 50, with_px: bool = False) -> list[dict]:
    history = []
    for step in range(1, steps + 1, 5):
        entry = {"step": step, "train_psnr": 10.0 + step / 5, "val_psnr": None,
                 "rotation_error_mean": 3.0 / step, "translation_error_mean": 0.04 / step}
        if step % 20 == 1:
            entry["val_psnr"] = 9.0 + step / 6
        if with_px:
            entry["rotation_error_px_mean"] = entry["rotation_error_mean"] / 0.309
        history.append(entry)
    return history


def _poses():
    gt = torch.from_numpy(demo_camera_poses("train", 12)[:, :3, :4])
    initial = perturb_poses(gt, rotation_noise_deg=3.0, translation_noise_pct=2.0, seed=0)
    refined = perturb_poses(gt, rotation_noise_deg=0.3, translation_noise_pct=0.2, seed=1)
    # The refined poses live in a learned frame: scaled, turned and shifted from the truth.
    turn = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=gt.dtype)
    refined = apply_sim3_to_poses(refined, 1.7, turn, torch.tensor([0.5, -0.2, 3.0]).double())
    return initial, refined, gt


def _image(path):
    image = iio.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


@pytest.mark.parametrize("truth", [True, False], ids=["ground_truth", "capture"])
def test_write_run_plots(tmp_path, truth):
    pytest.importorskip("matplotlib")
    initial, refined, gt = _poses()
    paths = write_run_plots(tmp_path, _history(with_px=truth), initial, refined,
                            gt if truth else None, pixel_deg=None if truth else 0.1)
    assert [p.name for p in paths] == PLOT_NAMES
    assert all(p.parent == tmp_path / "plots" for p in paths)
    images = [_image(p) for p in paths]
    # Not blank: each picture has both light and dark pixels.
    assert all(img[..., :3].min() < 100 and img[..., :3].max() > 200 for img in images)


def test_plots_of_different_runs_differ(tmp_path):
    pytest.importorskip("matplotlib")
    initial, refined, gt = _poses()
    a = write_run_plots(tmp_path / "a", _history(), initial, refined, gt)
    b = write_run_plots(tmp_path / "b", _history(), initial, initial, gt)
    assert not np.array_equal(_image(a[2]), _image(b[2]))  # other cameras, other frustums
    assert np.array_equal(_image(a[0]), _image(b[0]))  # same history, same PSNR plot


def test_no_matplotlib_writes_nothing(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib") or name.startswith("mpl_toolkits"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    initial, refined, gt = _poses()
    assert write_run_plots(tmp_path, _history(), initial, refined, gt) == []
    assert not (tmp_path / "plots").exists()


def test_comparison_panel(tmp_path):
    g = torch.Generator().manual_seed(0)
    target = torch.rand(20, 30, 3, generator=g)
    render = target.clone()
    render[5, 7] = (target[5, 7] + 0.1).clamp(max=1.0)
    path = save_comparison_panel(tmp_path / "images" / "val_r_0.png", render, target.numpy())
    panel = iio.imread(path).astype(np.float64) / 255.0
    assert panel.shape == (20, 3 * 30 + 2 * 2, 3)
    np.testing.assert_allclose(panel[:, :30], render.numpy(), atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(panel[:, 32:62], target.numpy(), atol=0.5 / 255 + 1e-6)
    error = panel[:, 64:]
    expected = np.clip(np.abs(render.numpy() - target.numpy()) * ERROR_GAIN, 0, 1)
    np.testing.assert_allclose(error, expected, atol=0.5 / 255 + 1e-6)
    assert error[5, 7].max() > 0.3 and np.delete(error.reshape(-1, 3), 5 * 30 + 7, 0).max() == 0
    with pytest.raises(ValueError, match="two \\[H, W, 3\\] images"):
        save_comparison_panel(tmp_path / "x.png", render, target[:10])
