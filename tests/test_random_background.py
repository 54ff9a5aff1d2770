"""``--train-background random``: the loaders keep alpha, the sampler re-composites each training
pixel on a random colour, and a run trains with it (issue 9: silhouettes that locate cameras)."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from taichi_nerf.data import PixelSampler, load_scene


def _write_scene(root, rgb_only=False, n=3, h=4, w=6):
    rng = np.random.default_rng(int(torch.randint(0, 2**31, ())))
    (root / "train").mkdir(parents=True)
    frames, written = [], []
    for i in range(n):
        img = rng.integers(0, 256, size=(h, w, 3 if rgb_only else 4), dtype=np.uint8)
        if not rgb_only:
            img[:2, :2, 3] = 255  # opaque and transparent pixels in every image
            img[2:, 4:, 3] = 0
        iio.imwrite(root / "train" / f"r_{i}.png", img)
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": np.eye(4).tolist()})
        written.append(img)
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.7,
                                                            "frames": frames}))
    return np.stack(written)


@pytest.mark.parametrize("downscale", [1, 2])
def test_loader_keeps_alpha_downscaled_like_the_colours(tmp_path, downscale):
    written = _write_scene(tmp_path / "s")
    train = load_scene("s", data_dir=tmp_path, splits=("train",), downscale=downscale)["train"]
    assert train.alphas is not None and train.alphas.dtype == torch.uint8
    assert train.alphas.shape == train.images.shape[:3]
    alpha = written[..., 3].astype(np.float64) / 255.0
    if downscale == 2:
        n, h, w = alpha.shape
        alpha = alpha.reshape(n, h // 2, 2, w // 2, 2).mean((2, 4))
    np.testing.assert_array_equal(train.alphas.numpy(), np.round(alpha * 255).astype(np.uint8))


def test_loader_without_alpha_has_none(tmp_path):
    _write_scene(tmp_path / "s", rgb_only=True)
    assert load_scene("s", data_dir=tmp_path, splits=("train",))["train"].alphas is None


def test_random_background_recomposites_exactly(tmp_path):
    written = _write_scene(tmp_path / "s")
    white = torch.ones(3)
    train = load_scene("s", data_dir=tmp_path, splits=("train",))["train"]
    seed = int(torch.randint(0, 2**31, ()))
    sampler = PixelSampler(train.images, seed=seed, alphas=train.alphas)
    cams, pixels, rgb = sampler.sample(2000)
    colours, target = sampler.random_background(cams, pixels, rgb, white)
    assert colours.shape == target.shape == (2000, 3)
    assert 0 <= colours.min() and colours.max() <= 1 and colours.std() > 0.2  # random, not fixed
    rgba = torch.from_numpy(written)[cams, pixels[:, 1], pixels[:, 0]].double() / 255.0
    expected = rgba[:, :3] * rgba[:, 3:] + colours.double() * (1 - rgba[:, 3:])
    # The loader's uint8 rounding of the white composite is the only difference.
    torch.testing.assert_close(target.double(), expected, atol=0.5 / 255 + 1e-6, rtol=0)
    opaque, clear = rgba[:, 3] == 1, rgba[:, 3] == 0
    assert opaque.any() and torch.equal(target[opaque], rgb[opaque])
    assert clear.any() and torch.allclose(target[clear], colours[clear])


def test_random_background_draws_resume_exactly(tmp_path):
    _write_scene(tmp_path / "s")
    train = load_scene("s", data_dir=tmp_path, splits=("train",))["train"]
    a = PixelSampler(train.images, seed=3, alphas=train.alphas)
    a.random_background(*a.sample(10), torch.ones(3))
    state = a.state_dict()
    b = PixelSampler(train.images, seed=0, alphas=train.alphas)
    b.load_state_dict(state)
    for s in (a, b):
        s.batch = s.sample(50)
    assert torch.equal(a.random_background(*a.batch, torch.ones(3))[0],
                       b.random_background(*b.batch, torch.ones(3))[0])


def test_random_background_needs_alphas():
    images = torch.randint(0, 256, (2, 3, 4, 3), dtype=torch.uint8)
    with pytest.raises(ValueError, match="no alphas"):
        PixelSampler(images).random_background(*PixelSampler(images).sample(4), torch.ones(3))
    with pytest.raises(ValueError, match="alphas must be uint8"):
        PixelSampler(images, alphas=torch.zeros(2, 3, 5, dtype=torch.uint8))
