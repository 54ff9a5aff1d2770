"""Kernel benchmark: every Taichi op, forward and forward+backward, against its torch twin.

Both run on the same device with the same inputs, after warm-up; the reported time is the
median of the repeats. Prints a table and, with ``--json PATH``, writes the device, versions,
git commit, machine load, sizes, every repeat's time and the twin/Taichi ratios.

    python benchmarks/kernels.py --device cpu --json benchmarks/results/kernels_cpu.json
    python benchmarks/kernels.py --device cuda --json benchmarks/results/kernels_cuda.json
    python benchmarks/kernels.py --quick            # small sizes, a smoke test

Production sizes (the issue's): hash grid 2^18 points, 16 levels, F=2, T=2^19; SH 2^18
directions; compositing 2^14 rays x 64 samples (2^20 samples); marching 2^14 rays through a
128^3 occupancy grid holding a sphere and a floor slab (about 4% of the cells occupied).
Marching has no backward: its "fwd+bwd" column is the forward alone.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import taichi_nerf
from taichi_nerf import reference as ref
from taichi_nerf.kernels import HashGrid, HashGridSpec, composite, hash_encode, sh_encode
from taichi_nerf.kernels.marching import OccupancyGrid, march_rays

# (minimum twin/Taichi fwd+bwd ratio on the CPU, maximum fwd+bwd milliseconds on CUDA)
TARGETS = {
    "hash_encode": (8.0, 1.0),
    "composite": (8.0, 0.3),
}


@dataclass
class Case:
    """One op: closures running the Taichi op and its twin, forward only and forward+backward."""

    name: str
    sizes: dict
    kernel_fwd: object
    kernel_fwd_bwd: object
    twin_fwd: object
    twin_fwd_bwd: object
    check: object = None  # returns max |kernel - twin| of the forward outputs
    times: dict = field(default_factory=dict)  # label -> wall seconds per repeat
    cpu_times: dict = field(default_factory=dict)  # label -> process CPU seconds per repeat


def _sync(device: str) -> None:
    if device == "cuda":
        import taichi as ti

        ti.sync()
        torch.cuda.synchronize()


def _time(fn, device: str, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds (all threads) of each repeat."""
    for _ in range(warmup):
        fn()
    _sync(device)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def _grad(outputs, inputs, upstream):
    return torch.autograd.grad(outputs, inputs, upstream)


# ----------------------------------------------------------------------------------------------
# cases


def hash_case(device: str, quick: bool, gen: torch.Generator) -> Case:
    n = 2**14 if quick else 2**18
    spec = HashGridSpec(log2_table_size=15 if quick else 19)
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=gen)))
    table = HashGrid(spec).table.detach().to(device).requires_grad_()
    x = torch.rand(n, 3, generator=gen).to(device).requires_grad_()
    v = torch.randn(n, spec.output_dim, generator=gen).to(device)

    def run(op, backward):
        # The forward alone wants no x-gradient, as at inference (with one, hash_encode also
        # stores d(features)/dx for its backward; that cost is in the fwd+bwd column).
        if not backward:
            return op(x.detach(), table, spec)
        return _grad(op(x, table, spec), [x, table], v)

    def check():
        with torch.no_grad():
            return float(
                (hash_encode(x, table, spec) - ref.hash_encode(x, table, spec)).abs().max()
            )

    sizes = {"points": n, "levels": spec.n_levels, "features": spec.n_features,
             "log2_table_size": spec.log2_table_size, "table_rows": spec.table_size,
             "resolutions": f"{spec.base_resolution}..{spec.finest_resolution}"}  # fmt: skip
    return Case(
        "hash_encode", sizes,
        lambda: run(hash_encode, False), lambda: run(hash_encode, True),
        lambda: run(ref.hash_encode, False), lambda: run(ref.hash_encode, True), check,
    )  # fmt: skip


def sh_case(device: str, quick: bool, gen: torch.Generator) -> Case:
    n = 2**14 if quick else 2**18
    d = torch.randn(n, 3, generator=gen)
    d = (d / d.norm(dim=-1, keepdim=True)).to(device).requires_grad_()
    v = torch.randn(n, 16, generator=gen).to(device)

    def run(op, backward):
        out = op(d)
        return _grad(out, [d], v) if backward else out

    def check():
        with torch.no_grad():
            return float((sh_encode(d) - ref.sh_encode(d)).abs().max())

    return Case(
        "sh_encode", {"directions": n},
        lambda: run(sh_encode, False), lambda: run(sh_encode, True),
        lambda: run(ref.sh_encode, False), lambda: run(ref.sh_encode, True), check,
    )  # fmt: skip


