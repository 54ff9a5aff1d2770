"""Training configuration: tyro-ready dataclasses with per-model presets.

Fields that a preset fills (``lr``, ``pose_lr``, ``batch_size``, ...) default to ``None``; a
``None`` means "take the value of the ``--model`` preset" (:data:`PRESETS`), so ``--model vanilla``
switches every default at once while any flag given on the command line still wins.
:func:`resolve_config` returns the filled-in copy the trainer uses (and writes to ``config.json``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Literal

import torch


class ConfigError(ValueError):
    """A user-caused configuration problem; the message is one line naming the fix."""


@dataclasses.dataclass
class NGPConfig:
    """Instant-NGP field and occupancy-grid marching settings (``--model ngp``)."""

    n_levels: int | None = None
    """Hash-grid levels (preset: 16; the CPU preset uses fewer)."""
    n_features: int = 2
    """Features per level."""
    log2_table_size: int | None = None
    """log2 of the hash-table entries per level (preset: 19 on CUDA, smaller on the CPU)."""
    base_resolution: int = 16
    """Coarsest grid resolution."""
    finest_resolution: int | None = None
    """Finest grid resolution (preset: 2048 on CUDA, 512 on the CPU)."""
    hidden_dim: int = 64
    """Width of the density and colour MLPs."""
    grid_resolution: int | None = None
    """Occupancy-grid cells per axis over the scene box (preset: 128; 64 on the CPU)."""
    marching_steps: int | None = None
    """Step size = sqrt(3) * (longest box side) / marching_steps, as instant-ngp's
    SQRT3 / NERF_STEPS (1024) in unit-cube coordinates. Default: 2 x the image width, clamped to
    [128, 1024] (1024 for 512 px and up, as instant-ngp; 256 for the 128 px demo), so a step is
    about half a pixel footprint at the scene centre and small images march cheaply."""
    coarse_to_fine: tuple[int, int] | None = None
    """(start, end) steps over which the hash levels fade in, coarse to fine (BARF's window), so
    early pose gradients are smooth (preset); ``--ngp.coarse-to-fine 0 0`` switches it off."""
    c2f_min_levels: int = 2
    """Hash levels active before the coarse-to-fine window opens."""
    max_samples_per_ray: int = 1024
    """Cap on samples per ray when marching."""
    target_samples: int | None = None
    """Samples per training step: the ray count adapts each step from the last step's
    samples per ray, as nerfacc does (a sample pruned as occluded counts 1/4: it cost only a
    no-grad density pass). 0 keeps ``--batch-size`` rays fixed."""
    max_batch_rays: int = 65536
    """Upper bound on the adapted ray count."""
    eval_chunk: int = 16384
    """Rays per chunk when rendering full images."""


@dataclasses.dataclass
class EvalConfig:
    """End-of-training (and ``examples/evaluate.py``) evaluation on the test split."""

    num_test_views: int | None = None
    """Test images to evaluate (all when not given)."""
    test_time_refine: bool = False
    """BARF's test-time pose refinement: a fresh zero delta per test view, Adam on its rays with the
    field frozen. Off by default; metrics.json records which was used."""
    refine_steps: int = 100
    """Adam steps per test view for test-time refinement."""
    refine_lr: float = 1e-3
    """Learning rate of test-time refinement."""
    refine_rays: int = 1024
    """Rays per refinement step."""


@dataclasses.dataclass
class TrainConfig:
    """Joint NeRF + camera-pose training (``train_with_pose_optimization``)."""

    # --- data ---
    scene: str = "demo"
    """Scene name: ``demo`` (built in, generated on first use) or a folder under the data dir,
    e.g. ``lego`` for nerf_synthetic/lego."""
    data_dir: str | None = None
    """Folder holding the scene (else $TAICHI_NERF_DATA, else ./data)."""
    downscale: int = 1
    """Integer image downscale (area average)."""

    # --- initial poses ---
    init_mode: Literal["clean", "noisy"] = "noisy"
    """Start from the dataset poses (clean) or from perturbed ones (noisy)."""
    rotation_noise: float = 3.0
    """Rotation noise std per axis, degrees (noisy init)."""
    translation_noise: float | None = None
    """Translation noise std in scene units (noisy init); give this or --translation-noise-pct."""
    translation_noise_pct: float | None = None
    """Translation noise std as % of each camera's distance from the origin (default 1)."""
    noise_seed: int = 0
    """Seed of the pose noise."""
    noise_protocol: Literal["gaussian", "barf"] = "gaussian"
    """gaussian: the noise above; barf: BARF's se(3) noise of std 0.15 on world-to-camera poses."""

    # --- pose optimisation ---
    pose_lr: float | None = None
    """Adam learning rate of the pose deltas."""
    pose_lr_final: float | None = None
    """Pose learning rate at the last step (exponential decay)."""
    pose_opt_delay: int | None = None
    """Steps before the poses start to move (the field first learns a rough scene)."""
    learn_rotation: bool = True
    """Optimise the camera rotations."""
    learn_translation: bool = True
    """Optimise the camera positions."""
    fixed_poses: bool = False
    """Learn no pose at all (the baselines of examples/train.py)."""
    pose_grad_clip: float = 0.1
    """Max gradient norm of the pose deltas (0 = off)."""

    # --- field optimisation ---
    model: Literal["ngp", "vanilla"] = "ngp"
    """Radiance field: ngp (hash grid, default) or vanilla (NeRF MLP, the seed's values)."""
    lr: float | None = None
    """Adam learning rate of the field."""
    lr_final: float | None = None
    """Field learning rate at the last step (exponential decay)."""
    field_grad_clip: float = 1.0
    """Max gradient norm of the field parameters (0 = off)."""
    batch_size: int | None = None
    """Rays per step (ngp: the first step's rays, then sized to --ngp.target-samples)."""
    num_iters: int | None = None
    """Training steps."""
    ngp: NGPConfig = dataclasses.field(default_factory=NGPConfig)
    """Instant-NGP settings."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour (RGBA images are composited on it; the renderer uses it too)."""

    # --- logging, output ---
    val_every: int | None = None
    """Steps between validations (val PSNR, pose errors, renders, checkpoint)."""
    num_val_views: int = 2
    """Val images rendered at each validation."""
    log_every: int = 25
    """Steps between history/TensorBoard scalar entries."""
    keep_checkpoints: int = 3
    """checkpoint_{step}.pt files kept (older ones removed; best and latest always kept; 0 = all)."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Where to train: cuda when a GPU is seen (auto), else cpu."""
    output_dir: str = "outputs"
    """Parent folder of the run folders."""
    experiment_name: str | None = None
    """Run folder name (default: {scene}_poseopt_{init}init_rot{r}deg_trans{t}pct_{timestamp})."""
    resume: str | None = None
    """Continue a run: a checkpoint file, a run folder, or ``latest``."""
    stop_after: int | None = None
    """Stop after this step (checkpoint saved) as if interrupted; continue with --resume."""
    seed: int = 0
    """Seed of the field initialisation and the pixel sampler."""
    progress: bool = True
    """Show the tqdm progress bar."""
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    """Evaluation after training."""


# Presets: values measured on the demo scene and lego (see README "Training defaults").
# "ngp_cpu" is the ngp preset's CPU variant (smaller tables, coarser marching, fewer steps).
PRESETS: dict[str, dict[str, Any]] = {
    "ngp": dict(
        lr=1e-2, lr_final=1e-3, pose_lr=3e-3, pose_lr_final=3e-4, pose_opt_delay=100,
        batch_size=4096, num_iters=5000, val_every=1000,
        ngp=dict(n_levels=16, log2_table_size=19, finest_resolution=2048, grid_resolution=128, target_samples=1 << 18),
    ),
    "ngp_cpu": dict(
        lr=1e-2, lr_final=1e-3, pose_lr=3e-3, pose_lr_final=3e-4, pose_opt_delay=100,
        batch_size=1024, num_iters=2000, val_every=500,
        ngp=dict(n_levels=8, log2_table_size=16, finest_resolution=512, grid_resolution=64, target_samples=1 << 15),
    ),
    # The seed's values.
    "vanilla": dict(
        lr=5e-4, lr_final=5e-5, pose_lr=1e-4, pose_lr_final=1e-6, pose_opt_delay=1000,
        batch_size=1024, num_iters=50000, val_every=2500,
        ngp=dict(n_levels=16, log2_table_size=19, finest_resolution=2048, grid_resolution=128, target_samples=0),
    ),
}


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when torch sees a GPU, else cpu; ``cuda`` without a GPU is a ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    if device not in ("cuda", "cpu"):
        raise ConfigError(f"--device must be cuda, cpu or auto, got {device!r}")
    return torch.device(device)


def preset_name(model: str, device: torch.device) -> str:
    """The preset for a model on a device (ngp on the CPU gets its CPU variant)."""
    if model == "ngp" and device.type == "cpu":
        return "ngp_cpu"
    return model


def resolve_config(config: TrainConfig, device: torch.device | None = None) -> TrainConfig:
    """Fill ``None`` fields from the preset and check the combination; returns a new config.

    Raises:
        ConfigError: conflicting or out-of-range flags (one line naming the fix).
    """
    if device is None:
        device = resolve_device(config.device)
    preset = PRESETS[preset_name(config.model, device)]
    cfg = dataclasses.replace(config, ngp=dataclasses.replace(config.ngp),
                              eval=dataclasses.replace(config.eval))
    for key, value in preset.items():
        if key == "ngp":
            for sub_key, sub_value in value.items():
                if getattr(cfg.ngp, sub_key) is None:
                    setattr(cfg.ngp, sub_key, sub_value)
        elif getattr(cfg, key) is None:
            setattr(cfg, key, value)
    if config.lr is not None and config.lr_final is None:
        cfg.lr_final = cfg.lr * preset["lr_final"] / preset["lr"]
    if config.pose_lr is not None and config.pose_lr_final is None:
        cfg.pose_lr_final = cfg.pose_lr * preset["pose_lr_final"] / preset["pose_lr"]

    if cfg.translation_noise is not None and cfg.translation_noise_pct is not None:
        raise ConfigError(
            "give either --translation-noise (scene units) or --translation-noise-pct, not both"
        )
    if cfg.translation_noise is None and cfg.translation_noise_pct is None:
        cfg.translation_noise_pct = 1.0
    for name in ("rotation_noise", "translation_noise", "translation_noise_pct"):
        value = getattr(cfg, name)
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    for name in ("lr", "pose_lr", "lr_final", "pose_lr_final"):
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {getattr(cfg, name)}")
    for name in ("batch_size", "num_iters", "val_every", "num_val_views", "log_every"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.pose_opt_delay < 0:
        raise ConfigError(f"--pose-opt-delay must be >= 0, got {cfg.pose_opt_delay}")
    if cfg.downscale < 1:
        raise ConfigError(f"--downscale must be >= 1, got {cfg.downscale}")
    if cfg.stop_after is not None and cfg.stop_after < 1:
        raise ConfigError(f"--stop-after must be >= 1, got {cfg.stop_after}")
    return cfg


def auto_marching_steps(image_width: int) -> int:
    """Default ``marching_steps``: ``clamp(2 * width, 128, 1024)``."""
    return int(min(1024, max(128, 2 * image_width)))


def learns_poses(cfg: TrainConfig) -> bool:
    """Whether any pose parameter is optimised."""
    return not cfg.fixed_poses and (cfg.learn_rotation or cfg.learn_translation)


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain JSON-able dict (tuples become lists) — also what checkpoints store."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of :func:`config_to_dict`; unknown keys are ignored (older/newer runs)."""
    data = dict(data)
    ngp = NGPConfig(**{k: v for k, v in data.pop("ngp", {}).items()
                       if k in NGPConfig.__dataclass_fields__})
    ev = EvalConfig(**{k: v for k, v in data.pop("eval", {}).items()
                       if k in EvalConfig.__dataclass_fields__})
    fields = {k: v for k, v in data.items() if k in TrainConfig.__dataclass_fields__}
    if "background" in fields:
        fields["background"] = tuple(fields["background"])
    return TrainConfig(**fields, ngp=ngp, eval=ev)


def experiment_name(cfg: TrainConfig, timestamp: str) -> str:
    """``{scene}_poseopt_{init}init_rot{r}deg_trans{t}pct_{timestamp}`` (``fixed`` for baselines;
    a translation noise in scene units is written ``trans{t}units``)."""
    kind = "fixed" if cfg.fixed_poses else "poseopt"
    scene = cfg.scene.replace("/", "_").replace("\\", "_")
    if cfg.init_mode == "clean":
        rot, trans = "0", "0pct"
    else:
        rot = f"{cfg.rotation_noise:g}"
        if cfg.translation_noise is not None:
            trans = f"{cfg.translation_noise:g}units"
        else:
            trans = f"{cfg.translation_noise_pct:g}pct"
    return f"{scene}_{kind}_{cfg.init_mode}init_rot{rot}deg_trans{trans}_{timestamp}"
