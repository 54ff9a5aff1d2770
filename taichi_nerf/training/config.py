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

from taichi_nerf.training.presets import PRESETS, preset_help, preset_name

__all__ = ["PRESETS", "ConfigError", "EvalConfig", "NGPConfig", "TrainConfig", "VanillaConfig",
           "config_from_dict", "config_to_dict", "experiment_name", "preset_help", "preset_name",
           "resolve_config", "resolve_device"]


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
    early pose gradients are smooth; ``0 0`` (the presets) switches it off."""
    c2f_min_levels: int = 2
    """Hash levels active before the coarse-to-fine window opens."""
    x_grad: Literal["exact", "smooth"] = "exact"
    """The hash grid's gradient in the sample positions (what reaches the poses): ``exact``
    (trilinear), or ``smooth``, the cosine-weighted blend's derivative (Heo et al., ICML 2023),
    continuous across cell faces; the rendered values are the same."""
    smooth_l1_beta: float = 0.0
    """> 0: train on the smooth-L1 (Huber) photometric loss with this threshold (colours in
    [0, 1]; errors above it count linearly, so outlier pixels pull less); 0: the MSE."""
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

    def coarse_to_fine_window(self) -> tuple[int, int] | None:
        """The ``(start, end)`` level window, or None when it is off (``0 0`` or not set)."""
        c2f = self.coarse_to_fine
        return None if c2f is None or tuple(c2f) == (0, 0) else (int(c2f[0]), int(c2f[1]))


@dataclasses.dataclass
class VanillaConfig:
    """Original NeRF (``--model vanilla``) sizes: the paper's by default."""

    num_coarse: int = 64
    """Stratified samples per ray (coarse network)."""
    num_fine: int = 128
    """Importance samples per ray (fine network; 0 = coarse only)."""
    pos_freqs: int = 10
    """Positional-encoding frequencies of the positions."""
    dir_freqs: int = 4
    """Positional-encoding frequencies of the view directions."""
    width: int = 256
    """MLP width."""
    depth: int = 8
    """MLP layers."""
    skip: int | None = 4
    """Layer after which the input is concatenated again (None: no skip)."""
    eval_chunk: int = 4096
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
    holdout_every: int = 8
    """Captures (COLMAP, one transforms.json): every Nth image is held out as the test (= val)
    set, as nerfstudio and Mip-NeRF 360 do. Blender scenes have their own splits."""

    # --- initial poses ---
    init_mode: Literal["clean", "noisy"] | None = None
    """Start from the dataset poses (clean) or from perturbed ones (noisy). Default: noisy for
    synthetic scenes with ground-truth poses (demo, Blender), clean for captures (COLMAP,
    transforms.json): a capture's own poses are refined, never perturbed unless asked."""
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
    """Adam learning rate of the pose parameters (of the latent ``z`` with camp)."""
    pose_lr_final: float | None = None
    """Pose learning rate at the last step (exponential decay after the warm-up)."""
    pose_lr_warmup: int | None = None
    """Steps of linear learning-rate warm-up once the poses start moving."""
    pose_opt_delay: int | None = None
    """Steps before the poses start to move (the field first learns a rough scene). Default:
    the preset's, and with --init-mode clean under the ngp presets 1/4 of the steps (given poses
    drift less when they wait for a sharper field; BENCHMARKS.md)."""
    learn_rotation: bool = True
    """Optimise the camera rotations."""
    learn_translation: bool = True
    """Optimise the camera positions."""
    fixed_poses: bool = False
    """Learn no pose at all (the baselines of examples/train.py)."""
    pose_mode: Literal["off", "rotation", "translation", "both"] | None = None
    """What of the poses is learned; filled from --fixed-poses / --no-learn-rotation /
    --no-learn-translation when not given (the trainer reads only this)."""
    pose_preconditioning: Literal["none", "camp", "orbit", "pivot"] | None = None
    """camp: Adam steps latent z with (omega, dt) = P z, P = (J^T J + damping)^-1/2 from the
    Jacobian of each camera's frustum-point projections (CamP); orbit: z = turns about a point on
    the camera's optical axis (at the scene centre's depth) and shifts in camera axes; pivot: the
    same turns, world-axis shifts; none: Adam on the deltas."""
    pose_optimizer: Literal["adam", "camera_adam"] | None = None
    """camera_adam (the ngp presets): Adam with a full 6x6 second moment per camera, whitening
    each camera's step in the images' own metric (taichi_nerf/training/camera_adam.py); adam:
    torch's Adam on the pose parameters (the vanilla preset)."""
    pose_travel_boost: float | None = None
    """camera_adam: the largest per-camera multiplier of the pose step, doubled for a camera
    whose rotation keeps moving the same way window after window (a large error still being
    travelled), halved back toward 1 when it jitters (1 = off; camera_adam.py)."""
    pose_travel_full_rate: bool | None = None
    """camera_adam with a travel boost: the multiplier's cap also grows as the pose lr decays, up
    to pose_lr / (current pose lr), so a camera that keeps travelling can step at the starting
    rate to the end (a far camera is not stranded by the schedule); jittering ones are unchanged."""
    orbit_delay: int = 0
    """With --pose-preconditioning orbit/pivot: the turns about the pivot (the weakly seen orbit
    of a camera about what it looks at) stay frozen until this step, while roll and shifts move
    from --pose-opt-delay (0: all parts move together)."""
    translation_delay: int | None = None
    """Steps before the camera positions start to move (the rotations move from
    --pose-opt-delay). Default: 3/4 of the steps with --init-mode clean (given poses: positions
    wait until the field is sharp, which drifts less; BENCHMARKS.md), 0 with noisy. Not with a
    --pose-preconditioning latent."""
    pose_gauge: Literal["free", "shift", "centres", "fixed", "rig"] | None = None
    """How the rig's global rigid motion (which the images hardly see: the gauge) is learned.
    free: as part of each camera's delta; shift: free, plus one shift of every camera centre
    learned from the whole batch (at the pose lr, not delayed by --translation-delay), so a drift
    of the field as a whole is followed by the positions, not by turning the cameras; centres: the
    rigid motion fitted to the camera centres' moves is removed after every pose step (any
    parameterisation); fixed: the same, fitted in CamP's whitened metric (needs camp); rig:
    removed from the per-camera deltas and learned as one shared motion of the whole rig (plain
    Adam at --rig-lr)."""
    rig_lr: float = 3e-3
    """Learning rate of the shared rig motion (pose_gauge=rig; radians, and rig radii)."""
    camp_damping: float = 0.1
    """Damping of the CamP preconditioner, relative to the mean eigenvalue of J^T J."""
    pose_grad_clip: float | None = None
    """Max gradient norm of the pose parameters (0 = off)."""
    pose_average: float | None = None
    """Fraction of the pose steps, at the end, whose running mean becomes the final poses
    (Polyak averaging: the noise-driven jitter of the last steps averages out; 0 = off, the last
    step's poses)."""
    pose_prior: float = 0.0
    """Weight of an L2 penalty on the pose deltas (radians, scene units) added to the loss."""
    sampler: Literal["uniform", "per_camera"] | None = None
    """uniform: pixels uniformly over all images; per_camera: every camera gets floor(B/N)
    rays per step, the remainder at random."""
    edge_sampling: float | None = None
    """Share of the pixel-draw weight put on image edges, in [0, 1]: within each image a pixel
    is drawn with weight (1 - s) + s * edge / mean edge (Sobel gradient magnitude), so more
    rays land where the image changes, which is where a pose shows; 0 = uniform."""
    edge_sampling_start: float | None = None
    """Fraction of the steps drawn uniformly before --edge-sampling starts (edges of the target
    images say little while a camera is still pixels off)."""
    pose_relocalize: float | None = None
    """At this fraction of the steps, once: cameras whose photometric error is an outlier (the
    field disowns them) get their rotation searched on a grid (+-24 deg, then finer) and take
    the best one if it halves their error (training/relocalize.py); 0 = off."""

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
    vanilla: VanillaConfig = dataclasses.field(default_factory=VanillaConfig)
    """Original-NeRF settings."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour (RGBA images are composited on it; the renderer uses it too)."""
    train_background: Literal["fixed", "random"] = "fixed"
    """Colour behind the training pixels of images with alpha: fixed (--background) or random
    (a new colour per ray, re-composited from the alpha, as instant-ngp and nerfacc train; the
    field cannot then paint empty space the background's colour). Validation, test and
    renders always use --background. Images without alpha always train on --background."""

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
    viewer: bool = False
    """Serve a live web viewer (viser; pip install 'taichi-nerf[viewer]') while training: the
    cameras, the render of your own view, live numbers, pause / resume, save a checkpoint now."""
    viewer_port: int = 8080
    """Port of the --viewer web server."""
    viewer_host: str = "127.0.0.1"
    """Address the --viewer server binds to (0.0.0.0: reachable from other machines)."""
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    """Evaluation after training."""


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when torch sees a GPU, else cpu; ``cuda`` without a GPU is a ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    if device not in ("cuda", "cpu"):
        raise ConfigError(f"--device must be cuda, cpu or auto, got {device!r}")
    return torch.device(device)