def composite_case(device: str, quick: bool, gen: torch.Generator) -> Case:
    n_rays, per_ray = (2**10 if quick else 2**14), 64
    m = n_rays * per_ray
    near, far = 2.0, 6.0
    step = (far - near) / per_ray
    k = torch.arange(per_ray, dtype=torch.float32).repeat(n_rays)
    t_starts = (near + k * step).to(device)
    t_ends = t_starts + step
    ray_indices = torch.arange(n_rays).repeat_interleave(per_ray).to(device)
    # Densities that make about half the rays nearly opaque: realistic transmittance decay.
    sigmas = (torch.rand(m, generator=gen) * 2.0).to(device).requires_grad_()
    rgbs = torch.rand(m, 3, generator=gen).to(device).requires_grad_()
    background = torch.ones(3, device=device)
    v_rgb = torch.randn(n_rays, 3, generator=gen).to(device)
    v_opacity = torch.randn(n_rays, generator=gen).to(device)
    v_depth = torch.randn(n_rays, generator=gen).to(device)

    def run(op, backward):
        out = op(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays, background)
        if not backward:
            return out
        return _grad(out, [sigmas, rgbs], [v_rgb, v_opacity, v_depth])

    def check():
        with torch.no_grad():
            a = composite(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays, background)
            b = ref.composite(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays, background)
            return max(float((p - q).abs().max()) for p, q in zip(a, b))

    return Case(
        "composite", {"rays": n_rays, "samples_per_ray": per_ray, "samples": m},
        lambda: run(composite, False), lambda: run(composite, True),
        lambda: run(ref.composite, False), lambda: run(ref.composite, True), check,
    )  # fmt: skip


def _scene_density(points: torch.Tensor) -> torch.Tensor:
    """A sphere of radius 0.6 and a floor slab: the occupied part of a Blender-like scene."""
    sphere = points.norm(dim=-1) < 0.6
    slab = ((points[:, 2] + 0.7).abs() < 0.05) & (points[:, :2].abs() < 1.0).all(dim=-1)
    return (sphere | slab).float() * 10.0


def march_case(device: str, quick: bool, gen: torch.Generator) -> Case:
    n_rays = 2**10 if quick else 2**14
    resolution = 64 if quick else 128
    grid = OccupancyGrid([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5], resolution=resolution).to(device)
    grid.update(0, _scene_density)  # step 0 is in the warm-up: every cell is evaluated
    # Cameras on a sphere of radius 4 (Blender's), rays towards random points of the box.
    cam = torch.randn(n_rays, 3, generator=gen)
    rays_o = 4.0 * cam / cam.norm(dim=-1, keepdim=True)
    target = (torch.rand(n_rays, 3, generator=gen) * 2 - 1) * 1.2
    rays_d = target - rays_o
    rays_d = rays_d / rays_d.norm(dim=-1, keepdim=True)
    rays_o, rays_d = rays_o.to(device), rays_d.to(device)
    step = 3.0 * 3**0.5 / 1024  # instant-ngp: the box diagonal over 1024
    args = (grid, rays_o, rays_d, 2.0, 6.0, step)

    def check():
        a, b = march_rays(*args), ref.march_rays(*args)
        if a[0].shape != b[0].shape:
            return float("inf")
        return max(float((p.double() - q.double()).abs().max()) for p, q in zip(a, b))

    samples = int(march_rays(*args)[0].shape[0])
    sizes = {"rays": n_rays, "grid_resolution": resolution, "step_size": step,
             "occupied_fraction": round(grid.occupied_fraction(), 4), "samples": samples}  # fmt: skip
    return Case(
        "march_rays", sizes,
        lambda: march_rays(*args), lambda: march_rays(*args),
        lambda: ref.march_rays(*args), lambda: ref.march_rays(*args), check,
    )  # fmt: skip


CASES = {"hash": hash_case, "sh": sh_case, "composite": composite_case, "march": march_case}


# ----------------------------------------------------------------------------------------------
# reporting


def _git_commit() -> dict:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True).stdout.strip()  # fmt: skip
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical cores)"


def _taichi_threads() -> int | None:
    try:
        from taichi.lang import impl

        return int(impl.current_cfg().cpu_max_num_threads)
    except Exception:  # noqa: BLE001 - informational only
        return None


def _ms(seconds: list[float]) -> float:
    return 1e3 * statistics.median(seconds)


