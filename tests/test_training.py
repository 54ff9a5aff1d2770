"""Joint training on the demo scene (32 px, a few hundred CPU steps): poses improve, clean poses
stay put, frozen parts stay bit-identical, the output tree is complete, resume is exact."""

import json
from pathlib import Path

import pytest
import torch

from taichi_nerf.training import EvalConfig, NGPConfig, TrainConfig, train_with_pose_optimization
from taichi_nerf.training.checkpoint import load_checkpoint

DATA = Path(__file__).resolve().parents[1] / "data"  # generated demo scene (git-ignored)
# Bit-identical on a quiet machine (measured). Under heavy CPU contention Taichi's parallel atomic
# adds (hash-table gradients) can sum in another order, and Adam turns such last-bit differences
# of near-zero pose gradients into steps of up to ~lr: 1.3e-3 measured at load 5 after 50 pose
# steps. The RNG and optimizer-state checks below are exact either way.
RESUME_POSE_TOL = 5e-3
CAMP_MARGIN = 0.8  # measured: see test_camp_preconditioning_beats_plain_adam_on_the_same_seed
# CamP's latent is in pixels: the main job's lr 0.5 (128 px) is 0.125 at 32 px in angle terms.
CAMP_LR_32PX = 0.125


def _config(tmp_path, **overrides):
    base = dict(data_dir=str(DATA), downscale=4, output_dir=str(tmp_path), progress=False,
                batch_size=1024, num_iters=300, val_every=150, log_every=50, pose_opt_delay=50,
                num_val_views=1, ngp=NGPConfig(target_samples=0),
                eval=EvalConfig(num_test_views=2), device="cpu")
    base.update(overrides)
    return TrainConfig(**base)


def _same(x, y):
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if torch.is_tensor(x):
        return torch.equal(x, y)
    return x == y


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("noisy")
    # 400 steps at 32 px; a constant pose lr (the presets decay it over much longer runs) and no
    # travel boost: on top of this already large constant step it hurts here (rotation error
    # 2.07 -> 2.49 deg with boost 4, 2.54 with 8; BENCHMARKS.md, 2026-12-03 morning)
    return train_with_pose_optimization(_config(
        tmp, init_mode="noisy", rotation_noise=3.0, translation_noise_pct=1.0, num_iters=400,
        val_every=200, pose_lr=5e-3, pose_lr_final=5e-3, pose_travel_boost=1.0))


@pytest.mark.slow
def test_noisy_init_halves_rotation_error_and_psnr_rises(noisy_run):
    metrics = noisy_run["metrics"]
    before = metrics["initial_pose_errors"]["rotation_error_mean"]
    after = metrics["pose_errors"]["rotation_error_mean"]
    assert before > 3.0
    assert after < 0.5 * before, (before, after)
    history = noisy_run["history"]
    assert history[-1]["train_psnr"] > history[0]["train_psnr"] + 5.0
    assert history[-1]["rotation_error_mean"] == pytest.approx(after)


