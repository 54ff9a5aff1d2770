"""TrainConfig presets, validation, naming and the tyro command line (no training)."""

import dataclasses

import pytest
import torch
import tyro

from taichi_nerf.training.config import (
    PRESETS,
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    experiment_name,
    resolve_config,
    resolve_device,
)

CPU = torch.device("cpu")


def test_vanilla_preset_has_the_seed_values():
    cfg = resolve_config(TrainConfig(model="vanilla"), CPU)
    assert (cfg.pose_lr, cfg.pose_opt_delay, cfg.batch_size, cfg.num_iters, cfg.lr) == (
        1e-4, 1000, 1024, 50000, 5e-4)


def test_ngp_preset_on_cpu_uses_the_cpu_variant_and_flags_win():
    cfg = resolve_config(TrainConfig(), CPU)
    assert cfg.ngp.n_levels == PRESETS["ngp_cpu"]["ngp"]["n_levels"]
    assert cfg.num_iters == PRESETS["ngp_cpu"]["num_iters"]
    cfg = resolve_config(TrainConfig(lr=0.5, num_iters=7, pose_lr=0.2), CPU)
    assert (cfg.lr, cfg.num_iters, cfg.pose_lr) == (0.5, 7, 0.2)
    # the final learning rates follow a changed start rate with the preset's ratio
    preset = PRESETS["ngp_cpu"]
    assert cfg.lr_final == pytest.approx(0.5 * preset["lr_final"] / preset["lr"])
    assert cfg.pose_lr_final == pytest.approx(0.2 * preset["pose_lr_final"] / preset["pose_lr"])


def test_clean_init_takes_the_presets_clean_pose_lr_unless_given():
    preset = PRESETS["ngp_cpu"]
    clean = resolve_config(TrainConfig(init_mode="clean"), CPU)
    noisy = resolve_config(TrainConfig(init_mode="noisy"), CPU)
    assert clean.pose_lr == preset["clean_pose_lr"] < noisy.pose_lr == preset["pose_lr"]
    ratio = preset["pose_lr_final"] / preset["pose_lr"]
    assert clean.pose_lr_final == pytest.approx(clean.pose_lr * ratio)
    assert noisy.pose_lr_final == preset["pose_lr_final"]
    given = resolve_config(TrainConfig(init_mode="clean", pose_lr=0.02, pose_lr_final=0.01), CPU)
    assert (given.pose_lr, given.pose_lr_final) == (0.02, 0.01)
    # a capture (poses not ground truth) is clean by default; resolving again changes nothing
    capture = resolve_config(TrainConfig(), CPU, poses_are_ground_truth=False)
    assert capture.pose_lr == preset["clean_pose_lr"]
    assert resolve_config(capture, CPU) == capture
    vanilla = resolve_config(TrainConfig(model="vanilla", init_mode="clean"), CPU)
    assert vanilla.pose_lr == PRESETS["vanilla"]["pose_lr"]  # no clean rate: the seed's value


def test_clean_init_poses_wait_a_quarter_of_the_steps_unless_given():
    frac = PRESETS["ngp_cpu"]["clean_pose_delay_frac"]
    clean = resolve_config(TrainConfig(init_mode="clean", num_iters=800), CPU)
    assert clean.pose_opt_delay == int(frac * 800) > PRESETS["ngp_cpu"]["pose_opt_delay"]
    noisy = resolve_config(TrainConfig(init_mode="noisy", num_iters=800), CPU)
    assert noisy.pose_opt_delay == PRESETS["ngp_cpu"]["pose_opt_delay"]
    given = resolve_config(TrainConfig(init_mode="clean", pose_opt_delay=7), CPU)
    assert given.pose_opt_delay == 7
    assert resolve_config(clean, CPU) == clean  # resolving again changes nothing
    vanilla = resolve_config(TrainConfig(model="vanilla", init_mode="clean"), CPU)
    assert vanilla.pose_opt_delay == PRESETS["vanilla"]["pose_opt_delay"]


def test_travel_boost_comes_with_camera_adam_only():
    assert resolve_config(TrainConfig(), CPU).pose_travel_boost == \
        PRESETS["ngp_cpu"]["pose_travel_boost"]
    assert resolve_config(TrainConfig(pose_optimizer="adam"), CPU).pose_travel_boost == 1.0
    assert resolve_config(TrainConfig(model="vanilla"), CPU).pose_travel_boost == 1.0
    assert resolve_config(TrainConfig(pose_travel_boost=2.5), CPU).pose_travel_boost == 2.5
    # a run saved before the boost existed resumes without it
    old = config_to_dict(resolve_config(TrainConfig(), CPU))
    del old["pose_travel_boost"]
    assert config_from_dict(old).pose_travel_boost == 1.0


def test_edge_sampling_for_noisy_poses_and_uniform_pixels_for_given_ones():
    noisy = resolve_config(TrainConfig(), CPU)
    assert (noisy.edge_sampling, noisy.edge_sampling_start) == (
        PRESETS["ngp_cpu"]["edge_sampling"], PRESETS["ngp_cpu"]["edge_sampling_start"])
    assert noisy.edge_sampling > 0
    assert resolve_config(TrainConfig(init_mode="clean"), CPU).edge_sampling == 0.0
    assert resolve_config(TrainConfig(init_mode="clean", edge_sampling=0.3),
                          CPU).edge_sampling == 0.3
    assert resolve_config(TrainConfig(model="vanilla"), CPU).edge_sampling == 0.0
    for mode in ("clean", "noisy"):
        resolved = resolve_config(TrainConfig(init_mode=mode), CPU)
        assert resolve_config(resolved, CPU) == resolved


