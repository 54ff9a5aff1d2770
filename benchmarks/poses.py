"""Pose-accuracy benchmark: how well each pose-optimisation setting recovers the cameras.

Runs a grid of settings (CamP preconditioning, per-camera sampling, coarse-to-fine, the pose LR
schedule) x noise cases (3 deg/1 % = the README main job, 2 deg/1 %, 5 deg/2 %, BARF's se(3)
protocol, clean init) on the demo scene (128 px, the main job's budget) and on lego at 100 px
(``--downscale 4``, from ``$TAICHI_NERF_DATA``), on the CPU by default. Every row is a normal
``train_with_pose_optimization`` run built from ``TrainConfig`` alone.

For each row: mean / median rotation error in degrees **and pixels**, camera-centre error in
scene units and pixels at the scene centre, the Sim(3)-aligned errors, BARF's translation
metric, test PSNR, steps, wall time, and the rotation-error-vs-step history. JSON goes to
``benchmarks/results/poses_{scene}_{device}.json`` (rows are appended/replaced by name, so a grid
can be run in pieces), and ``--plot`` draws rotation error (px) vs step for every row.

    python benchmarks/poses.py --scene demo --settings baseline,camp --noise main
    python benchmarks/poses.py --scene lego --downscale 4 --num-iters 800 --noise 2deg,5deg,barf
    python benchmarks/poses.py --list          # the settings and noise cases
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# name -> TrainConfig overrides (on top of the preset). "preset" is whatever the preset does.
SETTINGS: dict[str, dict[str, Any]] = {
    "preset": {},
    "baseline": dict(pose_preconditioning="none", sampler="uniform", pose_lr_warmup=0),
    "camp": dict(pose_preconditioning="camp", sampler="uniform"),
    "orbit": dict(pose_preconditioning="orbit"),
    "pivot": dict(pose_preconditioning="pivot"),
    "per_camera": dict(pose_preconditioning="none", sampler="per_camera"),
    "camp_per_camera": dict(pose_preconditioning="camp", sampler="per_camera"),
}

NOISE: dict[str, dict[str, Any]] = {
    "main": dict(init_mode="noisy", rotation_noise=3.0, translation_noise_pct=1.0),
    "2deg": dict(init_mode="noisy", rotation_noise=2.0, translation_noise_pct=1.0),
    "5deg": dict(init_mode="noisy", rotation_noise=5.0, translation_noise_pct=2.0),
    "barf": dict(init_mode="noisy", noise_protocol="barf"),
    "clean": dict(init_mode="clean"),
    # Given poses slightly off (a decent calibration): run it with the clean-init defaults
    # (e.g. translation_delay=1500 at 2000 steps) to see what they do to real, small errors.
    "small": dict(init_mode="noisy", rotation_noise=0.5, translation_noise_pct=0.2),
}

KEYS = ("rotation_error_mean", "rotation_error_median", "rotation_error_px_mean",
        "rotation_error_px_median", "translation_error_mean", "translation_error_px_mean",
        "aligned_rotation_error_mean", "aligned_rotation_error_px_mean",
        "aligned_translation_error_mean", "aligned_translation_error_px_mean",
        "aligned_barf_translation_error_mean", "anchored_rotation_error_mean",
        "anchored_rotation_error_px_mean", "anchored_translation_error_mean",
        "anchored_translation_error_px_mean", "anchor_floor_rotation_error_mean",
        "anchor_floor_translation_error_mean")


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    """``name`` from :data:`SETTINGS`, optionally ``+key=value`` extras
    (``camp+pose_lr=0.3``; a tuple as ``ngp.coarse_to_fine=0:1500``)."""
    name, *extras = text.split("+")
    if name not in SETTINGS:
        raise SystemExit(f"error: unknown setting {name!r}; choose from {sorted(SETTINGS)}")
    overrides = dict(SETTINGS[name])
    for extra in extras:
        key, _, value = extra.partition("=")
        overrides[key] = _value(value)
    return text, overrides


def _value(text: str) -> Any:
    if text.isidentifier():  # a word: a choice such as camp, per_camera or random
        return text
    if ":" in text:  # a tuple, e.g. ngp.coarse_to_fine=0:1500 ("," separates settings)
        return tuple(_value(v) for v in text.split(":"))
    try:
        return int(text)
    except ValueError:
        return float(text)


def run_row(args, setting: str, overrides: dict[str, Any], noise: str) -> dict[str, Any]:
    """Train one (setting, noise) row and summarise it."""
    import dataclasses

    from taichi_nerf.training import EvalConfig, TrainConfig, train_with_pose_optimization

    ngp = {k[4:]: v for k, v in overrides.items() if k.startswith("ngp.")}
    flat = {k: v for k, v in overrides.items() if not k.startswith("ngp.")}
    cfg = TrainConfig(scene=args.scene, data_dir=args.data_dir, downscale=args.downscale,
                      device=args.device, num_iters=args.num_iters, progress=False,
                      output_dir=str(args.runs_dir), experiment_name=None,
                      eval=EvalConfig(num_test_views=args.test_views), **NOISE[noise], **flat)
    if ngp:
        cfg = dataclasses.replace(cfg, ngp=dataclasses.replace(cfg.ngp, **ngp))
    tic = time.perf_counter()
    result = train_with_pose_optimization(cfg)
    wall = time.perf_counter() - tic
    m, init = result["metrics"], result["metrics"]["initial_pose_errors"]
    errors = m["pose_errors"]
    row = {"name": f"{setting} | {noise}", "setting": setting, "overrides": overrides,
           "noise": noise, "steps": m["step"], "wall_time_s": wall,
           "train_time_s": m["train_time_s"], "test_psnr": m["test_psnr"],
           "test_ssim": m["test_ssim"], "run_dir": str(result["output_dir"]),
           "initial": {k: init.get(k) for k in KEYS}, "final": {k: errors.get(k) for k in KEYS},
           "history": [{k: h.get(k) for k in ("step", "rotation_error_mean",
                                              "rotation_error_px_mean", "translation_error_mean",
                                              "val_psnr")} for h in result["history"]]}
    if args.refine_views:
        row.update(refined_psnr(row["run_dir"], args.refine_views, args.device))
    print(f"[poses] {row['name']}: rot {init['rotation_error_mean']:.3f} -> "
          f"{errors['rotation_error_mean']:.4f} deg ({errors['rotation_error_px_mean']:.3f} px), "
          f"centre {errors['translation_error_mean']:.5f} "
          f"({errors['translation_error_px_mean']:.3f} px), PSNR {m['test_psnr']:.2f}, "
          f"{wall:.0f} s", flush=True)
    return row


def refined_psnr(run_dir: str, views: int, device: str) -> dict[str, Any]:
    """Test PSNR of the first ``views`` test images with BARF's protocol (each test pose refined
    photometrically, field frozen) and without, on the same views.

    The Sim(3) alignment of the test poses is fitted to camera centres only; after joint
    optimisation the field can sit a fraction of a degree off that frame per view, which costs
    plain test PSNR several dB at 128 px though the field is sharp. Refinement measures the field.
    """
    from taichi_nerf.training import EvalConfig
    from taichi_nerf.training.eval import evaluate_run

    out = {}
    for key, refine in (("test_psnr_views", False), ("test_psnr_refined", True)):
        cfg = EvalConfig(num_test_views=views, test_time_refine=refine)
        out[key] = evaluate_run(run_dir, eval_config=cfg, device=device, write=False)["test_psnr"]
    out["refine_views"] = views
    return out


def environment(device: str) -> dict[str, Any]:
    from taichi_nerf.training.config import resolve_device
    from taichi_nerf.training.rundir import device_name

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                                capture_output=True, check=False).stdout.strip() or None
    except OSError:
        commit = None
    return {"device_name": device_name(resolve_device(device)), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "git_commit": commit,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def to_json(data: dict[str, Any]) -> str:
    """``data`` as indented JSON, but each row's history entry on one line with its floats to 6
    significant digits: the per-step history is most of a results file (at one key per line it
    took the demo's file past 2 MiB)."""
    entries: list[str] = []

    def compact(h: dict[str, Any]) -> str:
        entries.append(json.dumps({k: float(f"{v:.6g}") if isinstance(v, float) else v
                                   for k, v in h.items()}, separators=(",", ":"), default=str))
        return f"@history-{len(entries) - 1}@"

    rows = [{**r, "history": [compact(h) for h in r["history"]]} if "history" in r else r
            for r in data.get("rows", [])]
    text = json.dumps({**data, "rows": rows}, indent=2, default=str)
    return re.sub(r'"@history-(\d+)@"', lambda m: entries[int(m.group(1))], text) + "\n"


def save(path: Path, rows: list[dict[str, Any]], env: dict[str, Any]) -> None:
    old = json.loads(path.read_text()) if path.exists() else {"rows": []}
    names = {r["name"] for r in rows}
    merged = [r for r in old["rows"] if r["name"] not in names] + rows
    path.write_text(to_json({"benchmark": "poses", "environment": env, "rows": merged}))


def current_protocol(row: dict[str, Any], args) -> None:
    """Re-score a row's run folder with today's metrics: pose errors (anchored ones too) from
    its checkpoint, test PSNR with today's test alignment (the old value kept as
    ``test_psnr_before_rescore`` the first time)."""
    from taichi_nerf.training.eval import evaluate_run

    m = evaluate_run(row["run_dir"], write=False, device=args.device,
                     data_dir=str(args.data_dir) if args.data_dir else None)
    row.setdefault("test_psnr_before_rescore", row["test_psnr"])
    row["test_psnr"], row["test_ssim"] = m["test_psnr"], m["test_ssim"]
    row["test_alignment"] = m["test"]["pose_alignment"]
    row["final"] = {k: m["pose_errors"].get(k) for k in KEYS}


def rescore(json_path: Path, args) -> list[dict[str, Any]]:
    """Re-score every row of ``json_path`` whose run folder exists (:func:`current_protocol`;
    with ``--refine-views`` also the refined / same-view PSNR)."""
    data = json.loads(json_path.read_text())
    for row in data["rows"]:
        if Path(row["run_dir"]).is_dir():
            current_protocol(row, args)
        if Path(row["run_dir"]).is_dir() and args.refine_views:
            row.update(refined_psnr(row["run_dir"], args.refine_views, args.device))
            print(f"[poses] {row['name']}: PSNR {row['test_psnr_views']:.2f} -> refined "
                  f"{row['test_psnr_refined']:.2f} ({args.refine_views} views)", flush=True)
    json_path.write_text(to_json(data))
    return data["rows"]


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the rows (errors in deg and px; camera centre in units and px)."""
    lines = ["| setting | noise | rot mean deg (px) | rot median deg (px) | centre (px) | "
             "aligned / anchored rot deg | BARF t x100 | test PSNR | steps | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["final"]
        lines.append(
            f"| {r['setting']} | {r['noise']} | {f['rotation_error_mean']:.3f} "
            f"({f['rotation_error_px_mean']:.2f}) | {f['rotation_error_median']:.3f} "
            f"({f['rotation_error_px_median']:.2f}) | {f['translation_error_mean']:.4f} "
            f"({f['translation_error_px_mean']:.2f}) | {f['aligned_rotation_error_mean']:.3f} / "
            f"{_maybe(f.get('anchored_rotation_error_mean'))} | "
            f"{100 * f['aligned_barf_translation_error_mean']:.3f} | {r['test_psnr']:.2f} | "
            f"{r['steps']} | {r['wall_time_s']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Rotation error (px) vs step of every row, log scale; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[poses] matplotlib not installed: no plot", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        hist = [h for h in r["history"] if h.get("rotation_error_px_mean") is not None]
        ax.plot([h["step"] for h in hist], [h["rotation_error_px_mean"] for h in hist],
                label=r["name"])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("mean rotation error (px)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scene", default="demo")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--downscale", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-iters", type=int, default=None, help="default: the preset's")
    p.add_argument("--test-views", type=int, default=None, help="default: all")
    p.add_argument("--settings", default="preset", help="comma list, e.g. baseline,camp")
    p.add_argument("--noise", default="main", help=f"comma list of {sorted(NOISE)}")
    p.add_argument("--runs-dir", type=Path, default=REPO / "outputs" / "benchmarks" / "poses")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", action="store_true", help="also write the rotation-error plot")
    p.add_argument("--threads", type=int, default=None,
                   help="torch and Taichi CPU threads (1 keeps parallel rows from oversubscribing "
                   "a small machine, and makes CPU runs bit-reproducible)")
    p.add_argument("--refine-views", type=int, default=0,
                   help="also score the first N test views with test-time pose refinement "
                   "(BARF's protocol) and without (0: off)")
    p.add_argument("--rescore", action="store_true",
                   help="only re-score the rows of --json whose run folders exist: today's "
                   "pose metrics and test alignment, plus --refine-views scores")
    p.add_argument("--list", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.list:
        print("settings:", json.dumps(SETTINGS, indent=1), "\nnoise:", json.dumps(NOISE, indent=1))
        return []
    noises = [n for n in args.noise.split(",") if n]
    unknown = [n for n in noises if n not in NOISE]
    if unknown:
        raise SystemExit(f"error: unknown noise case {unknown[0]!r}; choose from {sorted(NOISE)}")
    settings = [parse_setting(s) for s in args.settings.split(",") if s]
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["TI_CPU_MAX_NUM_THREADS"] = str(args.threads)  # read by ti.init
    json_path = args.json or RESULTS / f"poses_{args.scene}_{args.device}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    if args.rescore:
        return rescore(json_path, args)
    env, rows = environment(args.device), []
    for setting, overrides in settings:
        for noise in noises:
            rows.append(run_row(args, setting, overrides, noise))
            save(json_path, rows, env)
    print(table(rows))
    if args.plot:
        saved = json.loads(json_path.read_text())["rows"]
        plot(saved, json_path.with_suffix(".png"))
    return rows


if __name__ == "__main__":
    main()
