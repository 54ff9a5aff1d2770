"""Evaluate a run folder on the test split: PSNR, SSIM, pose errors (raw and Sim(3)-aligned).

    python examples/evaluate.py outputs/demo_poseopt_noisyinit_rot3deg_trans1pct_20250101_120000
    python examples/evaluate.py RUN --checkpoint best --test-time-refine

Writes RUN/metrics.json and RUN/images/test_*.png.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Literal

import torch
import tyro

from taichi_nerf.training import EvalConfig, TrainConfig, evaluate_run, resolve_config
from taichi_nerf.training.cli import guarded


@dataclasses.dataclass
class EvaluateArgs:
    """Evaluate a training run folder."""

    run_dir: tyro.conf.Positional[str]
    """The run folder (outputs/<experiment>)."""
    checkpoint: str = "latest"
    """latest, best, a step number, or a checkpoint path."""
    num_test_views: int | None = None
    """Test images to evaluate (all when not given)."""
    test_time_refine: bool = False
    """BARF test-time pose refinement (fresh zero delta per view, field frozen)."""
    refine_steps: int = 100
    """Adam steps per test view."""
    refine_lr: float = 1e-3
    """Refinement learning rate."""
    refine_rays: int = 1024
    """Rays per refinement step."""
    data_dir: str | None = None
    """Data root, if the scene is not where the run found it."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Where to render."""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(EvaluateArgs, args=argv, description=__doc__)
    eval_config = EvalConfig(num_test_views=args.num_test_views,
                             test_time_refine=args.test_time_refine,
                             refine_steps=args.refine_steps, refine_lr=args.refine_lr,
                             refine_rays=args.refine_rays)

    def run() -> int:
        # the range checks of training (--num-test-views 0, --refine-steps -1, ...)
        resolve_config(TrainConfig(eval=eval_config), torch.device("cpu"))
        metrics = evaluate_run(args.run_dir, args.checkpoint, eval_config, device=args.device,
                               data_dir=args.data_dir)
        summary = {k: metrics[k] for k in ("test_psnr", "test_ssim", "rotation_error_mean",
                                           "translation_error_mean",
                                           "aligned_rotation_error_mean",
                                           "aligned_translation_error_mean")}
        summary["test_time_refinement"] = metrics["test"]["test_time_refinement"]
        print(json.dumps(summary, indent=2))
        return 0

    return guarded(run)


def cli() -> None:
    """Console-script entry point: ``main()`` with ``sys.argv``, as the exit status."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
