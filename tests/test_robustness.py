"""Issue 11: nothing a user does ends in a traceback or loses work.

Each case runs the real command line (``examples/train_pose_opt.py``'s ``main``) on the demo
scene at 16 px for a few steps and checks what the user sees: one ``error:`` line naming the
flag or file and the fix, exit 2 for a user mistake, 1 for a fault, and what is left on disk.
The kill-at-a-random-step + resume check against an uninterrupted run is marked slow.
"""

import errno
import importlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from taichi_nerf.training import checkpoint as ckpt
from taichi_nerf.training.pose_opt import PoseOptimizer
from taichi_nerf.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"  # the generated demo scene (git-ignored), as in test_cli.py


def _load_example(name):
    """The command module behind ``examples/<name>.py`` (the example is a thin wrapper)."""
    return importlib.import_module(f"taichi_nerf.commands.{name}")


train_pose_opt = _load_example("train_pose_opt")

TINY = ["--data-dir", str(DATA), "--downscale", "8", "--num-iters", "2", "--val-every", "2",
        "--no-progress", "--num-val-views", "1", "--eval.num-test-views", "1", "--device", "cpu"]


def _cli(capsys, *argv):
    """Run the CLI; ``(exit code, the error/warning lines, stdout)``; never a traceback."""
    code = train_pose_opt.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if line.startswith(("error:", "warning:"))], out


def _one_error(lines):
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    return errors[0]


def _all_finite(path):
    state = torch.load(path, weights_only=True)
    return ckpt.count_nonfinite([state["renderer"], state["poses"], state["field_optimizer"],
                                 state["pose_optimizer"]]) == 0


