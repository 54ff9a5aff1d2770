"""Report a benchmarks/lego.py result file: PSNR vs training time (all rows on one chart) and mean
rotation error vs step as PNG, and the markdown table.

    python examples/plot_lego.py benchmarks/results/lego_quick_cpu.json --markdown table.md

Drawn with Pillow (already installed with imageio, a dependency) rather than matplotlib, which is
not a dependency of this project: line charts with axes, ticks, a legend and an optional log
scale are a hundred lines, and the plots then work on every machine that runs the benchmark.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

#: Line colours (tab10), one per row in file order.
COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]
SIZE = (900, 560)
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 80, 230, 64, 56


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering ``[lo, hi]``."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.0e}"
    return f"{v:.4g}"


def line_chart(
    series: list[tuple[str, list[float], list[float]]],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    log_y: bool = False,
    colours: list[int] | None = None,
) -> Path:
    """Write a PNG line chart of ``series`` = ``[(label, xs, ys), ...]``; points with a None or
    non-finite y (or y <= 0 on a log axis) are skipped. ``colours``: index into :data:`COLOURS`
    per series (default: in order), so one row keeps its colour across charts. Returns ``path``."""
    clean = []
    for label, xs, ys in series:
        pts = [(float(x), float(y)) for x, y in zip(xs, ys)
               if x is not None and y is not None and math.isfinite(y) and (y > 0 or not log_y)]
        clean.append((label, pts))
    all_pts = [p for _, pts in clean for p in pts]
    img = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(16), _font(12)
    draw.text((MARGIN_L, 10), title, fill="black", font=font)
    x0, y0, x1, y1 = MARGIN_L, MARGIN_T, SIZE[0] - MARGIN_R, SIZE[1] - MARGIN_B
    draw.rectangle([x0, y0, x1, y1], outline="black")
    if not all_pts:
        draw.text((x0 + 10, y0 + 10), "no data", fill="black", font=font)
        img.save(path)
        return path
    fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    xmin, xmax = 0.0, max(x for x, _ in all_pts) or 1.0
    ymin, ymax = min(fy(y) for _, y in all_pts), max(fy(y) for _, y in all_pts)
    pad = 0.05 * (ymax - ymin or 1.0)
    ymin, ymax = ymin - pad, ymax + pad
    if log_y:
        ymin, ymax = math.floor(ymin), math.ceil(ymax)
    to_px = lambda x, y: (x0 + (x - xmin) / (xmax - xmin) * (x1 - x0),
                          y1 - (fy(y) - ymin) / (ymax - ymin) * (y1 - y0))
    for xt in _nice_ticks(xmin, xmax):
        px = x0 + (xt - xmin) / (xmax - xmin) * (x1 - x0)
        draw.line([px, y1, px, y1 + 5], fill="black")
        draw.line([px, y0, px, y1], fill=(230, 230, 230))
        draw.text((px - 10, y1 + 8), _fmt(xt), fill="black", font=small)
    yticks = (
        [10.0**e for e in range(int(ymin), int(ymax) + 1)] if log_y
        else _nice_ticks(ymin, ymax)
    )
    for yt in yticks:
        py = y1 - (fy(yt) - ymin) / (ymax - ymin) * (y1 - y0)
        if y0 - 1 <= py <= y1 + 1:
            draw.line([x0 - 5, py, x0, py], fill="black")
            draw.line([x0, py, x1, py], fill=(230, 230, 230))
            draw.text((8, py - 7), _fmt(yt), fill="black", font=small)
    draw.rectangle([x0, y0, x1, y1], outline="black")
    draw.text(((x0 + x1) // 2 - 60, SIZE[1] - 24), xlabel, fill="black", font=font)
    draw.text((8, y0 - 22), ylabel, fill="black", font=small)
    for i, (label, pts) in enumerate(clean):
        colour = COLOURS[(colours[i] if colours else i) % len(COLOURS)]
        px = [to_px(x, y) for x, y in pts]
        if len(px) > 1:
            draw.line(px, fill=colour, width=2)
        for x, y in px:
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
        ly = y0 + 8 + 20 * i
        draw.line([x1 + 12, ly + 7, x1 + 36, ly + 7], fill=colour, width=3)
        draw.text((x1 + 42, ly), label[:28], fill="black", font=small)
    img.save(path)
    return path


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def markdown(results: dict[str, Any]) -> str:
    """The markdown section: a header saying what ran where, the table, overhead, speed-ups."""
    env, s = results["environment"], results["settings"]
    lines = [
        f"### lego benchmark — {results['mode']} run on {env['device_name']}",
        "",
        f"{results['label']}. Scene `{s['scene']}` at {s['image_size'][0]}x{s['image_size'][1]}"
        f" (downscale {s['downscale']}), {s['test_views']} test views (the first of the test"
        f" split, same for every row), val PSNR on {s['num_val_views']} val view(s) every"
        f" {s['val_every']} steps. Commit `{(env['git_commit'] or '?')[:10]}`"
        f"{' (dirty tree)' if env['git_dirty'] else ''}, {env['date']}; torch"
        f" {env['versions']['torch']}, taichi {env['versions']['taichi']}; load average at"
        f" start {', '.join(f'{x:.1f}' for x in env['load_average_start'] or [])}"
        f" on {env['cpu_count']} cores.",
        "",
        "| row | setup | test PSNR | SSIM | rot err ° start→end | rot ° aligned |"
        " trans err start→end | trans aligned | BARF t×100 | steps | train s | total s | it/s |"
        " peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['id']} | {r['name']}{' (TTR)' if r['test_time_refinement'] else ''} "
            f"| {_f(r['test_psnr'], '.2f')} | {_f(r['test_ssim'], '.3f')} "
            f"| {_f(r['initial_rotation_error_mean_deg'], '.3f')}→"
            f"{_f(r['rotation_error_mean_deg'], '.3f')} "
            f"| {_f(r['aligned_rotation_error_mean_deg'], '.3f')} "
            f"| {_f(r['initial_translation_error_mean'], '.4f')}→"
            f"{_f(r['translation_error_mean'], '.4f')} "
            f"| {_f(r['aligned_translation_error_mean'], '.4f')} "
            f"| {_f(r['aligned_barf_translation_error_mean_x100'], '.3f')} | {r['steps']} "
            f"| {_f(r['train_time_s'], '.1f')} | {_f(r['total_time_s'], '.1f')} "
            f"| {_f(r['iters_per_sec'], '.2f')} | {r['peak_memory_bytes'] / 2**20:.0f} |")
    lines += ["", "Rotation errors in degrees, translation errors in scene units (raw: same frame"
              " as the ground truth; aligned: after a Sim(3) fit of the camera centres). Peak"
              " memory: " + ("CUDA max allocated" if env["device"] == "cuda" else
                             "process peak RSS, reset before each row") + "."]
    ov = results.get("pose_overhead")
    if ov:
        lines += ["", f"Joint-vs-fixed step time ({ov['model']}, {ov['rays_per_step']} rays,"
                  f" {ov['steps_each']} interleaved steps each, median): fixed"
                  f" {ov['fixed_step_ms']:.1f} ms, joint {ov['joint_step_ms']:.1f} ms,"
                  f" overhead {ov['overhead_pct']:+.1f}% (goal ≤ 5%)."]
    rows23 = results.get("joint_vs_fixed_rows_2_3")
    if rows23:
        lines += ["", f"Rows 2 vs 3 (separate runs; row 3's steps before the pose delay are"
                  f" fixed-pose steps): {rows23['fixed_iters_per_sec']:.2f} vs"
                  f" {rows23['joint_iters_per_sec']:.2f} it/s, {rows23['overhead_pct']:+.1f}%."]
    ms = results.get("mode_settings", {})
    if any(r["model"] == "vanilla" for r in results["rows"]):
        size = ", ".join(f"{k} {v}" for k, v in (ms.get("vanilla") or {}).items())
        budget = (f"a {ms['vanilla_budget_s']:.0f} s training budget" if ms.get("vanilla_budget_s")
                  else f"{ms.get('vanilla_iters')} steps")
        lines += ["", "Vanilla rows: " + (f"reduced model ({size}); the paper's is width 256,"
                                          " depth 8, 64+128 samples" if size else
                                          "the paper's model (width 256, depth 8, 64+128 samples)")
                  + f", {budget}, {ms.get('vanilla_batch') or 1024} rays per step."]
    for sp in results.get("speedups", []):
        ngp_t = _f(sp["ngp_time_s"], ".1f") if sp["ngp_time_s"] is not None else "not reached"
        lines += ["", f"Time to vanilla NeRF's final val PSNR ({sp['target_val_psnr']:.2f} dB,"
                  f" row {sp['vanilla_row']}): vanilla {_f(sp['vanilla_time_s'], '.1f')} s,"
                  f" ngp row {sp['ngp_row']} {ngp_t} s"
                  + (f" — speed-up {sp['speedup']:.3g}x." if sp["speedup"] else ".")]
    for failed in results.get("failed_rows", []):
        lines += ["", f"Row {failed['id']} ({failed['name']}) failed: {failed['error']}"]
    if results.get("plots"):
        lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in results["plots"]) + "."]
    return "\n".join(lines) + "\n"


def plot_results(results: dict, out_dir: Path, stem: str) -> list[Path]:
    """PSNR vs training time for every row, mean rotation error vs step for rows with poses.

    Args:
        results: the dict benchmarks/lego.py writes (``rows`` with ``history`` lists).
        out_dir: folder for ``{stem}_psnr_vs_time.png`` and ``{stem}_rotation_error.png``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in results["rows"] if r.get("history")]
    label = lambda r: f"{r['id']} {r['name']}"
    psnr = [(label(r), [h["wall_time_s"] for h in r["history"]],
             [h.get("val_psnr") for h in r["history"]]) for r in rows]
    posed = [i for i, r in enumerate(rows) if r.get("learn_poses")]
    rot = [(label(rows[i]), [h["step"] for h in rows[i]["history"]],
            [h.get("rotation_error_mean") for h in rows[i]["history"]]) for i in posed]
    tag = results.get("mode", "")
    return [
        line_chart(psnr, out_dir / f"{stem}_psnr_vs_time.png",
                   title=f"Val PSNR vs training time ({tag}, {results.get('device_name', '')})",
                   xlabel="training time [s]", ylabel="val PSNR [dB]"),
        line_chart(rot, out_dir / f"{stem}_rotation_error.png",
                   title=f"Mean rotation error vs step ({tag})",
                   xlabel="step", ylabel="rotation error [deg] (log)", log_y=True,
                   colours=posed),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="JSON written by benchmarks/lego.py")
    parser.add_argument("--out-dir", type=Path, default=None, help="default: next to the JSON")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here too")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    out = plot_results(results, args.out_dir or args.results.parent, args.results.stem)
    for p in out:
        print(p)
    if args.markdown:
        args.markdown.write_text(markdown(results))
        print(args.markdown)


if __name__ == "__main__":
    main()
