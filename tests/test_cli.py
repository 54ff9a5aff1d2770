"""Command lines: every user mistake is one ``error:`` line and a non-zero exit."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"  # where the demo scene is generated (git-ignored), shared with the README


def _load(name):
    """The command module behind ``examples/<name>.py`` (the example is a thin wrapper)."""
    return importlib.import_module(f"taichi_nerf.commands.{name}")


train_pose_opt = _load("train_pose_opt")
train_baseline = _load("train")
evaluate = _load("evaluate")

# Tiny but complete runs: 16 px demo images, two steps.
TINY = ["--data-dir", str(DATA), "--downscale", "8", "--num-iters", "2", "--val-every", "2",
        "--no-progress", "--num-val-views", "1", "--eval.num-test-views", "1"]


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def test_missing_scene(tmp_path, capsys):
    code = train_pose_opt.main(["--scene", "nope", "--data-dir", str(tmp_path),
                                "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "nope" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_both_translation_noise_forms(tmp_path, capsys):
    code = train_pose_opt.main(["--translation-noise", "0.1", "--translation-noise-pct", "1",
                                "--output-dir", str(tmp_path)])
    assert code == 2
    assert "not both" in _one_error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu(tmp_path, capsys):
    assert train_pose_opt.main(["--device", "cuda", "--output-dir", str(tmp_path)]) == 2
    assert "cuda" in _one_error_line(capsys).lower()


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code = train_pose_opt.main(TINY + ["--output-dir", str(blocker / "out")])
    assert code == 2
    assert "output dir" in _one_error_line(capsys)


def test_resume_missing_or_not_a_checkpoint(tmp_path, capsys):
    assert train_pose_opt.main(["--resume", str(tmp_path / "missing.pt")]) == 2
    assert "not found" in _one_error_line(capsys)
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    assert train_pose_opt.main(["--resume", str(junk)]) == 2
    assert "checkpoint" in _one_error_line(capsys)
    assert train_pose_opt.main(["--resume", "latest", "--output-dir", str(tmp_path / "e")]) == 2
    assert "latest" in _one_error_line(capsys)


def test_evaluate_bad_run_folder(tmp_path, capsys):
    assert evaluate.main([str(tmp_path / "nope")]) == 2
    assert "not found" in _one_error_line(capsys)


def test_noisy_init_with_nothing_learned_warns_and_runs(tmp_path, capsys):
    with pytest.warns(UserWarning, match="stay fixed"):
        code = train_pose_opt.main(TINY + ["--no-learn-rotation", "--no-learn-translation",
                                           "--output-dir", str(tmp_path),
                                           "--experiment-name", "frozen"])
    assert code == 0
    assert "rotation error" in capsys.readouterr().out
    data = torch.load(tmp_path / "frozen" / "final_poses.pt", weights_only=True)
    assert torch.equal(data["initial_poses"], data["optimized_poses"])
    # the same name again without --resume: refused, nothing overwritten
    before = (tmp_path / "frozen" / "metrics.json").read_bytes()
    code = train_pose_opt.main(TINY + ["--output-dir", str(tmp_path), "--experiment-name",
                                       "frozen"])
    assert code == 2
    assert "already holds a finished run" in _one_error_line(capsys)
    assert (tmp_path / "frozen" / "metrics.json").read_bytes() == before


def test_baseline_cli_keeps_poses_fixed(tmp_path):
    assert train_baseline.main(TINY + ["--init-mode", "noisy", "--output-dir", str(tmp_path)]) == 0
    (run,) = tmp_path.iterdir()
    assert run.name.startswith("demo_fixed_noisyinit_rot3.0deg_trans1.0pct_")
    data = torch.load(run / "final_poses.pt", weights_only=True)
    assert torch.equal(data["initial_poses"], data["optimized_poses"])
    assert not torch.equal(data["initial_poses"], data["ground_truth_poses"])


def test_script_entry_point_and_underscore_spelling(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_pose_opt.py"), "--init_mode", "noisy",
         "--translation_noise", "0.1", "--translation_noise_pct", "1",
         "--output_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "not both" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_evaluate_refuses_bad_eval_flags(tmp_path, capsys):
    for flags, match in ((["--num-test-views", "0"], "--eval.num-test-views must be >= 1"),
                         (["--test-time-refine", "--refine-steps", "0"], "refine-steps"),
                         (["--refine-lr", "inf"], "--eval.refine-lr must be a finite number")):
        assert evaluate.main([str(tmp_path)] + flags) == 2
        assert match in _one_error_line(capsys)


def test_baseline_cli_will_not_resume_a_pose_optimising_run(tmp_path, capsys):
    assert train_pose_opt.main(TINY + ["--stop-after", "1", "--output-dir", str(tmp_path),
                                       "--experiment-name", "moving"]) == 0
    capsys.readouterr()
    code = train_baseline.main(["--resume", "latest", "--output-dir", str(tmp_path),
                                "--experiment-name", "moving", "--data-dir", str(DATA)])
    assert code == 2
    assert "--fixed-poses True (the run has False)" in _one_error_line(capsys)


@pytest.mark.slow
def test_two_runs_started_at_once_with_one_name_never_share_a_folder(tmp_path):
    command = [sys.executable, str(ROOT / "examples" / "train_pose_opt.py"), *TINY,
               "--device", "cpu", "--output-dir", str(tmp_path), "--experiment-name", "same"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    (loser,) = [err for code, _, err in results if code == 2]
    assert "Traceback" not in loser
    line = [x for x in loser.splitlines() if x.startswith("error: ")][-1]
    assert "same" in line and ("in use by another training process" in line
                               or "already exists" in line), line
    assert [p.name for p in tmp_path.iterdir()] == ["same"]


def test_console_scripts_point_at_package_functions():

    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"taichi-nerf-train-pose-opt", "taichi-nerf-train", "taichi-nerf-eval",
                            "taichi-nerf-render", "taichi-nerf-export", "taichi-nerf-view"}
    for target in scripts.values():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), target
    code = subprocess.run([sys.executable, "-m", "taichi_nerf.commands.export_poses",
                           str(ROOT / "no-such-run")], capture_output=True, text=True)
    assert code.returncode == 2 and code.stderr.startswith("error: ")


def test_help_shows_the_presets_real_defaults(capsys):
    from taichi_nerf.training.config import PRESETS

    with pytest.raises(SystemExit):
        train_pose_opt.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, preset in PRESETS.items():
        assert f"{name}: lr={preset['lr']}" in text
    assert "--batch-size is only the first step's ray count" in text