def test_runs_saved_before_edge_sampling_resume_with_uniform_pixels():
    old = config_to_dict(resolve_config(TrainConfig(), CPU))
    del old["edge_sampling"], old["edge_sampling_start"]
    again = config_from_dict(old)
    assert again.edge_sampling == 0.0 and again.edge_sampling_start == 0.0


def test_default_translation_noise_is_one_percent():
    cfg = resolve_config(TrainConfig(), CPU)
    assert cfg.translation_noise_pct == 1.0 and cfg.translation_noise is None


@pytest.mark.parametrize("bad, match", [
    (dict(translation_noise=0.1, translation_noise_pct=1.0), "not both"),
    (dict(rotation_noise=-1.0), "rotation-noise"),
    (dict(lr=0.0), "--lr"),
    (dict(num_iters=0), "num-iters"),
    (dict(pose_opt_delay=-1), "pose-opt-delay"),
    (dict(pose_travel_boost=0.5), "pose-travel-boost"),
    (dict(pose_travel_boost=2.0, pose_optimizer="adam"), "pose-travel-boost needs"),
    (dict(pose_travel_full_rate=True, pose_optimizer="adam"), "pose-travel-full-rate needs"),
    (dict(pose_travel_full_rate=True, pose_travel_boost=1.0), "pose-travel-full-rate needs"),
    (dict(ngp=dataclasses.replace(TrainConfig().ngp, smooth_l1_beta=-0.1)), "smooth-l1-beta"),
    (dict(edge_sampling=1.5), "edge-sampling must"),
    (dict(edge_sampling_start=-0.5), "edge-sampling-start"),
])
def test_bad_combinations_are_one_line_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match) as info:
        resolve_config(TrainConfig(**bad), CPU)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_experiment_name_pattern():
    cfg = resolve_config(TrainConfig(scene="lego", rotation_noise=2.0), CPU)
    assert experiment_name(cfg, "20250101_120000") == (
        "lego_poseopt_noisyinit_rot2.0deg_trans1.0pct_20250101_120000")  # the seed's spelling
    clean = resolve_config(TrainConfig(init_mode="clean", fixed_poses=True), CPU)
    assert experiment_name(clean, "T").startswith("demo_fixed_cleaninit_rot0.0deg_trans0.0pct")
    capture = resolve_config(TrainConfig(scene="/data/my captures/garden/"), CPU)
    assert experiment_name(capture, "T").startswith("garden_poseopt_")


def test_config_dict_round_trip():
    cfg = resolve_config(TrainConfig(scene="x", background=(0.0, 0.5, 1.0)), CPU)
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg
    assert dataclasses.asdict(again)["ngp"] == dataclasses.asdict(cfg)["ngp"]


@pytest.mark.parametrize("spelling", ["-", "_"])
def test_cli_takes_both_flag_spellings(spelling):
    def flag(name):
        return "--" + name.replace("_", spelling)

    args = [flag("init_mode"), "clean", flag("no_learn_rotation"), flag("translation_noise_pct"),
            "2", flag("pose_opt_delay"), "5", flag("ngp.log2_table_size"), "12",
            flag("data_dir"), "/x", flag("experiment_name"), "e"]
    cfg = tyro.cli(TrainConfig, args=args)
    assert cfg.init_mode == "clean" and cfg.learn_rotation is False
    assert cfg.translation_noise_pct == 2.0 and cfg.pose_opt_delay == 5
    assert cfg.ngp.log2_table_size == 12 and cfg.data_dir == "/x" and cfg.experiment_name == "e"


def test_cli_has_every_flag_of_the_spec(capsys):
    with pytest.raises(SystemExit):
        tyro.cli(TrainConfig, args=["--help"])
    text = capsys.readouterr().out
    for name in ["--scene", "--data-dir", "--init-mode", "--rotation-noise", "--translation-noise",
                 "--translation-noise-pct", "--noise-seed", "--pose-lr", "--pose-opt-delay",
                 "--no-learn-rotation", "--no-learn-translation", "--batch-size", "--num-iters",
                 "--lr", "--val-every", "--device", "--model", "--output-dir",
                 "--experiment-name", "--resume", "--seed"]:
        assert name in text, name


def test_translation_delay_defaults_to_three_quarters_of_the_steps_for_given_poses():
    clean = resolve_config(TrainConfig(init_mode="clean", num_iters=300), CPU)
    noisy = resolve_config(TrainConfig(init_mode="noisy", num_iters=300), CPU)
    chosen = resolve_config(TrainConfig(init_mode="clean", num_iters=300, translation_delay=7), CPU)
    assert (clean.translation_delay, noisy.translation_delay, chosen.translation_delay) == \
        (225, 0, 7)
    old = config_to_dict(clean)
    del old["translation_delay"]  # a run saved before the flag existed moved both at once
    assert config_from_dict(old).translation_delay == 0


def test_smooth_x_grad_flag_reaches_the_hash_grid():
    from taichi_nerf.models import make_renderer

    cfg = tyro.cli(TrainConfig, args=["--ngp.x-grad", "smooth", "--ngp.log2-table-size", "10"])
    cfg = resolve_config(cfg, CPU, image_width=32)
    assert config_from_dict(config_to_dict(cfg)).ngp.x_grad == "smooth"  # checkpoints keep it
    renderer = make_renderer(cfg, [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], 0.1, 4.0)
    assert renderer.field.encoding.x_grad == "smooth"
    with pytest.raises(SystemExit):
        tyro.cli(TrainConfig, args=["--ngp.x-grad", "cosine"])