# --- 1, 5, 6: bad flags are refused at start, before any folder is made ----------------------
AT_START = [
    (["--lr", "inf"], "--lr must be a finite number in (0, 10], got inf"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--pose-lr", "inf", "--pose-opt-delay", "0"], "--pose-lr must be a finite number"),
    (["--lr", "1e30"], "--lr must be a finite number in (0, 10]"),
    (["--ngp.eval-chunk", "0"], "--ngp.eval-chunk must be >= 1"),
    (["--eval.num-test-views", "0"], "--eval.num-test-views must be >= 1"),
    (["--eval.refine-steps", "-1"], "--eval.refine-steps must be >= 0"),
    (["--eval.test-time-refine", "--eval.refine-steps", "0"], "with --eval.test-time-refine"),
    (["--ngp.hidden-dim", "0"], "--ngp.hidden-dim must be >= 1"),
    (["--ngp.marching-steps", "0"], "--ngp.marching-steps must be >= 1"),
    (["--ngp.coarse-to-fine", "10", "5"], "--ngp.coarse-to-fine must be START END"),
    (["--keep-checkpoints", "-1"], "--keep-checkpoints must be >= 0"),
    (["--field-grad-clip", "-1"], "--field-grad-clip must be >= 0"),
    (["--pose-grad-clip", "nan"], "--pose-grad-clip must be >= 0"),
    (["--downscale", "16"], "makes the test images 8x8 px, but SSIM needs at least 11x11"),
    (["--downscale", "32"], "use --downscale 11 or less"),
]


@pytest.mark.parametrize("extra, message", AT_START, ids=[" ".join(a) for a, _ in AT_START])
def test_bad_flags_are_refused_at_start(tmp_path, capsys, extra, message):
    code, lines, _ = _cli(capsys, *TINY, "--output-dir", tmp_path, *extra)
    assert code == 2
    assert message in _one_error(lines)
    assert not any(tmp_path.iterdir()), "a refused run must leave no run folder"


@pytest.mark.parametrize("argv", [["--bogus-flag", "1"], ["--num-iter", "5"]])
def test_tyro_parse_errors_keep_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        train_pose_opt.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err and "Traceback" not in err
    if argv[0] == "--num-iter":
        assert "--num-iters" in err  # tyro names the closest valid flag


# --- 3: flags given with --resume are applied or refused by name ------------------------------
@pytest.fixture(scope="module")
def _stopped_template(tmp_path_factory):
    out = tmp_path_factory.mktemp("stopped")
    assert train_pose_opt.main(TINY + ["--num-iters", "4", "--stop-after", "2", "--output-dir",
                                       str(out), "--experiment-name", "base"]) == 0
    return out / "base"


@pytest.fixture
def stopped_run(_stopped_template, tmp_path):
    """A run stopped after step 2 of 4 (resumable), with its config.json and checkpoint bytes."""
    run = tmp_path / "base"
    shutil.copytree(_stopped_template, run, symlinks=True)
    return run, (run / "config.json").read_bytes(), (run / "checkpoint_latest.pt").read_bytes()


RESUME_REFUSED = [
    (["--val-every", "0"], "--val-every must be >= 1, got 0"),
    (["--num-iters", "-5"], "--num-iters must be >= 1, got -5"),
    (["--num-iters", "1"], "--num-iters 1 is below the step 2"),
    (["--eval.num-test-views", "0"], "--eval.num-test-views must be >= 1"),
    (["--scene", "lego"], "--scene lego (the run has demo) cannot change on resume"),
    (["--model", "vanilla"], "--model vanilla (the run has ngp)"),
    (["--downscale", "1"], "--downscale 1 (the run has 8)"),  # typed at its default: still seen
    (["--lr", "0.5", "--no-learn-rotation"], "--learn-rotation False (the run has True); "
                                             "--lr 0.5 (the run has 0.01)"),
]


@pytest.mark.parametrize("extra, message", RESUME_REFUSED,
                         ids=[" ".join(a) for a, _ in RESUME_REFUSED])
def test_resume_flags_are_validated_or_refused(stopped_run, capsys, extra, message):
    run, config_before, checkpoint_before = stopped_run
    code, lines, _ = _cli(capsys, *TINY, "--output-dir", run.parent, "--resume", "latest",
                          "--experiment-name", "base", *extra)
    assert code == 2
    assert message in _one_error(lines)
    assert (run / "config.json").read_bytes() == config_before  # nothing rewritten
    assert (run / "checkpoint_latest.pt").read_bytes() == checkpoint_before


def test_resume_applies_resumable_flags_and_cleans_stale_temp_files(stopped_run, capsys):
    run, _, _ = stopped_run
    stale = run / ".checkpoint_3.pt.tmp4242"  # what a kill during torch.save leaves
    stale.write_bytes(b"torn")
    with pytest.warns(UserWarning, match=rf"removed 1 temporary file\(s\) .*{stale.name}"):
        code, lines, out = _cli(capsys, "--data-dir", DATA, "--output-dir", run.parent,
                                "--resume", "latest", "--experiment-name", "base",
                                "--num-iters", "6", "--eval.num-test-views", "2",
                                "--val-every", "3")
    assert code == 0, lines
    assert "resuming" in out and "at step 2" in out
    assert not stale.exists()
    saved = json.loads((run / "config.json").read_text())
    assert (saved["num_iters"], saved["val_every"], saved["eval"]["num_test_views"]) == (6, 3, 2)
    assert saved["downscale"] == 8 and saved["num_val_views"] == 1  # not given: kept
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 6 and metrics["test"]["num_views"] == 2
    # finished: a further plain resume does not rewrite its results
    before = (run / "metrics.json").read_bytes()
    code, lines, _ = _cli(capsys, "--data-dir", DATA, "--output-dir", run.parent, "--resume",
                          run)
    assert code == 2 and "finished at step 6" in _one_error(lines)
    assert (run / "metrics.json").read_bytes() == before


# --- 2: a kill before the first checkpoint; `latest` and names ---------------------------------
def _interrupt_at(monkeypatch, step):
    original = Trainer.step

    def step_then_interrupt(self):
        if self.step_count + 1 == step:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "step", step_then_interrupt)


def test_killed_before_first_checkpoint_then_resume_latest(tmp_path, capsys, monkeypatch):
    code, _, _ = _cli(capsys, *TINY, "--output-dir", tmp_path, "--experiment-name", "old")
    assert code == 0
    old_metrics = (tmp_path / "old" / "metrics.json").read_bytes()
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 2)  # Ctrl-C at step 2 of 4: no checkpoint yet
        code, lines, _ = _cli(capsys, *TINY, "--num-iters", "4", "--output-dir", tmp_path,
                              "--experiment-name", "early")
    assert code == 130
    assert "continue with --resume latest --experiment-name early" in _one_error(lines)
    early = tmp_path / "early"
    assert not list(early.glob("checkpoint_*.pt"))
    # the same name again without --resume: the advice given must work
    code, lines, _ = _cli(capsys, *TINY, "--output-dir", tmp_path, "--experiment-name", "early")
    assert code == 2
    advice = _one_error(lines)
    assert "holds no checkpoint" in advice and "--resume latest --experiment-name early" in advice
    # a plain `--resume latest` means the run active last (early), never the older finished one
    with pytest.warns(UserWarning, match="has no checkpoint yet .* starting it again"):
        code, lines, out = _cli(capsys, "--data-dir", DATA, "--output-dir", tmp_path,
                                "--resume", "latest")
    assert code == 0, lines
    assert f"run folder      {early}" in out
    assert json.loads((early / "metrics.json").read_text())["step"] == 4  # its saved --num-iters
    assert (tmp_path / "old" / "metrics.json").read_bytes() == old_metrics
    # a name that does not exist, and a checkpoint of another run than the name: refused
    code, lines, _ = _cli(capsys, *TINY, "--output-dir", tmp_path, "--resume", "latest",
                          "--experiment-name", "nope")
    assert code == 2 and "no run folder" in _one_error(lines)
    code, lines, _ = _cli(capsys, *TINY, "--output-dir", tmp_path, "--resume",
                          tmp_path / "old" / "checkpoint_latest.pt", "--experiment-name", "early")
    assert code == 2 and "belongs to run old, not to --experiment-name early" in _one_error(lines)