def _fill(target: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if getattr(target, key) is None:
            setattr(target, key, tuple(value) if isinstance(value, list) else value)


def _pose_mode(cfg: TrainConfig) -> str:
    from_flags = ("off" if cfg.fixed_poses else
                  {(True, True): "both", (True, False): "rotation", (False, True): "translation",
                   (False, False): "off"}[(cfg.learn_rotation, cfg.learn_translation)])
    if cfg.pose_mode is None:
        return from_flags
    if cfg.pose_mode not in ("off", "rotation", "translation", "both"):
        raise ConfigError(f"--pose-mode must be off, rotation, translation or both, "
                          f"got {cfg.pose_mode!r}")
    if (cfg.fixed_poses or not cfg.learn_rotation or not cfg.learn_translation) and \
            cfg.pose_mode != from_flags:
        raise ConfigError(f"--pose-mode {cfg.pose_mode} contradicts --fixed-poses / "
                          f"--no-learn-rotation / --no-learn-translation; give one of them")
    return cfg.pose_mode


def resolve_config(config: TrainConfig, device: torch.device | None = None,
                   image_width: int | None = None,
                   poses_are_ground_truth: bool = True) -> TrainConfig:
    """Fill every ``None`` field from the preset, derive the rest, check it all; a new config.

    This is the one place where configuration is interpreted: the preset values, the learned
    pose parts (``pose_mode``), the marching step (from ``image_width``, when given), the final
    learning rates. A resolved config resolves to itself, so resume goes through here too.

    Raises:
        ConfigError: conflicting or out-of-range flags (one line naming the fix).
    """
    if device is None:
        device = resolve_device(config.device)
    preset = PRESETS[preset_name(config.model, device)]
    cfg = dataclasses.replace(config, ngp=dataclasses.replace(config.ngp),
                              vanilla=dataclasses.replace(config.vanilla),
                              eval=dataclasses.replace(config.eval))
    if cfg.init_mode is None:
        cfg.init_mode = "noisy" if poses_are_ground_truth else "clean"
    if cfg.init_mode == "clean":
        _fill_given_poses(cfg, preset)
    _fill(cfg, {k: v for k, v in preset.items() if k != "ngp" and not k.startswith("clean_")})
    _fill(cfg.ngp, PRESETS["ngp_cpu" if device.type == "cpu" else "ngp"]["ngp"])
    if config.lr is not None and config.lr_final is None:
        cfg.lr_final = cfg.lr * preset["lr_final"] / preset["lr"]
    if cfg.pose_lr != preset["pose_lr"] and config.pose_lr_final is None:
        cfg.pose_lr_final = cfg.pose_lr * preset["pose_lr_final"] / preset["pose_lr"]
    if config.pose_travel_boost is None and cfg.pose_optimizer != "camera_adam":
        cfg.pose_travel_boost = 1.0  # (a camera_adam option: off for --pose-optimizer adam)
    if config.pose_relocalize is None and (cfg.pose_preconditioning != "none"
                                           or cfg.pose_gauge in ("fixed", "rig")):
        cfg.pose_relocalize = 0.0  # (the plain deltas only: off with a latent or a rig gauge)
    if cfg.ngp.marching_steps is None and image_width is not None:
        cfg.ngp.marching_steps = auto_marching_steps(image_width)
    if cfg.ngp.coarse_to_fine is not None:
        cfg.ngp.coarse_to_fine = tuple(int(v) for v in cfg.ngp.coarse_to_fine)
    cfg.pose_mode = _pose_mode(cfg)
    if cfg.translation_delay is None:
        cfg.translation_delay = 3 * cfg.num_iters // 4 if cfg.init_mode == "clean" else 0
    if cfg.translation_noise is not None and cfg.translation_noise_pct is not None:
        raise ConfigError(
            "give either --translation-noise (scene units) or --translation-noise-pct, not both"
        )
    if cfg.translation_noise is None and cfg.translation_noise_pct is None:
        cfg.translation_noise_pct = 1.0
    _check_ranges(cfg)
    return cfg


def _fill_given_poses(cfg: TrainConfig, preset: dict[str, Any]) -> None:
    """The preset's ``clean_*`` values for given poses (``--init-mode clean``), where the flag is
    unset: a smaller pose step (it drifts less), a start at a fraction of the steps (the field
    is sharper by then), uniform pixels (edge sampling cost the demo 0.26 dB with true poses)."""
    if cfg.pose_lr is None and "clean_pose_lr" in preset:
        cfg.pose_lr = preset["clean_pose_lr"]
    if cfg.pose_opt_delay is None and "clean_pose_delay_frac" in preset:
        num_iters = cfg.num_iters if cfg.num_iters is not None else preset["num_iters"]
        cfg.pose_opt_delay = int(preset["clean_pose_delay_frac"] * num_iters)
    if cfg.edge_sampling is None and "clean_edge_sampling" in preset:
        cfg.edge_sampling = preset["clean_edge_sampling"]


def _check_ranges(cfg: TrainConfig) -> None:
    """Every number a flag can set, range-checked here, before any data is read or any step run
    (a bad value must not surface hours later as a crash or a meaningless metric)."""

    def value_of(path: str) -> Any:
        target = cfg
        for part in path.split("."):
            target = getattr(target, part)
        return target

    def refuse(path: str, rule: str, value: Any) -> None:
        shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
        raise ConfigError(f"--{path.replace('_', '-')} must be {rule}, got {shown}")

    optional = {"translation_noise", "translation_noise_pct", "stop_after", "ngp.marching_steps",
                "eval.num_test_views", "vanilla.skip"}
    minimums = (
        (0, ("rotation_noise", "translation_noise", "translation_noise_pct", "pose_opt_delay",
             "pose_lr_warmup", "orbit_delay", "translation_delay", "pose_grad_clip",
             "field_grad_clip", "pose_prior",
             "camp_damping", "keep_checkpoints", "ngp.c2f_min_levels", "ngp.target_samples",
             "vanilla.num_fine", "vanilla.pos_freqs", "vanilla.dir_freqs", "vanilla.skip",
             "eval.refine_steps")),
        (1, ("pose_travel_boost", "batch_size", "num_iters", "val_every", "num_val_views",
             "log_every", "downscale", "stop_after", "ngp.n_levels", "ngp.n_features",
             "ngp.log2_table_size", "ngp.base_resolution", "ngp.finest_resolution", "ngp.hidden_dim",
             "ngp.grid_resolution", "ngp.marching_steps", "ngp.max_samples_per_ray",
             "ngp.max_batch_rays", "ngp.eval_chunk", "vanilla.num_coarse", "vanilla.width",
             "vanilla.depth", "vanilla.eval_chunk", "eval.num_test_views", "eval.refine_rays")),
    )
    for low, paths in minimums:
        for path in paths:
            value = value_of(path)
            if value is None and path in optional:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not (math.isfinite(value) and value >= low):
                refuse(path, f">= {low}", value)
    # Adam moves each parameter by about lr per step: above 10 a run can only diverge (and
    # near float32's limit torch's Adam itself overflows).
    for path in ("lr", "pose_lr", "lr_final", "pose_lr_final", "rig_lr", "eval.refine_lr"):
        value = value_of(path)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= 10):
            refuse(path, "a finite number in (0, 10]", value)
    if cfg.ngp.finest_resolution < cfg.ngp.base_resolution:
        refuse("ngp.finest_resolution", f">= --ngp.base-resolution ({cfg.ngp.base_resolution})",
               cfg.ngp.finest_resolution)
    if cfg.vanilla.skip is not None and cfg.vanilla.skip >= cfg.vanilla.depth:
        refuse("vanilla.skip", f"below --vanilla.depth ({cfg.vanilla.depth}) or None",
               cfg.vanilla.skip)
    if not (isinstance(cfg.holdout_every, int) and cfg.holdout_every >= 2):
        refuse("holdout_every", ">= 2 (every Nth capture image is held out)", cfg.holdout_every)
    if cfg.eval.test_time_refine and cfg.eval.refine_steps < 1:
        refuse("eval.refine_steps", ">= 1 with --eval.test-time-refine (or drop that flag)",
               cfg.eval.refine_steps)
    if len(cfg.background) != 3 or not all(0.0 <= v <= 1.0 for v in cfg.background):
        refuse("background", "three numbers in [0, 1] (R G B)", tuple(cfg.background))
    if isinstance(cfg.viewer_port, bool) or not isinstance(cfg.viewer_port, int) or \
            not 1 <= cfg.viewer_port <= 65535:
        refuse("viewer_port", "a port number in 1..65535", cfg.viewer_port)
    if not isinstance(cfg.viewer_host, str) or not cfg.viewer_host.strip():
        refuse("viewer_host", "an address such as 127.0.0.1 or 0.0.0.0", repr(cfg.viewer_host))
    c2f = cfg.ngp.coarse_to_fine
    if c2f is not None and (len(c2f) != 2 or c2f[0] < 0 or (c2f != (0, 0) and c2f[1] <= c2f[0])):
        refuse("ngp.coarse_to_fine", "START END with 0 <= START < END (0 0 = off)", tuple(c2f))
    _check_fractions(cfg)
    if cfg.pose_travel_boost != 1 and cfg.pose_optimizer != "camera_adam":
        raise ConfigError("--pose-travel-boost needs --pose-optimizer camera_adam")
    if cfg.pose_relocalize > 0 and (cfg.pose_preconditioning != "none" or
                                    cfg.pose_gauge in ("fixed", "rig")):
        raise ConfigError("--pose-relocalize works on the plain pose deltas: use it with "
                          "--pose-preconditioning none and --pose-gauge free, centres or shift")
    if cfg.pose_travel_full_rate and cfg.pose_travel_boost == 1:
        raise ConfigError("--pose-travel-full-rate needs a travel boost: --pose-optimizer "
                          "camera_adam with --pose-travel-boost > 1")
    if cfg.pose_gauge == "rig" and cfg.pose_optimizer == "camera_adam":
        raise ConfigError("--pose-gauge rig needs --pose-optimizer adam (camera_adam steps "
                          "per-camera rows only, not the shared rig motion)")


