"""The live viewer's cost to training, and the README's screenshot of it.

Times the same training steps (the demo scene, the CPU preset, ``--stop-after N``: no test
evaluation) three ways, interleaved, ``--repeats`` times:

- ``off``: no viewer;
- ``view``: the viewer with a camera view set as a browser's would be (render panel and scene
  refreshes busy the whole run), no browser: the viewer's own cost, which its budget bounds;
- ``chromium``: the viewer with a real headless chromium connected (playwright), which on a
  small machine also draws the scene in software WebGL on the same cores.

The slowdown is the median loop time over ``off``'s. ``--screenshot PATH`` also runs
``--shot-steps`` steps with chromium watching, pauses from the browser, waits for the finest
render and saves the page (quantised PNG).

    python benchmarks/viewer.py --steps 150 --repeats 2 --json benchmarks/results/viewer_cpu.json
    python benchmarks/viewer.py --steps 0 --screenshot docs/viewer.png --shot-steps 400
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from taichi_nerf.training import EvalConfig, TrainConfig
from taichi_nerf.training.trainer import Trainer

CHROMIUM = (os.environ.get("TAICHI_NERF_CHROMIUM") or shutil.which("chromium")
            or "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PORT = 8097


def _config(args, out: Path, viewer: bool, steps: int) -> TrainConfig:
    return TrainConfig(data_dir=args.data_dir, downscale=args.downscale, output_dir=str(out),
                       progress=False, num_iters=max(steps, 1) + 1000, stop_after=steps,
                       val_every=100000, num_val_views=1, eval=EvalConfig(num_test_views=1),
                       device="cpu", viewer=viewer, viewer_port=PORT)


class Browser(threading.Thread):
    """Headless chromium on the viewer's page; optionally pauses, screenshots, resumes."""

    def __init__(self, url: str, trainer=None, shot: Path | None = None, pause_at: int = 0):
        super().__init__(daemon=True)
        self.url, self.trainer, self.shot, self.pause_at = url, trainer, shot, pause_at
        self.viewport = {"width": 1100, "height": 640 if shot is None else 860}
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as p:
                context = p.chromium.launch_persistent_context(
                    tempfile.mkdtemp(), executable_path=CHROMIUM, args=ARGS,
                    viewport=self.viewport)
                page = context.new_page()
                page.goto(self.url)
                page.get_by_text("Pause training").or_(
                    page.get_by_text("Resume training")).first.wait_for(timeout=120000)
                close = page.locator(".mantine-Notification-closeButton")
                if close.count():
                    close.first.click()
                self.ready.set()
                if self.shot is not None:
                    self._screenshot(page)
                while self.trainer is not None and not self.trainer.viewer.session.closed:
                    page.wait_for_timeout(200)
                context.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
        finally:
            self.ready.set()
            if self.trainer is not None:
                self.trainer.viewer.controls.set_paused(False)

    def _screenshot(self, page) -> None:
        while self.trainer.step_count < self.pause_at:
            page.wait_for_timeout(200)
        page.get_by_role("button", name="Pause training").click()
        page.get_by_text("256x").wait_for(timeout=120000)  # the finest render, while paused
        page.wait_for_timeout(1500)
        page.screenshot(path=str(self.shot))
        page.get_by_role("button", name="Resume training").click()


def timed_run(args, mode: str, out: Path) -> dict:
    from taichi_nerf.viewer.controls import CameraView

    trainer = Trainer(_config(args, out, mode != "off", args.steps))
    browser = None
    if mode != "off":
        from taichi_nerf.viewer import ViewerHook

        trainer.viewer = ViewerHook.start(trainer)
        if mode == "view":  # the browser's default view of the scene
            cam = trainer.viewer.session.server.initial_camera
            c2w = _look_at(np.asarray(cam.position), np.asarray(cam.look_at), np.asarray(cam.up))
            trainer.viewer.controls.set_camera(CameraView(c2w, 1.3, 1100 / 640, time.monotonic()))
        else:
            browser = Browser(trainer.viewer.session.url, trainer)
            browser.start()
            browser.ready.wait(180)
    tic = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - tic
    if browser is not None:
        browser.join(30)
        if browser.error is not None:
            raise browser.error
    hook = trainer.viewer
    return {"mode": mode, "loop_s": seconds, "steps": trainer.steps_this_run,
            "viewer_s": hook.viewer_time if hook else 0.0,
            "renders": hook.session.render_panel.renders if hook else 0}


