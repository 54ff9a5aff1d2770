"""The prepared GPU check: tests on CUDA, kernel tests on the CPU backend, kernel benchmark, lego
joint + clean fixed-pose rows, a one-step profile -- each stage with its own time limit, all
results in one folder. ``benchmarks/gpu_suite.sh RESULTS_DIR`` calls this.

    python benchmarks/gpu_suite.py RESULTS_DIR            # on the GPU machine (<= 8 min)
    python benchmarks/gpu_suite.py RESULTS_DIR --quick    # the same stages, tiny, on the CPU

A stage that fails or hits its limit is recorded (status, exit code, log) and the next one runs;
``summary.json`` is rewritten after every stage, so a hang leaves the other results intact.
Writes into RESULTS_DIR: ``summary.json``; per stage ``<stage>.log``; ``tests_cuda.xml`` and
``tests_cpu_kernels.xml`` (junit); ``kernels_cuda.json``; ``runs/`` (the two lego run folders)
and ``lego.json`` (PSNR, pose errors in degrees and pixels, wall time, it/s, peak memory,
device); ``step_cuda.json`` and ``profile_cuda.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Kernel test files run once more on the CPU backend (the GPU machine's CPU).
KERNEL_TESTS = ["tests/test_hash_grid.py", "tests/test_sh.py", "tests/test_marching.py",
                "tests/test_compositing.py", "tests/test_render.py",
                "tests/test_end_to_end_pose_grad.py", "tests/test_determinism.py"]
#: Per-test limit: pytest-timeout when installed, else faulthandler dumps the hung test's stack.
PER_TEST_TIMEOUT_S = 60


@dataclass
class Stage:
    """One command with its own wall-clock limit; ``env`` is added to the suite's environment."""

    name: str
    cmd: list[str]
    limit_s: int
    env: dict = field(default_factory=dict)


def _pytest(junit: Path, paths: list[str], extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={junit}", "-o", f"faulthandler_timeout={PER_TEST_TIMEOUT_S}"]
    try:
        import pytest_timeout  # noqa: F401

        cmd += [f"--timeout={PER_TEST_TIMEOUT_S}"]
    except ImportError:
        pass
    return cmd + extra + paths


def _lego_args(out: Path, quick: bool, steps: int, device: str) -> list[str]:
    """Flags shared by the joint and the clean rows (same scene, size, steps, evaluation)."""
    data = os.environ.get("TAICHI_NERF_DATA", str(ROOT / "data"))
    common = ["--output-dir", str(out / "runs"), "--no-progress", "--device", device,
              "--num-iters", str(steps), "--val-every", str(max(steps // 2, 1))]
    if quick:  # the built-in demo scene, a tiny field
        return common + ["--scene", "demo", "--data-dir", str(ROOT / "data"), "--downscale", "4",
                         "--ngp.n-levels", "4", "--ngp.log2-table-size", "12",
                         "--ngp.finest-resolution", "64", "--ngp.grid-resolution", "32",
                         "--pose-opt-delay", "3", "--eval.num-test-views", "1",
                         "--num-val-views", "1"]
    return common + ["--scene", "lego", "--data-dir", data, "--downscale", "2",
                     "--eval.num-test-views", "10", "--num-val-views", "1"]


def stages(out: Path, quick: bool, lego_steps: int) -> list[Stage]:
    """The five stages of issue 12, at production sizes or (quick) tiny ones on the CPU."""
    dev = "cpu" if quick else "cuda"
    lego = _lego_args(out, quick, lego_steps, dev)
    tests_cuda = ["tests/test_sh.py"] if quick else ["tests"]
    tests_cpu = ["tests/test_sh.py"] if quick else KERNEL_TESTS
    kernels = [sys.executable, "benchmarks/kernels.py", "--device", dev,
               "--json", str(out / "kernels_cuda.json")] + (["--quick", "--ops", "sh"] if quick else [])
    step = [sys.executable, "benchmarks/step_profile.py", "--device", dev,
            "--json", str(out / "step_cuda.json"), "--profile-json", str(out / "profile_cuda.json")]
    step += ["--quick"] if quick else ["--scene", "lego", "--data-dir",
                                      os.environ.get("TAICHI_NERF_DATA", "data"), "--downscale", "2"]
    train = [sys.executable, "examples/train_pose_opt.py"]
    fixed = [sys.executable, "examples/train.py"]
    return [
        # The quick-suite test runs this very suite on the CPU: not worth GPU-machine time.
        Stage("tests_cuda", _pytest(out / "tests_cuda.xml", tests_cuda,
                                    [] if quick else ["--ignore=tests/test_gpu_suite.py"]),
              60 if quick else 130, {"TAICHI_NERF_TEST_ARCH": dev}),
        Stage("tests_cpu_kernels", _pytest(out / "tests_cpu_kernels.xml", tests_cpu, []),
              60 if quick else 50, {"TAICHI_NERF_TEST_ARCH": "cpu", "CUDA_VISIBLE_DEVICES": ""}),
        Stage("kernels_cuda", kernels, 60 if quick else 50),
        Stage("lego_joint", train + lego + ["--experiment-name", "lego_joint", "--init-mode",
              "noisy", "--rotation-noise", "2", "--translation-noise-pct", "1"],
              90 if quick else 100),
        Stage("lego_clean_fixed", fixed + lego + ["--experiment-name", "lego_clean_fixed",
              "--init-mode", "clean"], 90 if quick else 85),
        Stage("profile", step, 60 if quick else 45),
    ]


def run_stage(stage: Stage, out: Path) -> dict:
    """Run one stage in its own process group; kill the group at the limit."""
    log = out / f"{stage.name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **stage.env}
    tic = time.perf_counter()
    with log.open("w") as f:
        f.write("$ " + " ".join(stage.cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(stage.cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=stage.limit_s)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc, status = None, "timeout"
    return {"stage": stage.name, "status": status, "returncode": rc, "limit_s": stage.limit_s,
            "wall_s": round(time.perf_counter() - tic, 1), "log": log.name,
            "command": stage.cmd}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="folder for every result (created)")
    parser.add_argument("--quick", action="store_true", help="same stages, tiny, on the CPU")
    parser.add_argument("--lego-steps", type=int, default=None,
                        help="training steps of both lego rows (default 1000; quick: 6)")
    parser.add_argument("--only", nargs="+", default=None, help="run just these stages")
    args = parser.parse_args(argv)
    out = args.results.resolve()
    out.mkdir(parents=True, exist_ok=True)
    from gpu_suite_report import environment, lego_summary  # noqa: E402 (benchmarks/ helper)

    steps = args.lego_steps or (6 if args.quick else 1000)
    summary = {"suite": "gpu_suite", "quick": args.quick, "lego_steps": steps,
               "environment": environment(), "stages": []}
    tic = time.perf_counter()
    for stage in stages(out, args.quick, steps):
        if args.only and stage.name not in args.only:
            continue
        print(f"[gpu_suite] {stage.name} (limit {stage.limit_s} s) ...", flush=True)
        result = run_stage(stage, out)
        print(f"[gpu_suite] {stage.name}: {result['status']} in {result['wall_s']} s", flush=True)
        summary["stages"].append(result)
        summary["total_wall_s"] = round(time.perf_counter() - tic, 1)
        if stage.name.startswith("lego"):
            (out / "lego.json").write_text(json.dumps(lego_summary(out / "runs"), indent=2))
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if all(s["status"] == "ok" for s in summary["stages"]) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