def _check_fractions(cfg: TrainConfig) -> None:
    """The settings that are a share or a fraction, each in its interval."""
    for path, value, top, rule in (
            ("ngp.smooth_l1_beta", cfg.ngp.smooth_l1_beta, 1, "a threshold in [0, 1] (0: the MSE)"),
            ("pose_average", cfg.pose_average, None, "a fraction in [0, 1) (0: off)"),
            ("edge_sampling", cfg.edge_sampling, 1, "a share in [0, 1] (0: uniform pixels)"),
            ("edge_sampling_start", cfg.edge_sampling_start, 1,
             "a fraction of the steps in [0, 1]"),
            ("pose_relocalize", cfg.pose_relocalize, None, "a fraction in [0, 1) (0: off)")):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and 0 <= value and (value <= top if top else value < 1)):
            raise ConfigError(f"--{path.replace('_', '-')} must be {rule}, got {value}")


def auto_marching_steps(image_width: int) -> int:
    """Default ``marching_steps``: ``clamp(2 * width, 128, 1024)``."""
    return int(min(1024, max(128, 2 * image_width)))


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain JSON-able dict (tuples become lists) — also what checkpoints store."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of :func:`config_to_dict`; unknown keys are ignored (older/newer runs)."""
    data = dict(data)
    nested = {}
    for name, kind in (("ngp", NGPConfig), ("vanilla", VanillaConfig), ("eval", EvalConfig)):
        values = {k: v for k, v in (data.pop(name, None) or {}).items()
                  if k in kind.__dataclass_fields__}
        nested[name] = kind(**values)
    if nested["ngp"].coarse_to_fine is not None:
        nested["ngp"].coarse_to_fine = tuple(nested["ngp"].coarse_to_fine)
    fields = {k: v for k, v in data.items() if k in TrainConfig.__dataclass_fields__}
    if "pose_optimizer" not in data and "pose_lr" in data:  # a run from before camera_adam
        fields["pose_optimizer"] = "adam"
    if "pose_average" not in data and "pose_lr" in data:  # a run from before pose averaging
        fields["pose_average"] = 0.0
    if "translation_delay" not in data and "pose_lr" in data:  # before the translation delay
        fields["translation_delay"] = 0
    if "pose_travel_boost" not in data and "pose_lr" in data:  # before the travel boost
        fields["pose_travel_boost"] = 1.0
    if "pose_travel_full_rate" not in data and "pose_lr" in data:  # before the full rate
        fields["pose_travel_full_rate"] = False
    if "pose_relocalize" not in data and "pose_lr" in data:  # before relocalization
        fields["pose_relocalize"] = 0.0
    if "edge_sampling" not in data and "pose_lr" in data:  # before edge sampling
        fields["edge_sampling"], fields["edge_sampling_start"] = 0.0, 0.0
    if "background" in fields:
        fields["background"] = tuple(fields["background"])
    return TrainConfig(**fields, **nested)


def _number(value: float) -> str:
    return f"{value:.1f}"


def experiment_name(cfg: TrainConfig, timestamp: str) -> str:
    """``{scene}_poseopt_{init}init_rot{r}deg_trans{t}pct_{timestamp}`` as the seed spells it
    (one decimal: ``rot2.0deg_trans1.0pct``; ``fixed`` for baselines; a translation noise in scene
    units is written ``trans{t}units``). A scene given as a path is named after its folder."""
    kind = "fixed" if cfg.pose_mode == "off" or cfg.fixed_poses else "poseopt"
    scene = cfg.scene.rstrip("/\\").replace("\\", "/").split("/")[-1] or "scene"
    if cfg.init_mode == "clean":
        rot, trans = _number(0.0), f"{_number(0.0)}pct"
    else:
        rot = _number(cfg.rotation_noise)
        if cfg.translation_noise is not None:
            trans = f"{_number(cfg.translation_noise)}units"
        else:
            trans = f"{_number(cfg.translation_noise_pct)}pct"
    return f"{scene}_{kind}_{cfg.init_mode}init_rot{rot}deg_trans{trans}_{timestamp}"