def _row(case: Case, device: str) -> dict:
    t = case.times
    row = {
        "op": case.name,
        "sizes": case.sizes,
        "taichi_fwd_ms": _ms(t["kernel_fwd"]),
        "taichi_fwd_bwd_ms": _ms(t["kernel_fwd_bwd"]),
        "twin_fwd_ms": _ms(t["twin_fwd"]),
        "twin_fwd_bwd_ms": _ms(t["twin_fwd_bwd"]),
        "taichi_fwd_bwd_cpu_ms": _ms(case.cpu_times["kernel_fwd_bwd"]),
        "twin_fwd_bwd_cpu_ms": _ms(case.cpu_times["twin_fwd_bwd"]),
        "repeats_wall_s": t,
        "repeats_cpu_s": case.cpu_times,
        "max_abs_diff_fwd": case.check() if case.check else None,
    }
    row["ratio_fwd"] = row["twin_fwd_ms"] / row["taichi_fwd_ms"]
    row["ratio_fwd_bwd"] = row["twin_fwd_bwd_ms"] / row["taichi_fwd_bwd_ms"]
    if case.name in TARGETS:
        min_ratio, max_ms = TARGETS[case.name]
        if device == "cpu":
            row["target"] = f"twin/taichi fwd+bwd >= {min_ratio:g}x"
            row["target_met"] = row["ratio_fwd_bwd"] >= min_ratio
        else:
            row["target"] = f"fwd+bwd <= {max_ms:g} ms"
            row["target_met"] = row["taichi_fwd_bwd_ms"] <= max_ms
    return row


def _print_table(rows: list[dict]) -> None:
    head = (f"{'op':<12} {'taichi fwd':>11} {'fwd+bwd':>10} {'twin fwd':>10} {'fwd+bwd':>10}"
            f" {'x fwd':>7} {'x f+b':>7}  target")  # fmt: skip
    print(head + "\n" + "-" * len(head))
    for r in rows:
        target = ""
        if "target" in r:
            target = f"{r['target']}: {'met' if r['target_met'] else 'NOT met'}"
        print(f"{r['op']:<12} {r['taichi_fwd_ms']:>9.2f}ms {r['taichi_fwd_bwd_ms']:>8.2f}ms "
              f"{r['twin_fwd_ms']:>8.2f}ms {r['twin_fwd_bwd_ms']:>8.2f}ms "
              f"{r['ratio_fwd']:>6.1f}x {r['ratio_fwd_bwd']:>6.1f}x  {target}")  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each Taichi op")
    parser.add_argument("--twin-repeats", type=int, default=None,
                        help="timed runs of each twin (default: 3 at full size on the CPU, "
                        "else --repeats)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ops", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both torch and Taichi (default: each one's own "
                        "choice, all cores). --threads 1 measures per-core work, which a "
                        "machine shared with other jobs distorts least")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--note", default="", help="free text stored in the JSON (machine state)")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU; use --device cpu")
    if args.threads:
        # ti.init reads TI_<OPTION> overrides from the environment.
        os.environ["TI_CPU_MAX_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    taichi_nerf.init(args.device)
    twin_repeats = args.twin_repeats or (
        3 if (args.device == "cpu" and not args.quick) else args.repeats
    )
    gen = torch.Generator().manual_seed(args.seed)
    load_before = os.getloadavg()

    rows = []
    for key in args.ops:
        case = CASES[key](args.device, args.quick, gen)
        print(f"[{case.name}] {case.sizes}", file=sys.stderr, flush=True)
        for label, fn, reps in (
            ("kernel_fwd", case.kernel_fwd, args.repeats),
            ("kernel_fwd_bwd", case.kernel_fwd_bwd, args.repeats),
            ("twin_fwd", case.twin_fwd, twin_repeats),
            ("twin_fwd_bwd", case.twin_fwd_bwd, twin_repeats),
        ):
            warmup = args.warmup if label.startswith("kernel") else 1
            case.times[label], case.cpu_times[label] = _time(fn, args.device, reps, warmup)
        rows.append(_row(case, args.device))

    import taichi as ti

    result = {
        "benchmark": "kernels",
        "device": args.device,
        "device_name": _device_name(args.device),
        "torch_threads": torch.get_num_threads(),
        "taichi_cpu_threads": _taichi_threads(),
        "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "taichi": ".".join(map(str, ti.__version__)),
            "taichi_nerf": taichi_nerf.__version__,
        },  # fmt: skip
        "git": _git_commit(),
        "quick": args.quick,
        "repeats": {"taichi": args.repeats, "twin": twin_repeats, "warmup": args.warmup},
        "timing": "wall clock (and process CPU time, all threads), median of repeats after "
        "warm-up; CUDA synchronised",
        "note": args.note,
        "results": rows,
    }
    _print_table(rows)
    print(f"device: {result['device_name']}; load average before/after: "
          f"{load_before[0]:.2f} / {result['load_average_1_5_15min']['after'][0]:.2f}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