@pytest.mark.slow
def test_output_tree_and_file_keys(noisy_run):
    run = noisy_run["output_dir"]
    assert run.name.startswith("demo_poseopt_noisyinit_rot3.0deg_trans1.0pct_")
    names = {p.name for p in run.iterdir()}
    assert {"checkpoint_200.pt", "checkpoint_400.pt", "checkpoint_best.pt",
            "checkpoint_latest.pt", "final_poses.pt", "experiment_config.json", "config.json",
            "metrics.json", "images", "logs"} <= names
    final = torch.load(run / "final_poses.pt", weights_only=True)
    assert {"initial_poses", "optimized_poses", "ground_truth_poses", "pose_errors"} <= set(final)
    for key in ("rotation_error_mean", "rotation_error_std", "translation_error_mean",
                "translation_error_std", "aligned_rotation_error_mean",
                "aligned_translation_error_mean", "aligned_barf_translation_error_mean"):
        assert key in final["pose_errors"], key
    assert final["optimized_poses"].shape == final["ground_truth_poses"].shape
    ckpt = torch.load(run / "checkpoint_latest.pt", weights_only=True)
    for key in ("step", "config", "renderer", "poses", "field_optimizer", "field_scheduler",
                "pose_optimizer", "pose_scheduler", "rng", "pose_errors", "val_metrics"):
        assert key in ckpt, key
    assert ckpt["step"] == 400 and "grid.occupancy" in ckpt["renderer"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["num_views"] == 2 and metrics["test_psnr"] > 10
    assert 0 < metrics["test_ssim"] <= 1
    assert sorted(p.name for p in (run / "images").glob("test_*.png")) == [
        "test_000.png", "test_001.png"]
    assert list((run / "images").glob("val_000200_*.png"))
    assert (run / "logs" / "train.log").read_text().count("step ") >= 2
    assert list((run / "logs").glob("events.out.tfevents.*"))
    config = json.loads((run / "config.json").read_text())
    assert config["lr"] > 0 and config["ngp"]["n_levels"] > 0  # presets filled in
    # keys of the result dict
    assert set(noisy_run) >= {"output_dir", "metrics", "history", "iters_per_sec",
                              "peak_memory_bytes", "final_pose_errors"}
    assert noisy_run["iters_per_sec"] > 0 and noisy_run["peak_memory_bytes"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, bound", [("adam", 0.1), ("camera_adam", 0.2)])
def test_clean_init_stays_clean(tmp_path, optimizer, bound):
    # 64 px (1 px = 0.62 deg) and a gentle pose lr: cameras at the truth stay within a fraction of
    # a pixel while the field is still blurry (at 32 px / lr 3e-3 they wander ~0.25 deg = 0.2 px).
    # camera_adam moves weak directions as fast as strong ones, so it wanders further early
    # (0.138 deg measured here; by 2000 steps on the main job's scene both end near 0.16 deg).
    result = train_with_pose_optimization(_config(
        tmp_path, init_mode="clean", downscale=2, num_iters=300, val_every=300,
        pose_opt_delay=100, pose_lr=5e-4, pose_lr_final=5e-5, pose_optimizer=optimizer))
    errors = result["final_pose_errors"]
    assert errors["rotation_error_mean"] < bound, errors["rotation_error_mean"]
    assert errors["translation_error_pct_mean"] < 1.0


@pytest.mark.slow
def test_no_learn_rotation_keeps_rotations_bit_identical(tmp_path):
    result = train_with_pose_optimization(_config(tmp_path, learn_rotation=False, num_iters=100,
                                                  val_every=100, pose_opt_delay=0))
    final = torch.load(result["output_dir"] / "final_poses.pt", weights_only=True)
    assert torch.equal(final["optimized_poses"][:, :, :3], final["initial_poses"][:, :, :3])
    assert not torch.equal(final["optimized_poses"][:, :, 3], final["initial_poses"][:, :, 3])


@pytest.mark.slow
@pytest.mark.parametrize("pose_average, pose_gauge, background, edges",  # 0.8: mid-average
                         [(0.0, "free", "fixed", 0.0), (0.8, "free", "fixed", 0.0),
                          (0.0, "shift", "fixed", 0.0), (0.0, "free", "random", 0.0),
                          (0.0, "free", "fixed", 0.5)])
def test_resume_matches_an_uninterrupted_run(tmp_path, pose_average, pose_gauge, background,
                                             edges):
    overrides = dict(num_iters=60, val_every=30, pose_opt_delay=10, experiment_name=None,
                     pose_average=pose_average, pose_gauge=pose_gauge,
                     train_background=background, edge_sampling=edges,
                     edge_sampling_start=0.75)  # edges from step 45 (of 60): after the resume
    whole = train_with_pose_optimization(_config(tmp_path / "a", **overrides))
    first = train_with_pose_optimization(_config(tmp_path / "b", stop_after=30, **overrides))
    assert first["metrics"] is None
    run = first["output_dir"]
    assert load_checkpoint(run / "checkpoint_latest.pt")["step"] == 30
    assert not (run / "final_poses.pt").exists()
    resumed = train_with_pose_optimization(_config(tmp_path / "b", resume=str(run), **overrides))
    assert resumed["output_dir"] == run
    a = torch.load(whole["output_dir"] / "final_poses.pt", weights_only=True)["optimized_poses"]
    b = torch.load(run / "final_poses.pt", weights_only=True)["optimized_poses"]
    assert torch.allclose(a, b, atol=RESUME_POSE_TOL), (a - b).abs().max()
    ca = load_checkpoint(whole["output_dir"] / "checkpoint_latest.pt")
    cb = load_checkpoint(run / "checkpoint_latest.pt")
    assert ca["step"] == cb["step"] == 60
    for key in ("sampler", "renderer", "torch"):
        assert _same(ca["rng"][key], cb["rng"][key]), key
    for opt in ("field_optimizer", "pose_optimizer"):
        steps_a = [float(v["step"]) for v in ca[opt]["state"].values()]
        steps_b = [float(v["step"]) for v in cb[opt]["state"].values()]
        assert steps_a == steps_b, opt
    assert ca["pose_scheduler"]["last_epoch"] == cb["pose_scheduler"]["last_epoch"]
    if pose_average:
        assert ca["pose_average"]["count"] == cb["pose_average"]["count"] == 40
    assert [h["step"] for h in resumed["history"]] == [h["step"] for h in whole["history"]]


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import taichi_nerf.training.trainer as trainer
    from taichi_nerf.models import NGPRenderer

    calls = {"n": 0}
    real_loss = NGPRenderer.training_loss

    def poisoned_loss(self, out, target):  # the model's loss goes NaN after 25 steps
        calls["n"] += 1
        loss, mse = real_loss(self, out, target)
        return (loss * float("nan"), mse) if calls["n"] > 25 else (loss, mse)

    monkeypatch.setattr(NGPRenderer, "training_loss", poisoned_loss)
    with pytest.raises(trainer.TrainingError, match="non-finite.*checkpoint_20.pt"):
        train_with_pose_optimization(_config(tmp_path, num_iters=40, val_every=20,
                                             experiment_name="nan"))
    run = tmp_path / "nan"
    assert load_checkpoint(run / "checkpoint_latest.pt")["step"] == 20
    assert not (run / "final_poses.pt").exists()
    assert "non-finite" in (run / "logs" / "train.log").read_text()


def test_a_capture_refines_its_own_poses_and_says_so(tmp_path):
    """A COLMAP capture: init from the given poses (no synthetic noise by default), the run is
    named after the capture folder, and the errors are labelled as movement from the input."""
    pytest.importorskip("pycolmap")
    from test_colmap import _write_capture  # tests/ is on sys.path (pytest prepend mode)

    scene = tmp_path / "my capture" / "garden"
    scene.mkdir(parents=True)
    _write_capture(scene, binary=True)
    result = train_with_pose_optimization(TrainConfig(
        scene=str(scene), output_dir=str(tmp_path / "out"), progress=False, num_iters=4,
        val_every=4, pose_opt_delay=0, num_val_views=1, device="cpu",
        eval=EvalConfig(num_test_views=1)))
    metrics = result["metrics"]
    assert result["output_dir"].name.startswith("garden_poseopt_cleaninit_")
    assert metrics["init_mode"] == "clean"
    assert metrics["initial_pose_errors"]["rotation_error_mean"] == 0.0
    assert metrics["pose_errors_against"].startswith("input_poses")
    assert (result["output_dir"] / "history.json").exists()


@pytest.mark.slow
def test_resume_with_camp_preconditioning_is_exact(tmp_path):
    overrides = dict(num_iters=40, val_every=20, pose_opt_delay=5, experiment_name=None,
                     pose_preconditioning="camp", sampler="per_camera", pose_lr=0.3,
                     pose_lr_final=0.03, pose_lr_warmup=5)
    whole = train_with_pose_optimization(_config(tmp_path / "a", **overrides))
    first = train_with_pose_optimization(_config(tmp_path / "b", stop_after=20, **overrides))
    resumed = train_with_pose_optimization(_config(tmp_path / "b", resume=str(first["output_dir"]),
                                                   **overrides))
    a = torch.load(whole["output_dir"] / "final_poses.pt", weights_only=True)
    b = torch.load(resumed["output_dir"] / "final_poses.pt", weights_only=True)
    assert torch.equal(a["optimized_poses"], b["optimized_poses"])
    state = load_checkpoint(resumed["output_dir"] / "checkpoint_latest.pt")
    assert state["poses"]["preconditioner"].shape == (100, 6, 6)
    assert not torch.equal(a["optimized_poses"], a["initial_poses"])


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured: at 32 px and 300 steps CamP ends at 3.95 deg "
                   "against 2.44 for plain Adam (at 128 px and 2000 steps it wins: BENCHMARKS.md); "
                   "strict, so a CamP that starts winning here must flip this test")
def test_camp_preconditioning_beats_plain_adam_on_the_same_seed(tmp_path):
    """Same seed, same small run: CamP (+ the rig motion removed in its whitened metric) ends
    with a clearly lower rotation error than plain Adam on the deltas (the default)."""
    common = dict(init_mode="noisy", rotation_noise=3.0, translation_noise_pct=1.0,
                  num_iters=300, val_every=300, pose_opt_delay=50)
    plain = train_with_pose_optimization(_config(tmp_path / "plain", **common))
    camp = train_with_pose_optimization(_config(
        tmp_path / "camp", pose_preconditioning="camp", pose_gauge="fixed",
        pose_lr=CAMP_LR_32PX, pose_lr_final=CAMP_LR_32PX / 100, **common))
    plain, camp = plain["final_pose_errors"], camp["final_pose_errors"]
    assert camp["rotation_error_mean"] < CAMP_MARGIN * plain["rotation_error_mean"], (
        camp["rotation_error_mean"], plain["rotation_error_mean"])
