"""Where refined poses go wrong: joint training warm-started from a field trained on fixed true
poses, and the residual of a finished run by camera elevation (issue 9).

Two modes:

- ``warm``: take a fixed-pose run's checkpoint (``--from``), start the default joint training
  from the **true** poses at step ``--start`` (its learning rates), run ``--steps`` steps and log
  every 100 the rotation error, its Sim(3)-aligned value, the running mean of the poses since
  ``--start + 100`` (Polyak) and the training cameras' mean turn in camera axes (pitch, yaw,
  roll). A field at the truth gives no pose gradient on average, so what the poses do here is
  the noise floor of the optimiser plus any drift the joint problem prefers.
- ``bins``: for finished runs (``final_poses.pt``), the residual turn and shift in camera axes
  after the Sim(3) of the centres, averaged over six bands of camera elevation, and how much of
  the turns one shift of the whole field (each camera turned to follow it) explains.

Example (CPU, the dev VM's figures in BENCHMARKS.md)::

    python benchmarks/pose_drift.py warm --from outputs/fixed_clean_run --start 1000 --steps 500
    python benchmarks/pose_drift.py bins outputs/some_run outputs/another_run
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch


def _turn_deg(poses: torch.Tensor, truth: torch.Tensor) -> list[float]:
    from taichi_nerf.training.eval import fit_test_alignment, mean_camera_turn

    alignment = fit_test_alignment(poses.double(), truth.double())
    if alignment is None:
        return [0.0, 0.0, 0.0]
    return [math.degrees(v) for v in mean_camera_turn(poses, truth.double(), alignment).tolist()]


def warm(args) -> list[dict]:
    from taichi_nerf.training.checkpoint import load_checkpoint
    from taichi_nerf.training.config import TrainConfig
    from taichi_nerf.training.trainer import Trainer

    overrides = json.loads(args.overrides)
    cfg = TrainConfig(scene=args.scene, data_dir=args.data_dir, init_mode="clean",
                      device="cpu", output_dir=str(args.out), num_iters=args.num_iters,
                      pose_opt_delay=0, translation_delay=0, val_every=10**9, progress=False,
                      **overrides)
    trainer = Trainer(cfg)
    state = load_checkpoint(sorted(Path(args.source).glob("*/checkpoint_latest.pt"))[0])
    trainer.renderer.load_state_dict(state["renderer"])
    trainer.field_opt.load_state_dict(state["field_optimizer"])
    trainer.step_count = args.start
    c = trainer.cfg
    for group in trainer.field_opt.param_groups:
        group["lr"] = c.lr * (c.lr_final / c.lr) ** (args.start / c.num_iters)
    mean, count, rows = None, 0, []
    for i in range(args.steps):
        trainer.step()
        now = [p.detach().double().clone() for p in trainer.pose_params.parameters()]
        if i >= 100:
            count += 1
            mean = now if mean is None else [m + (v - m) / count for m, v in zip(mean, now)]
        if (i + 1) % 100:
            continue
        row = {"step": trainer.step_count, **_errors(trainer, "")}
        row["turn_deg"] = _turn_deg(trainer.pose_params.get_poses().detach(), trainer.gt_poses)
        if mean is not None:
            with torch.no_grad():
                for p, m in zip(trainer.pose_params.parameters(), mean):
                    p.copy_(m.to(p.dtype))
                row.update(_errors(trainer, "mean_"))
                for p, v in zip(trainer.pose_params.parameters(), now):
                    p.copy_(v.to(p.dtype))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _errors(trainer, prefix: str) -> dict:
    e = trainer.pose_errors(trainer.pose_params.get_poses().detach())
    return {prefix + "rotation_error_mean": e["rotation_error_mean"],
            prefix + "aligned_rotation_error_mean": e["aligned_rotation_error_mean"]}


def bins(run_dirs: list[str]) -> list[dict]:
    from taichi_nerf.poses import apply_sim3_to_poses, so3_log
    from taichi_nerf.training.eval import fit_test_alignment

    rows = []
    for run in run_dirs:
        path = next(iter(sorted(Path(run).glob("**/final_poses.pt"))))
        final = torch.load(path, weights_only=False)
        truth, learned = final["ground_truth_poses"].double(), final["optimized_poses"].double()
        aligned = apply_sim3_to_poses(truth, *fit_test_alignment(learned, truth))
        rot_t = aligned[:, :, :3].transpose(1, 2)
        shift = (rot_t @ (learned[:, :, 3] - aligned[:, :, 3])[..., None])[..., 0]
        turn = torch.rad2deg(so3_log(rot_t @ learned[:, :, :3]))
        elevation = torch.rad2deg(torch.asin(truth[:, 2, 3] / truth[:, :, 3].norm(dim=-1)))
        bands = []
        for part in elevation.argsort().chunk(6):
            bands.append({"elevation_deg": float(elevation[part].mean()),
                          "pitch_deg": float(turn[part, 0].mean()),
                          "yaw_deg": float(turn[part, 1].mean()),
                          "shift_up": float(shift[part, 1].mean()),
                          "shift_back": float(shift[part, 2].mean())})
        rows.append({"run": str(path.parent), "bands": bands,
                     "field_shift_fit": _field_shift_fit(aligned, turn)})
        print(path.parent.name, " | ".join(
            f"e{b['elevation_deg']:.0f}: pitch {b['pitch_deg']:+.3f} up {b['shift_up']:+.4f}"
            for b in bands), flush=True)
        fit = rows[-1]["field_shift_fit"]
        shift_d = [round(v, 4) for v in fit["both"]["solution"][:3]]
        print(f"  field shift explains {fit['shift']['explained']:.2f}, with a common turn "
              f"{fit['both']['explained']:.2f} (d = {shift_d})")
    return rows


def _field_shift_fit(aligned: torch.Tensor, turn_deg: torch.Tensor) -> dict:
    """How much of the residual pitch and yaw one shift ``d`` of the field as a whole explains
    (each camera turned to keep the shifted object in view: pitch ``(R^T d)_y / r``, yaw
    ``-(R^T d)_x / r``), with and without a common turn ``(a, b)`` in camera axes."""
    rot, dist = aligned[:, :, :3], aligned[:, :, 3].norm(dim=-1, keepdim=True)
    y = torch.deg2rad(torch.cat([turn_deg[:, 0], turn_deg[:, 1]]))
    n, one, zero = len(dist), torch.ones_like(dist), torch.zeros_like(dist)
    a = torch.cat([torch.cat([rot[:, :, 1] / dist, one, zero], -1),
                   torch.cat([-rot[:, :, 0] / dist, zero, one], -1)])  # [2n, 5]
    out = {"rms_turn_deg": math.degrees(float(y.square().mean().sqrt())), "cameras": n}
    for name, cols in (("common_turn", [3, 4]), ("shift", [0, 1, 2]), ("both", list(range(5)))):
        sol = torch.linalg.lstsq(a[:, cols], y[:, None]).solution[:, 0]
        left = (a[:, cols] @ sol - y).square().sum() / y.square().sum()
        out[name] = {"explained": float(1 - left), "solution": sol.tolist()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    w = sub.add_parser("warm")
    w.add_argument("--from", dest="source", required=True, help="a fixed-pose run folder")
    w.add_argument("--start", type=int, default=1000)
    w.add_argument("--steps", type=int, default=500)
    w.add_argument("--num-iters", type=int, default=2000)
    w.add_argument("--scene", default="demo")
    w.add_argument("--data-dir", default=None)
    w.add_argument("--overrides", default="{}", help='TrainConfig fields as JSON')
    w.add_argument("--out", type=Path, default=Path("outputs/pose_drift"))
    b = sub.add_parser("bins")
    b.add_argument("runs", nargs="+")
    for q in (w, b):
        q.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("TI_CPU_MAX_NUM_THREADS", "1")
    rows = warm(args) if args.mode == "warm" else bins(args.runs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"mode": args.mode, "args": {
            k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