def _look_at(position, target, up) -> np.ndarray:
    back = position - target
    back = back / np.linalg.norm(back)
    right = np.cross(up, back)
    right = right / np.linalg.norm(right)
    return np.stack([right, np.cross(back, right), back, position], axis=1)


def screenshot(args, out: Path) -> None:
    from PIL import Image

    trainer = Trainer(_config(args, out, True, args.shot_steps))
    from taichi_nerf.viewer import ViewerHook

    trainer.viewer = ViewerHook.start(trainer)
    raw = Path(tempfile.mkdtemp()) / "viewer.png"
    browser = Browser(trainer.viewer.session.url, trainer, raw, args.shot_steps - 20)
    browser.start()
    browser.ready.wait(180)
    trainer.train()
    browser.join(60)
    if browser.error is not None:
        raise browser.error
    image = Image.open(raw).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
    image.save(args.screenshot, optimize=True)
    print(f"wrote {args.screenshot} ({Path(args.screenshot).stat().st_size // 1024} kB)")


def summarise(runs: list[dict], modes: list[str]) -> dict:
    """Per mode: the median loop time, its slowdown over ``off``'s median, the median of the
    per-repeat ratios to the ``off`` run just before (robust to the load drifting between
    repeats on a shared machine), and the viewer's own time as a share of the rest."""
    base = statistics.median(r["loop_s"] for r in runs if r["mode"] == "off")
    offs = [r["loop_s"] for r in runs if r["mode"] == "off"]
    summary = {}
    for mode in modes:
        mine = [r for r in runs if r["mode"] == mode]
        loops = [r["loop_s"] for r in mine]
        paired = [100 * (r["loop_s"] / off - 1) for r, off in zip(mine, offs)]
        share = [100 * r["viewer_s"] / (r["loop_s"] - r["viewer_s"]) for r in mine]
        summary[mode] = {"median_loop_s": statistics.median(loops),
                         "slowdown_pct": 100 * (statistics.median(loops) / base - 1),
                         "paired_slowdown_pct": paired,
                         "median_paired_slowdown_pct": statistics.median(paired),
                         "viewer_share_pct": statistics.median(share)}
        print(f"{mode:9s} loop {summary[mode]['median_loop_s']:.1f} s, slowdown "
              f"{summary[mode]['slowdown_pct']:+.1f}% (paired median "
              f"{summary[mode]['median_paired_slowdown_pct']:+.1f}%), viewer's own time "
              f"{summary[mode]['viewer_share_pct']:.1f}%")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", default="off,view,chromium")
    parser.add_argument("--downscale", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--screenshot", default=None)
    parser.add_argument("--shot-steps", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TI_CPU_MAX_NUM_THREADS", str(args.threads))
    work = Path(tempfile.mkdtemp(prefix="viewer_bench_"))
    runs, load_before = [], os.getloadavg()
    if args.steps > 0:  # Taichi compiles its kernels in the first run of a process: not timed
        timed_run(argparse.Namespace(**{**vars(args), "steps": 3}), "off", work / "warmup")
    for repeat in range(args.repeats if args.steps > 0 else 0):
        for mode in args.modes.split(","):
            run = timed_run(args, mode, work / f"{mode}{repeat}")
            runs.append(run)
            print(json.dumps(run), flush=True)
    if runs:
        summary = summarise(runs, args.modes.split(","))
        if args.json:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip()
            Path(args.json).write_text(json.dumps({
                "what": "training loop wall time with and without the live viewer",
                "steps": args.steps, "downscale": args.downscale, "threads": args.threads,
                "machine": f"{platform.processor() or platform.machine()} "
                           f"({os.cpu_count()} logical cores)", "commit": commit,
                "torch": torch.__version__, "load_average_before_after":
                    [load_before, os.getloadavg()], "summary": summary, "runs": runs},
                indent=2) + "\n")
    if args.screenshot:
        screenshot(args, work / "shot")


if __name__ == "__main__":
    sys.exit(main())