# --- 1: non-finite values stop the run, naming the last good checkpoint -----------------------
def _poison_loss(monkeypatch, step):
    from taichi_nerf.models.ngp import NGPRenderer

    original = NGPRenderer.training_loss
    calls = {"n": 0}

    def nan_loss(self, out, target):
        calls["n"] += 1
        loss, mse = original(self, out, target)
        return (loss * float("nan"), mse) if calls["n"] >= step else (loss, mse)

    monkeypatch.setattr(NGPRenderer, "training_loss", nan_loss)


def _poison_poses(monkeypatch, step):
    original = PoseOptimizer.step

    def nan_delta(self, k):
        original(self, k)
        if k + 1 >= step:
            with torch.no_grad():
                self.params[0].view(-1)[0] = float("nan")

    monkeypatch.setattr(PoseOptimizer, "step", nan_delta)


def _poison_field(monkeypatch, step):
    original = Trainer.step

    def nan_field(self):
        result = original(self)
        if self.step_count == step:
            with torch.no_grad():
                next(self.renderer.parameters()).view(-1)[:5] = float("inf")
        return result

    monkeypatch.setattr(Trainer, "step", nan_field)


NON_FINITE = [
    (_poison_loss, "loss became non-finite at step 3"),
    (_poison_field, "field parameter field.encoding.table became non-finite at step 4"),
    # poses poisoned by step 4's update are seen by the checkpoint of step 4 first
    (_poison_poses, "not saving the checkpoint of step 4: the poses state holds 1 non-finite"),
]


@pytest.mark.parametrize("poison, message", NON_FINITE, ids=["loss", "field", "poses"])
def test_non_finite_values_stop_the_run(tmp_path, capsys, monkeypatch, poison, message):
    poison(monkeypatch, 4 if poison is _poison_poses else 3)
    code, lines, _ = _cli(capsys, *TINY, "--num-iters", "6", "--pose-opt-delay", "0",
                          "--output-dir", tmp_path, "--experiment-name", "nan")
    run = tmp_path / "nan"
    assert code == 1
    error = _one_error(lines)
    assert message in error
    assert f"last good checkpoint: {run / 'checkpoint_2.pt'}" in error
    assert sorted(p.name for p in run.glob("checkpoint_*.pt")) == [
        "checkpoint_2.pt", "checkpoint_best.pt", "checkpoint_latest.pt"]
    assert all(_all_finite(p) for p in run.glob("checkpoint_*.pt"))
    assert not (run / "metrics.json").exists()


# --- 4: disk full while saving ----------------------------------------------------------------
def test_disk_full_while_saving(tmp_path, capsys, monkeypatch):
    run = tmp_path / "full"
    original = ckpt._write_bytes

    def fill_up(tmp, data):  # the disk fills up once the first checkpoint is on it
        if not (run / "checkpoint_2.pt").exists():
            return original(tmp, data)
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt, "_write_bytes", fill_up)
    code, lines, _ = _cli(capsys, *TINY, "--num-iters", "4", "--output-dir", tmp_path,
                          "--experiment-name", "full")
    assert code == 1
    error = _one_error(lines)
    assert f"cannot write checkpoint_4.pt in {run}: no space left on the device (needs " in error
    assert f"continue with --resume {run}" in error
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]
    assert torch.load(run / "checkpoint_latest.pt", weights_only=True)["step"] == 2
    monkeypatch.setattr(ckpt, "_write_bytes", original)  # space freed: the advice works
    code, lines, _ = _cli(capsys, "--data-dir", DATA, "--output-dir", tmp_path, "--resume", run)
    assert code == 0, lines
    assert json.loads((run / "metrics.json").read_text())["step"] == 4


