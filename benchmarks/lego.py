"""Benchmark suite on lego: joint pose optimization vs the fixed-pose baselines and vanilla NeRF.

    python benchmarks/lego.py                          # full suite (GPU), lego at 400x400
    python benchmarks/lego.py --quick --device cpu     # small CPU run (100x100, few steps)
    python benchmarks/lego.py --tiny --scene demo      # seconds: the test's configuration

Rows (every row: the same test views, the same metric code, ``train_with_pose_optimization``):
  1  ngp, clean poses, fixed (the quality ceiling)
  2  ngp, noisy poses (2 deg, 1 %, noise seed 0), fixed (Baseline 1)
  3  ngp, joint from the same noise (this method)
  4  ngp, joint from extreme noise (5 deg, 2 %)
  5  ngp, joint from BARF-protocol noise (se(3) std 0.15), test-time refinement, BARF metrics
  6a vanilla NeRF, clean poses, fixed, for a wall-clock budget
  6b vanilla NeRF, joint from row 2's noise, for the same budget

Per row: test PSNR / SSIM, mean rotation and translation errors (raw and Sim(3)-aligned; BARF's
w2c translation x100), training and total wall time, it/s, peak GPU memory (CUDA) or peak RSS
(CPU, reset per row), and the val-PSNR / pose-error history. Also: the joint-vs-fixed step-time
overhead (fixed and joint steps interleaved on one renderer, median of each) and the speed-up to
reach vanilla NeRF's final val PSNR. Writes ``{out}/lego_{mode}_{device}.json``, a markdown table
(``--markdown``) and two PNG charts (examples/plot_lego.py, drawn with Pillow).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
NOISE = dict(init_mode="noisy", rotation_noise=2.0, translation_noise_pct=1.0, noise_seed=0)

#: (id, name, TrainConfig overrides, learns poses, runs for the wall-clock budget)
ROWS: list[tuple[str, str, dict[str, Any], bool, bool]] = [
    ("1", "ngp clean, fixed", dict(model="ngp", init_mode="clean", fixed_poses=True), False, False),
    ("2", "ngp 2deg/1%, fixed", dict(model="ngp", fixed_poses=True, **NOISE), False, False),
    ("3", "ngp 2deg/1%, joint", dict(model="ngp", **NOISE), True, False),
    ("4", "ngp 5deg/2%, joint", dict(model="ngp", init_mode="noisy", rotation_noise=5.0,
                                    translation_noise_pct=2.0, noise_seed=0), True, False),
    ("5", "ngp BARF noise, joint+TTR", dict(model="ngp", init_mode="noisy", noise_protocol="barf",
                                            noise_seed=0, eval={"test_time_refine": True}),
     True, False),
    ("6a", "vanilla clean, fixed", dict(model="vanilla", init_mode="clean", fixed_poses=True),
     False, True),
    ("6b", "vanilla 2deg/1%, joint", dict(model="vanilla", **NOISE), True, True),
]


@dataclasses.dataclass
class Mode:
    """Suite-wide settings of one mode (``full``, ``quick``, ``tiny``)."""

    scene: str = "lego"
    downscale: int = 1
    ngp_iters: int | None = None  # None: the ngp preset's count
    val_every: int = 250
    num_val_views: int = 2
    num_test_views: int | None = None  # None: every test view at hand
    vanilla_budget_s: float | None = 600.0
    vanilla_iters: int | None = None  # used when vanilla_budget_s is None
    vanilla: dict[str, Any] = dataclasses.field(default_factory=dict)  # model size overrides
    vanilla_batch: int | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # any other TrainConfig fields
    overhead_steps: int = 60


MODES = {
    "full": Mode(),
    # A CPU run on 2 cores (~20 min): lego at 100x100, 800 ngp steps, 4 test views, a small
    # vanilla model (width 64, depth 4, 32 coarse + 32 fine samples) for a 120 s budget.
    "quick": Mode(downscale=4, ngp_iters=800, val_every=50, num_val_views=1, num_test_views=4,
                  vanilla_budget_s=120.0,
                  vanilla=dict(width=64, depth=4, skip=2, num_coarse=32, num_fine=32),
                  vanilla_batch=256,
                  extra=dict(pose_opt_delay=50, eval={"refine_steps": 20, "refine_rays": 256}),
                  overhead_steps=20),
    # Seconds: checks the plumbing, numbers mean nothing.
    "tiny": Mode(scene="demo", downscale=8, ngp_iters=6, val_every=3, num_val_views=1,
                 num_test_views=1, vanilla_budget_s=None, vanilla_iters=3,
                 vanilla=dict(width=16, depth=2, skip=None, num_coarse=8, num_fine=8),
                 vanilla_batch=64,
                 extra=dict(batch_size=256, pose_opt_delay=2, ngp={"target_samples": 0},
                            eval={"refine_steps": 2, "refine_rays": 64}),
                 overhead_steps=3),
}


# --------------------------------------------------------------------------- config plumbing


def _replace(obj: Any, overrides: dict[str, Any]) -> Any:
    """``dataclasses.replace`` with nested dicts for sub-dataclasses (``TrainConfig`` has every
    setting a row needs; an unknown key is a bug in the row table)."""
    fields = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise KeyError(f"{type(obj).__name__} has no field {key!r}")
        if isinstance(value, dict) and dataclasses.is_dataclass(getattr(obj, key)):
            changes[key] = _replace(getattr(obj, key), value)
        else:
            changes[key] = value
    return dataclasses.replace(obj, **changes)


def _merge(*dicts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dicts:
        for key, value in d.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _merge(out[key], value)
            else:
                out[key] = value
    return out


def row_config(row: tuple, mode: Mode, args: argparse.Namespace, run_root: Path):
    """The TrainConfig of one row (budget rows: ``num_iters`` filled in later)."""
    from taichi_nerf.training import TrainConfig

    rid, _, overrides, _, _ = row
    base = dict(scene=args.scene or mode.scene, data_dir=args.data_dir,
                downscale=args.downscale or mode.downscale, device=args.device,
                val_every=mode.val_every, num_val_views=mode.num_val_views,
                output_dir=str(run_root), experiment_name=f"row{rid}", progress=args.progress,
                eval={"num_test_views": mode.num_test_views})
    if overrides["model"] == "ngp":
        per_model = dict(num_iters=args.num_iters or mode.ngp_iters)
    else:  # None batch: the vanilla preset's 1024 rays
        per_model = dict(vanilla=mode.vanilla, batch_size=mode.vanilla_batch)
    return _replace(TrainConfig(), _merge(base, mode.extra, per_model, overrides))


# --------------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    """Start a fresh peak-memory window: CUDA allocator stats, or the process RSS high-water mark
    (Linux: writing 5 to /proc/self/clear_refs resets VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_bytes(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "cpu_peak_rss"
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "cpu_process_maxrss"


def iters_for_budget(cfg, budget_s: float, probe_steps: int, scratch: Path) -> tuple[int, float]:
    """Training steps that fit ``budget_s`` seconds, from a short interrupted probe run: its
    steps/s after the first two (warm-up), with the poses moving from the start."""
    from taichi_nerf.training import train_with_pose_optimization

    probe = dataclasses.replace(cfg, num_iters=10**7, stop_after=probe_steps, val_every=10**7,
                                output_dir=str(scratch), progress=False, log_every=1,
                                experiment_name=f"probe_{cfg.experiment_name}", pose_opt_delay=0)
    history = train_with_pose_optimization(probe)["history"]
    (t0, s0), (t1, s1) = [(h["wall_time_s"], h["step"]) for h in (history[1], history[-1])]
    its = (s1 - s0) / (t1 - t0)
    return max(1, int(budget_s * its)), its


def run_row(row: tuple, cfg, device: torch.device) -> dict[str, Any]:
    """Train and evaluate one row; the row's result dict for the JSON."""
    from taichi_nerf.training import resolve_config, train_with_pose_optimization
    from taichi_nerf.training.config import config_to_dict

    rid, name, _, learn, budget = row
    _reset_peak(device)
    _sync(device)
    tic = time.perf_counter()
    result = train_with_pose_optimization(cfg)
    _sync(device)
    total_s = time.perf_counter() - tic
    peak, peak_kind = _peak_bytes(device)
    m = result["metrics"]
    errs, init = m["pose_errors"], m["initial_pose_errors"]
    pick = lambda d, k: d.get(k)
    return {
        "id": rid, "name": name, "model": m["model"], "learn_poses": learn,
        "fixed_wall_clock_budget": budget,
        "test_psnr": m["test_psnr"], "test_ssim": m["test_ssim"],
        "test_views": m["test"]["num_views"], "test_time_refinement":
            m["test"]["test_time_refinement"], "pose_alignment": m["test"]["pose_alignment"],
        "rotation_error_mean_deg": errs["rotation_error_mean"],
        "aligned_rotation_error_mean_deg": pick(errs, "aligned_rotation_error_mean"),
        "translation_error_mean": errs["translation_error_mean"],
        "aligned_translation_error_mean": pick(errs, "aligned_translation_error_mean"),
        "aligned_barf_translation_error_mean_x100": (
            100 * errs["aligned_barf_translation_error_mean"]
            if errs.get("aligned_barf_translation_error_mean") is not None else None),
        "initial_rotation_error_mean_deg": init["rotation_error_mean"],
        "initial_translation_error_mean": init["translation_error_mean"],
        "steps": m["step"], "train_time_s": m.get("train_time_s"), "total_time_s": total_s,
        "iters_per_sec": result["iters_per_sec"], "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind, "final_val_psnr": _final_val(result["history"]),
        "history": result["history"], "pose_errors": errs, "initial_pose_errors": init,
        "run_dir": str(result["output_dir"]),
        "config": config_to_dict(resolve_config(cfg, device)),
    }


def _final_val(history: list[dict]) -> float | None:
    vals = [h["val_psnr"] for h in history if h.get("val_psnr") is not None]
    return vals[-1] if vals else None


def time_to_psnr(history: list[dict], target: float) -> float | None:
    """Training seconds until val PSNR first reaches ``target`` (linear between validations)."""
    prev = (0.0, None)
    for h in history:
        v = h.get("val_psnr")
        if v is None:
            continue
        if v >= target:
            t0, v0 = prev
            if v0 is None or v == v0:
                return h["wall_time_s"]
            return t0 + (target - v0) / (v - v0) * (h["wall_time_s"] - t0)
        prev = (h["wall_time_s"], v)
    return None


def speedups(rows: dict[str, dict]) -> list[dict[str, Any]]:
    """Time for an ngp row to reach a vanilla row's final val PSNR vs the vanilla row's own time
    to reach it (6a vs 1: clean, fixed; 6b vs 3: joint from the same noise)."""
    out = []
    for vid, nid in (("6a", "1"), ("6b", "3")):
        if vid not in rows or nid not in rows or rows[vid]["final_val_psnr"] is None:
            continue
        target = rows[vid]["final_val_psnr"]
        t_vanilla = time_to_psnr(rows[vid]["history"], target)
        t_ngp = time_to_psnr(rows[nid]["history"], target)
        out.append({"vanilla_row": vid, "ngp_row": nid, "target_val_psnr": target,
                    "vanilla_time_s": t_vanilla, "ngp_time_s": t_ngp,
                    "speedup": (t_vanilla / t_ngp) if t_ngp and t_vanilla else None})
    return out


def measure_pose_overhead(cfg, device: torch.device, steps: int, scratch: Path
                          ) -> dict[str, Any]:
    """Step time of joint vs fixed poses on one trainer, steps interleaved (fixed, joint, ...),
    after warm-up, with a fixed ray count: ``Trainer.step`` itself, the poses switched on and
    off by their delay."""
    from taichi_nerf.training.trainer import Trainer

    cfg = dataclasses.replace(cfg, output_dir=str(scratch), experiment_name=None,
                              progress=False, init_mode="noisy", rotation_noise=2.0,
                              translation_noise_pct=1.0, fixed_poses=False,
                              ngp=dataclasses.replace(cfg.ngp, target_samples=0))
    trainer = Trainer(cfg)
    times: dict[bool, list[float]] = {False: [], True: []}
    warmup = max(4, steps // 4)
    for i in range(warmup + 2 * steps):
        joint = i % 2 == 1
        trainer.pose_opt.delay = 0 if joint else 10**9
        _sync(device)
        tic = time.perf_counter()
        trainer.step()
        _sync(device)
        if i >= warmup:
            times[joint].append(time.perf_counter() - tic)
    trainer.logger.close()
    fixed, joint = statistics.median(times[False]), statistics.median(times[True])
    return {"model": trainer.cfg.model, "rays_per_step": trainer.cfg.batch_size,
            "steps_each": steps, "fixed_step_ms": 1e3 * fixed, "joint_step_ms": 1e3 * joint,
            "overhead_pct": 100.0 * (joint / fixed - 1.0)}


# --------------------------------------------------------------------------- reporting


def environment(device: torch.device) -> dict[str, Any]:
    """Device, versions, commit, machine load: what a reader needs to weigh the numbers."""
    import numpy
    import taichi

    import taichi_nerf
    from taichi_nerf.training.rundir import device_name

    def git(*cmd: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "device": device.type, "device_name": device_name(device), "cpu_model": cpu,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "taichi": ".".join(map(str, taichi.__version__))
                     if isinstance(taichi.__version__, tuple) else str(taichi.__version__),
                     "numpy": numpy.__version__,
                     "taichi_nerf": taichi_nerf.__version__},
        "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None
        else None, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": sys.argv,
    }


def _report_module():
    """examples/plot_lego.py: the charts and the markdown table of a result file."""
    spec = importlib.util.spec_from_file_location("plot_lego", REPO / "examples" / "plot_lego.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small CPU run (see MODES)")
    size.add_argument("--tiny", action="store_true", help="seconds; checks the plumbing only")
    p.add_argument("--scene", default=None, help="scene name (default lego; demo for checks)")
    p.add_argument("--data-dir", default=None, help="data root (else $TAICHI_NERF_DATA)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--rows", default=",".join(r[0] for r in ROWS),
                   help="comma-separated row ids, e.g. 1,3,6a")
    p.add_argument("--num-iters", type=int, default=None, help="ngp steps (overrides the mode)")
    p.add_argument("--downscale", type=int, default=None, help="image downscale (overrides)")
    p.add_argument("--vanilla-budget-s", type=float, default=None,
                   help="wall-clock training budget of rows 6a/6b (overrides the mode)")
    p.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results",
                   help="where the JSON and plots go")
    p.add_argument("--json", type=Path, default=None, help="JSON path (default in --out-dir)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the markdown here")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="run folders (default outputs/benchmarks/...; not committed)")
    p.add_argument("--no-overhead", action="store_true", help="skip the step-time overhead")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON",
                   help="combine result files (rows run in separate commands); runs nothing")
    p.add_argument("--progress", action="store_true", help="tqdm bars per row")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch CPU threads (default: 1 for --quick/--tiny on the CPU, where a busy"
                   " shared machine makes OpenMP threads spin-wait; else torch's default)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the suite (see the module docstring); returns the results dict it wrote."""
    args = parse_args(argv)
    threads_before = torch.get_num_threads()
    try:
        return merge(args) if args.merge else _run(args)
    finally:  # leave the process as found (the test calls main in-process)
        torch.set_num_threads(threads_before)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    import taichi_nerf
    from taichi_nerf.training.config import resolve_device

    mode_name = "quick" if args.quick else "tiny" if args.tiny else "full"
    mode = MODES[mode_name]
    if args.vanilla_budget_s is not None:
        mode = dataclasses.replace(mode, vanilla_budget_s=args.vanilla_budget_s)
    device = resolve_device(args.device)
    threads = args.torch_threads or (1 if device.type == "cpu" and mode_name != "full" else None)
    if threads:  # measured on the shared 2-core box: ngp 2.8 it/s with 1 thread, 0.7 with 2
        torch.set_num_threads(threads)
    taichi_nerf.init(device.type)
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(wanted) - {r[0] for r in ROWS}
    if unknown:
        raise SystemExit(f"error: unknown row(s) {sorted(unknown)}; choose from "
                         f"{[r[0] for r in ROWS]}")
    rows = [r for r in ROWS if r[0] in wanted]
    stamp = time.strftime("%Y%m%d_%H%M%S")
    run_root = args.runs_dir or REPO / "outputs" / "benchmarks" / f"lego_{mode_name}_{stamp}"
    env = environment(device)
    results: dict[str, Any] = {
        "benchmark": "lego", "mode": mode_name, "device_name": env["device_name"],
        "label": ("CPU quick run — small images and few steps; NOT comparable to the GPU goals"
                  if mode_name == "quick" else "tiny plumbing check — numbers mean nothing"
                  if mode_name == "tiny" else "full run"),
        "environment": env, "rows": [], "mode_settings": dataclasses.asdict(mode),
    }
    json_path = args.json or args.out_dir / f"lego_{mode_name}_{device.type}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    for row in rows:
        cfg = row_config(row, mode, args, run_root)
        note: dict[str, Any] = {}
        if row[4]:  # the vanilla rows: a wall-clock budget, or a fixed step count (tiny)
            if mode.vanilla_budget_s is None:
                cfg = dataclasses.replace(cfg, num_iters=mode.vanilla_iters)
            else:
                probe_steps = 20 if mode_name == "full" else 12
                iters, its = iters_for_budget(cfg, mode.vanilla_budget_s, probe_steps,
                                              run_root / "probes")
                cfg = dataclasses.replace(cfg, num_iters=iters,
                                          val_every=max(1, min(cfg.val_every or iters,
                                                               iters // 8 or 1)))
                note.update(budget_s=mode.vanilla_budget_s, probe_iters_per_sec=its,
                            budget_from="probe it/s -> num_iters")
        print(f"[lego] row {row[0]}: {row[1]} ...", flush=True)
        try:
            res = run_row(row, cfg, device)
        except Exception as exc:  # one broken row must not lose the others' results
            print(f"[lego] row {row[0]} failed: {type(exc).__name__}: {exc}", flush=True)
            results.setdefault("failed_rows", []).append(
                {"id": row[0], "name": row[1], "error": f"{type(exc).__name__}: {exc}"})
            continue
        res.update(note)
        results["rows"].append(res)
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")  # partial
        print(f"[lego] row {row[0]}: test PSNR {res['test_psnr']:.2f}, rot "
              f"{res['initial_rotation_error_mean_deg']:.3f} -> "
              f"{res['rotation_error_mean_deg']:.3f} deg, {res['train_time_s']:.1f} s train, "
              f"{res['iters_per_sec']:.2f} it/s", flush=True)
    first = results["rows"][0] if results["rows"] else None
    if first is not None:
        c = first["config"]
        from taichi_nerf.data import load_scene

        test = load_scene(c["scene"], c["data_dir"], splits=("test",),
                          downscale=c["downscale"])["test"]
        from taichi_nerf.data import data_root

        results["settings"] = dict(scene=c["scene"], data_root=str(data_root(c["data_dir"])),
                                   downscale=c["downscale"],
                                   image_size=[test.width, test.height],
                                   test_views=first["test_views"],
                                   test_views_available=len(test), val_every=mode.val_every,
                                   num_val_views=mode.num_val_views)
    if not args.no_overhead:
        cfg = row_config(ROWS[2], mode, args, run_root)
        print("[lego] joint-vs-fixed step-time overhead ...", flush=True)
        results["pose_overhead"] = measure_pose_overhead(cfg, device, mode.overhead_steps,
                                                         run_root / "overhead")
    results["environment"]["load_average_end"] = (list(os.getloadavg())
                                                  if hasattr(os, "getloadavg") else None)
    return finish(results, json_path, args)


def finish(results: dict[str, Any], json_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Derived figures (rows 2 vs 3 it/s, speed-ups), plots, JSON and markdown."""
    done = {r["id"]: r for r in results["rows"]}
    if "2" in done and "3" in done:
        results["joint_vs_fixed_rows_2_3"] = {
            "fixed_iters_per_sec": done["2"]["iters_per_sec"],
            "joint_iters_per_sec": done["3"]["iters_per_sec"],
            "overhead_pct": 100.0 * (done["2"]["iters_per_sec"] / done["3"]["iters_per_sec"] - 1),
        }
    results["speedups"] = speedups(done)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    if not args.no_plots and results["rows"]:
        results["plots"] = [str(p) for p in _report_module().plot_results(
            results, json_path.parent, json_path.stem)]
        results["plots"] = [os.path.relpath(p, REPO) if p.startswith(str(REPO)) else p
                            for p in results["plots"]]
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if "settings" in results:
        text = _report_module().markdown(results)
        print(text)
        if args.markdown:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(text)
    print(f"[lego] wrote {json_path}")
    return results


def merge(args: argparse.Namespace) -> dict[str, Any]:
    """Combine result files of one mode and device (e.g. rows run in separate commands, each
    under a per-command time limit) into one table; a later file's row replaces an earlier one."""
    parts = [json.loads(Path(p).read_text()) for p in args.merge]
    if len({(p["mode"], p["device_name"]) for p in parts}) != 1:
        raise SystemExit("error: --merge needs result files of one mode on one device")
    order = [r[0] for r in ROWS]
    rows = {r["id"]: r for part in parts for r in part["rows"]}
    results = dict(parts[0], rows=sorted(rows.values(), key=lambda r: order.index(r["id"])),
                   merged_from=[str(p) for p in args.merge],
                   environments=[p["environment"] for p in parts])
    failed = {f["id"]: f for part in parts for f in part.get("failed_rows", [])}
    results["failed_rows"] = [f for rid, f in failed.items() if rid not in rows]
    for part in parts:
        if part.get("pose_overhead"):
            results["pose_overhead"] = part["pose_overhead"]
    json_path = args.json or args.out_dir / f"lego_{results['mode']}_merged.json"
    return finish(results, json_path, args)


if __name__ == "__main__":
    main()
