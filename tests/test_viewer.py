"""The live viewer (viser): flags, one-line errors, the server-side scene and numbers, results
unchanged by it, the finished-run viewer, and a real headless browser on a running viewer.

Runs use conftest's tiny demo scene (16 px, 6 training cameras) and a small field, so each
training run takes a few seconds on the CPU.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import imageio.v3
import numpy as np
import pytest
import torch

from taichi_nerf.training import EvalConfig, NGPConfig, TrainConfig
from taichi_nerf.training.config import ConfigError, config_to_dict, resolve_config

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = (os.environ.get("TAICHI_NERF_CHROMIUM") or shutil.which("chromium")
            or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
COLOUR_TOL = 40  # RGB distance: antialiased frustum lines blend with the white background
MIN_COLOUR_PIXELS = 20  # pixels of a frustum colour in the screenshot (measured: hundreds)
BROWSER_TIMEOUT_MS = 60000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_config(scene_dir, out, **overrides) -> TrainConfig:
    base = dict(scene=str(scene_dir), output_dir=str(out), progress=False, num_iters=30,
                val_every=15, log_every=10, batch_size=256, pose_opt_delay=5, num_val_views=1,
                eval=EvalConfig(num_test_views=1), device="cpu",
                ngp=NGPConfig(target_samples=0, n_levels=2, log2_table_size=12,
                              finest_resolution=32, grid_resolution=32, marching_steps=64,
                              hidden_dim=16))
    base.update(overrides)
    return TrainConfig(**base)


def comparable(result) -> tuple[dict, list]:
    """metrics.json and the history of a run without the wall-clock fields and the config."""
    clock = {"train_time_s", "iters_per_sec", "peak_memory_bytes", "config", "wall_time_s"}
    metrics = {k: v for k, v in result["metrics"].items() if k not in clock}
    history = [{k: v for k, v in e.items() if k not in clock} for e in result["history"]]
    return metrics, history


@pytest.fixture(scope="module")
def reference_run(tiny_demo_dir, tmp_path_factory):
    """The tiny run without the viewer: what every viewer run must reproduce exactly."""
    from taichi_nerf.training import train_with_pose_optimization

    out = tmp_path_factory.mktemp("reference")
    return train_with_pose_optimization(tiny_config(tiny_demo_dir, out))


# ------------------------------------------------------------------ flags and one-line errors
@pytest.mark.parametrize("port", [0, 65536, -1, True])
def test_viewer_port_is_range_checked(port):
    with pytest.raises(ConfigError, match=r"--viewer-port must be a port number in 1\.\.65535"):
        resolve_config(TrainConfig(viewer_port=port), torch.device("cpu"))


def test_viewer_host_must_be_given():
    with pytest.raises(ConfigError, match="--viewer-host must be an address"):
        resolve_config(TrainConfig(viewer_host=" "), torch.device("cpu"))


def test_viewer_flags_may_change_on_resume_and_are_not_inherited(tmp_path):
    from taichi_nerf.training.resume import ResumeTarget, resume_config

    saved = config_to_dict(resolve_config(TrainConfig(viewer=True, viewer_port=9001),
                                          torch.device("cpu")))
    target = ResumeTarget(tmp_path / "run", None, saved, 0)
    asked = TrainConfig(resume="latest", viewer=True, viewer_port=9002, viewer_host="0.0.0.0")
    merged = resume_config(asked, target, {"resume", "viewer", "viewer_port", "viewer_host"})
    assert (merged.viewer, merged.viewer_port, merged.viewer_host) == (True, 9002, "0.0.0.0")
    plain = resume_config(TrainConfig(resume="latest"), target, {"resume"})
    assert (plain.viewer, plain.viewer_port) == (False, 8080)


def _cli_error(capsys, argv) -> tuple[int, str]:
    from taichi_nerf.commands.train_pose_opt import main

    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_without_viser_the_viewer_is_one_error_line(tiny_demo_dir, tmp_path, capsys,
                                                     monkeypatch):
    monkeypatch.setitem(sys.modules, "viser", None)  # import viser -> ImportError
    code, err = _cli_error(capsys, ["--scene", str(tiny_demo_dir), "--viewer", "--device", "cpu",
                                    "--output-dir", str(tmp_path / "out"), "--num-iters", "5"])
    assert code == 2
    assert err == ["error: --viewer needs the viser package, which is not installed: "
                   "pip install 'taichi-nerf[viewer]'"]
    assert not (tmp_path / "out").exists()  # refused before the run folder was made


def test_viewer_port_in_use_is_one_error_line(tiny_demo_dir, tmp_path, capsys):
    pytest.importorskip("viser")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = _cli_error(capsys, ["--scene", str(tiny_demo_dir), "--viewer",
                                        "--viewer-port", str(port), "--device", "cpu",
                                        "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: --viewer-port {port}: "), err
    assert "already in use" in err[0] and "--viewer-port N" in err[0]
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the server-side state
@pytest.fixture(scope="module")
def viewed_run(tiny_demo_dir, tmp_path_factory):
    """The tiny run with the viewer: a camera view set (as a browser's would be), "save
    checkpoint now" pressed, the grid shown, and paused after step 1 until the render panel
    has shown an image (at least half a second)."""
    pytest.importorskip("viser")
    from taichi_nerf.training.trainer import Trainer
    from taichi_nerf.viewer import ViewerHook
    from taichi_nerf.viewer.controls import CameraView
    from taichi_nerf.viewer.scene import to_wxyz

    out = tmp_path_factory.mktemp("viewed")
    trainer = Trainer(tiny_config(tiny_demo_dir, out, viewer=True, viewer_port=free_port()))
    hook = trainer.viewer = ViewerHook.start(trainer)
    wxyz, position = to_wxyz(trainer.gt_poses[0].cpu().numpy())
    hook.controls.set_camera(CameraView.from_viser(wxyz, position, 0.8, 4 / 3))
    hook.controls.request_save()
    hook.controls.set_shown("grid", True)
    hook.controls.set_paused(True)
    stop = threading.Event()

    def resume_once_the_render_shows() -> None:  # as a user would, half a second at least
        while not stop.is_set() and "paused" not in hook.session.panel.status.content:
            time.sleep(0.02)
        stop.wait(0.5)
        deadline = time.monotonic() + 120  # a loaded machine renders slowly: not a timing test
        while not stop.is_set() and hook.session.render_panel.renders < 1 and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        hook.controls.set_paused(False)

    user = threading.Thread(target=resume_once_the_render_shows)
    user.start()
    try:
        result = trainer.train()
    finally:
        stop.set()
        user.join()
    return trainer, hook, result


def test_viewer_does_not_change_the_results(viewed_run, reference_run):
    _, hook, result = viewed_run
    assert hook.paused_time >= 0.4  # it did pause (and rendered meanwhile)
    assert hook.session.render_panel.renders >= 1
    assert comparable(result) == comparable(reference_run)


def test_viewer_scene_nodes_poses_and_colours(viewed_run):
    from taichi_nerf.viewer.scene import INITIAL_COLOUR, TRUTH_COLOUR, error_colour, to_wxyz

    trainer, hook, _ = viewed_run
    scene = hook.session.scene
    n = len(trainer.train_set)
    assert [h.name for h in scene.current] == [f"/cameras/current/{i:03d}" for i in range(n)]
    assert len(scene.truth) == len(scene.initial) == n
    final = trainer.pose_params.get_poses().detach()
    errors_px = hook.session.cameras.rotation_errors_px(final)
    assert errors_px.max() > 0.5  # the noisy start is still visible after 30 steps
    for i, handle in enumerate(scene.current):
        wxyz, position = to_wxyz(final[i].cpu().numpy())
        np.testing.assert_allclose(handle.position, position, atol=1e-5)
        np.testing.assert_allclose(handle.wxyz, wxyz, atol=1e-5)
        assert tuple(handle.color) == error_colour(errors_px[i], scene.top_px)
        assert handle.image is not None and handle.image.shape[2] == 3  # its thumbnail
        wxyz0, position0 = to_wxyz(trainer.init_poses[i].cpu().numpy())
        np.testing.assert_allclose(scene.initial[i].position, position0, atol=1e-5)
        np.testing.assert_allclose(scene.initial[i].wxyz, wxyz0, atol=1e-5)
        assert tuple(scene.initial[i].color) == INITIAL_COLOUR
        np.testing.assert_allclose(scene.truth[i].position, trainer.gt_poses[i, :, 3].cpu(),
                                   atol=1e-5)
        assert tuple(scene.truth[i].color) == TRUTH_COLOUR
    assert scene.box.visible and np.asarray(scene.box.points).shape == (12, 2, 3)
    occupied = int(trainer.renderer.grid.occupancy.sum())
    assert scene.grid_points is not None and scene.grid_points.visible  # toggled on
    assert np.asarray(scene.grid_points.points).shape == (occupied, 3) and occupied > 0
    box = trainer.train_set.scene_aabb.cpu().numpy()
    assert (scene.grid_points.points >= box[:3] - 1e-3).all()
    assert (scene.grid_points.points <= box[3:] + 1e-3).all()
    assert scene.top_px >= 1.0
    legend = hook.session.panel.legend.content
    assert "rotation error vs ground truth, pixels" in legend
    assert f"{scene.top_px:g} px" in legend and "linear-gradient" in legend


def test_viewer_numbers_plot_render_and_saved_checkpoint(viewed_run):
    from taichi_nerf.training.checkpoint import load_checkpoint
    from taichi_nerf.viewer import check_viewer
    from taichi_nerf.viewer.panel import LEVEL_WIDTHS

    trainer, hook, result = viewed_run
    session = hook.session
    numbers = session.numbers
    final = result["history"][-1]
    assert numbers["step"] == trainer.cfg.num_iters == final["step"]
    assert numbers["rotation_deg"] == pytest.approx(final["rotation_error_mean"])
    assert numbers["rotation_px"] == pytest.approx(final["rotation_error_px_mean"])
    assert numbers["translation"] == pytest.approx(final["translation_error_mean"])
    assert numbers["loss"] == pytest.approx(final["loss"])
    table = session.panel.numbers.content
    assert f"{final['step']} / {trainer.cfg.num_iters}" in table
    assert f"{final['rotation_error_mean']:.3f}°" in table
    assert session.panel.status.content.startswith(f"run finished at step {final['step']}")
    steps, rotation, _ = session.plot
    assert steps[0] == 0 and steps[-1] == final["step"] and len(steps) >= 3
    assert rotation[-1] == pytest.approx(final["rotation_error_px_mean"])
    image = session.render_panel.image("rgb")
    assert image.dtype == np.uint8 and image.shape[1] in LEVEL_WIDTHS
    assert image.std() > 1.0  # not a blank frame
    assert session.panel.render_info.content.startswith(f"{image.shape[1]}x{image.shape[0]} px")
    assert hook.saved == ["checkpoint_1.pt"]
    saved = trainer.run_dir / "checkpoint_1.pt"
    assert load_checkpoint(saved)["step"] == 1
    assert session.closed
    check_viewer("127.0.0.1", session.port)  # the port is free again: the server stopped


# ------------------------------------------------------------------ a finished run
def test_run_viewer_shows_a_finished_run(reference_run):
    pytest.importorskip("viser")
    from taichi_nerf.viewer.controls import CameraView
    from taichi_nerf.viewer.run import RunViewer
    from taichi_nerf.viewer.scene import to_wxyz

    viewer = RunViewer(reference_run["output_dir"], host="127.0.0.1", port=free_port(),
                       device="cpu")
    try:
        final = torch.load(reference_run["output_dir"] / "final_poses.pt", weights_only=True)
        scene = viewer.session.scene
        for i, handle in enumerate(scene.current):
            np.testing.assert_allclose(handle.wxyz, to_wxyz(final["optimized_poses"][i].numpy())[0],
                                       atol=1e-5)
        numbers = viewer.session.numbers
        assert numbers["rotation_deg"] == pytest.approx(
            final["pose_errors"]["rotation_error_mean"], rel=1e-5)
        assert viewer.session.panel.pause_button is None  # nothing to pause
        wxyz, position = to_wxyz(final["ground_truth_poses"][0].numpy())
        viewer.session.controls.set_camera(CameraView.from_viser(wxyz, position, 0.8, 1.0))
        deadline = time.monotonic() + 30
        while viewer.tick(0.2) and time.monotonic() < deadline:
            pass  # until the finest image is rendered (then there is nothing left to do)
        done = viewer.session.render_panel.finished
        assert done is not None and done["width"] == 256 and done["rgb"].std() > 1.0
        viewer.session.controls.set_render_mode("depth")
        viewer.tick()
        assert viewer.session.panel.render_info.content.startswith("256x256 px, depth")
    finally:
        viewer.close()


def _sigint_as_in_a_terminal() -> None:
    """In the child, before exec: SIGINT back to its default. A job started in the background
    by a non-interactive shell (``cmd &``, as CI may be) inherits SIGINT ignored, and Python
    then never raises KeyboardInterrupt, so the Ctrl-C these tests send would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_view_command_serves_until_ctrl_c(reference_run):
    pytest.importorskip("viser")
    port = free_port()
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TI_SKIP_VERSION_CHECK": "ON"}
    proc = subprocess.Popen([sys.executable, "-m", "taichi_nerf.commands.view",
                             str(reference_run["output_dir"]), "--viewer-port", str(port),
                             "--device", "cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                            preexec_fn=_sigint_as_in_a_terminal)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "viewer:" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, f"the view command ended: {proc.poll()}"
        assert f"viewer: http://127.0.0.1:{port}" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "viewer stopped" in rest and "Traceback" not in rest


def test_ctrl_c_stops_a_run_with_the_viewer_cleanly(tiny_demo_dir, tmp_path):
    pytest.importorskip("viser")
    from taichi_nerf.training.checkpoint import load_checkpoint
    from taichi_nerf.viewer import check_viewer

    port, out = free_port(), tmp_path / "out"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TI_SKIP_VERSION_CHECK": "ON"}
    argv = ["--scene", str(tiny_demo_dir), "--viewer", "--viewer-port", str(port), "--device",
            "cpu", "--output-dir", str(out), "--experiment-name", "run", "--num-iters", "100000",
            "--val-every", "5", "--batch-size", "256", "--ngp.target-samples", "0",
            "--num-val-views", "1", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "taichi_nerf.commands.train_pose_opt", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=ROOT, preexec_fn=_sigint_as_in_a_terminal)
    try:
        deadline = time.monotonic() + 120
        while not (out / "run" / "checkpoint_latest.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.poll()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)  # no hanging server thread
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert f"viewer: http://127.0.0.1:{port}" in output and "Traceback" not in output
    assert "error: interrupted; the checkpoints written so far are intact" in output
    assert load_checkpoint(out / "run" / "checkpoint_latest.pt")["step"] >= 5
    check_viewer("127.0.0.1", port)  # the port is free: the server went with the process


# ------------------------------------------------------------------ a real browser
def _browser_or_skip():
    """Playwright's sync API and a chromium it can start, or a skip naming what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright); the server-side "
                    "tests above still check the viewer")
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium, or set "
                    f"TAICHI_NERF_CHROMIUM)")
    return sync_playwright


def _colour_pixels(image: np.ndarray, colour) -> int:
    distance = np.abs(image[..., :3].astype(np.int32) - np.asarray(colour)).sum(-1)
    return int((distance < COLOUR_TOL).sum())


def _drive_browser(sync_playwright, hook, shot: Path, user_dir: Path, seen: dict) -> None:
    """Open the viewer, wait for the scene and the render, screenshot, switch to depth, then
    press Resume training (the run was paused before its first step)."""
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(user_dir), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            viewport={"width": 1000, "height": 700})
        try:
            page = context.new_page()
            page.goto(hook.session.url)
            resume = page.get_by_role("button", name="Resume training")
            resume.wait_for(timeout=BROWSER_TIMEOUT_MS)
            page.get_by_text(re.compile(r"px, rgb, field of step")).wait_for(
                timeout=BROWSER_TIMEOUT_MS)
            close = page.locator(".mantine-Notification-closeButton")
            if close.count():  # chromium's "software WebGL" notice, over the scene
                close.first.click()
            page.wait_for_timeout(1500)  # WebGL frames of the scene
            seen["colours"] = set(hook.session.scene.colours)  # as drawn now (paused)
            page.screenshot(path=str(shot))
            seen["status"] = page.get_by_text(re.compile(r"paused.* at step")).first.inner_text()
            page.get_by_role("button", name="Depth", exact=True).click()
            page.get_by_text(re.compile(r"px, depth, field of step")).wait_for(
                timeout=BROWSER_TIMEOUT_MS)
            seen["depth"] = True
            resume.click()
            page.get_by_role("button", name="Pause training").wait_for(
                timeout=BROWSER_TIMEOUT_MS)
            seen["resumed"] = True
        finally:
            context.close()


@pytest.mark.slow
def test_browser_sees_the_frustums_and_the_run_is_unchanged(tiny_demo_dir, tmp_path,
                                                            reference_run):
    sync_playwright = _browser_or_skip()
    pytest.importorskip("viser")
    from taichi_nerf.training.trainer import Trainer
    from taichi_nerf.viewer import ViewerHook
    from taichi_nerf.viewer.scene import TRUTH_COLOUR

    trainer = Trainer(tiny_config(tiny_demo_dir, tmp_path / "out", viewer=True,
                                  viewer_port=free_port()))
    hook = trainer.viewer = ViewerHook.start(trainer)
    hook.controls.set_paused(True)  # as if Pause was pressed before the first step
    shot, seen, failure = tmp_path / "viewer.png", {}, []

    def browse() -> None:
        try:
            _drive_browser(sync_playwright, hook, shot, tmp_path / "chromium", seen)
        except Exception as exc:  # noqa: BLE001 - reported below, after training ends
            failure.append(exc)
        finally:
            hook.controls.set_paused(False)  # never leave the run paused

    browser = threading.Thread(target=browse)
    browser.start()
    result = trainer.train()
    browser.join(timeout=120)
    if failure and any(s in str(failure[0]) for s in ("Executable doesn't exist",
                                                       "Failed to launch")):
        pytest.skip(f"chromium did not start: {str(failure[0]).splitlines()[0]}")
    assert not failure, failure[0]
    assert seen.get("depth") and seen.get("resumed"), seen
    assert "at step 1" in seen["status"]
    image = imageio.v3.imread(shot)
    scene_area = image[:, : image.shape[1] * 6 // 10]  # left of the control panel
    assert (scene_area[..., :3] < 230).any(-1).mean() > 0.01, "blank scene"
    assert _colour_pixels(scene_area, TRUTH_COLOUR) > MIN_COLOUR_PIXELS, "no ground-truth frustum"
    colours = seen["colours"]
    error_pixels = sum(_colour_pixels(scene_area, c) for c in colours)
    assert error_pixels > MIN_COLOUR_PIXELS, f"no frustum in the error colours {colours}"
    assert comparable(result) == comparable(reference_run)