# --- two runs at once, one name ---------------------------------------------------------------
def test_a_folder_held_by_another_process_is_refused(tmp_path, capsys):
    run = tmp_path / "busy"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+');"
         "fcntl.flock(f, fcntl.LOCK_EX); f.write(str(os.getpid())); f.flush();"
         "print('held', flush=True); time.sleep(60)", str(run / ".lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, lines, _ = _cli(capsys, *TINY, "--output-dir", tmp_path, "--experiment-name",
                              "busy")
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    assert f"in use by another training process (pid {holder.pid})" in _one_error(lines)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


# --- 6: a degenerate Sim(3) fit is said, not reported as a perfect 0 --------------------------
@pytest.mark.parametrize("frames", ["one", "identical"])
def test_degenerate_alignment_is_reported(tmp_path, capsys, frames):
    scene = tmp_path / f"scene_{frames}"
    scene.mkdir()
    demo = DATA / "demo"
    for name in ("train", "val", "test", "transforms_val.json", "transforms_test.json"):
        (scene / name).symlink_to(demo / name)
    meta = json.loads((demo / "transforms_train.json").read_text())
    meta["frames"] = meta["frames"][:1] * (1 if frames == "one" else 5)
    (scene / "transforms_train.json").write_text(json.dumps(meta))
    code, lines, out = _cli(capsys, *TINY, "--scene", scene, "--output-dir", tmp_path / "out")
    assert code == 0, lines
    assert "aligned: n/a, the camera centres have too little spread for a Sim(3) fit" in out
    (run,) = (tmp_path / "out").iterdir()
    errors = json.loads((run / "metrics.json").read_text())["pose_errors"]
    assert errors["aligned_degenerate"] == 1.0
    assert errors["aligned_translation_error_mean"] != errors["aligned_translation_error_mean"]
    assert errors["translation_error_mean"] > 0  # the raw error is still reported


# --- 7 (with the kernels deterministic): killed at a random step, resumed == uninterrupted ----
KILL_RESUME_TOL = 1e-6
LONG = ["--data-dir", str(DATA), "--downscale", "4", "--num-iters", "60", "--val-every", "10",
        "--pose-opt-delay", "10", "--no-progress", "--num-val-views", "1",
        "--eval.num-test-views", "1", "--device", "cpu", "--keep-checkpoints", "0",
        "--batch-size", "256", "--ngp.target-samples", "0"]
# Small fixed batches only keep this under a minute: with dev-me's deterministic backward (issue
# 11, item 7) two uninterrupted runs are bit-identical at the preset batch too (measured; before
# it they differed by ~9e-3 after 60 steps), so the tolerance is not what makes this pass.


@pytest.mark.slow
def test_kill_at_a_random_step_then_resume_matches_an_uninterrupted_run(tmp_path, capsys):
    assert train_pose_opt.main(LONG + ["--output-dir", str(tmp_path), "--experiment-name",
                                       "straight"]) == 0
    kill_after = random.Random().randint(11, 49)  # steps: past the first checkpoint (10)
    run, bar = tmp_path / "killed", tmp_path / "progress.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path))
    with open(bar, "w") as stderr:  # the tqdm bar ("k/60") tells the step
        proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "train_pose_opt.py"),
                                 *LONG, "--progress", "--output-dir", str(tmp_path),
                                 "--experiment-name", "killed"], env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)
        deadline, reached = time.monotonic() + 120, 0
        while time.monotonic() < deadline and proc.poll() is None and reached < kill_after:
            reached = max(map(int, re.findall(r"(\d+)/60", bar.read_text())), default=0)
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, bar.read_text()[-2000:]
    steps = sorted(int(p.stem.split("_")[1]) for p in run.glob("checkpoint_[0-9]*.pt"))
    assert steps and all(_all_finite(run / f"checkpoint_{s}.pt") for s in steps), kill_after
    assert train_pose_opt.main(LONG + ["--output-dir", str(tmp_path), "--resume", "latest",
                                       "--experiment-name", "killed"]) == 0
    straight = torch.load(tmp_path / "straight" / "final_poses.pt", weights_only=True)
    resumed = torch.load(run / "final_poses.pt", weights_only=True)
    difference = (straight["optimized_poses"] - resumed["optimized_poses"]).abs().max().item()
    print(f"killed at step {reached}, checkpoints {steps}, max pose difference "
          f"{difference:.3g}")
    assert difference <= KILL_RESUME_TOL, (kill_after, steps, difference)
