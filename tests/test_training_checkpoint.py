"""Checkpoint files: atomic writes, weights_only loading, resume lookup, pruning, write faults,
stale temporary files, run-folder locks."""

import errno
import json
import os
import subprocess
import sys

import pytest
import torch

from taichi_nerf.training import checkpoint as ckpt
from taichi_nerf.training.checkpoint import (
    CheckpointError,
    SaveError,
    atomic_torch_save,
    load_checkpoint,
    remove_stale_temp_files,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from taichi_nerf.training.config import ConfigError, TrainConfig, config_to_dict
from taichi_nerf.training.resume import find_run, flags_given, flags_in_argv
from taichi_nerf.training.rundir import lock_run_dir, new_run_dir, unlock_run_dir


def _state(step):
    return {"step": step, "config": {"scene": "demo"}, "renderer": {"w": torch.randn(3)},
            "poses": {"rotation_delta": torch.zeros(2, 3)}, "field_optimizer": {"state": {}},
            "rng": rng_state(), "history": [{"step": step, "val_psnr": None}]}


def test_save_load_weights_only_and_links(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, _state(step), is_best=step == 20, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_30.pt", "checkpoint_40.pt", "checkpoint_best.pt",
                     "checkpoint_latest.pt"]
    assert load_checkpoint(tmp_path / "checkpoint_best.pt")["step"] == 20
    latest = torch.load(tmp_path / "checkpoint_latest.pt", weights_only=True)
    assert latest["step"] == 40 and latest["format"] == "taichi_nerf.checkpoint"
    # no temporary files left behind
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "checkpoint_latest.pt"
    atomic_torch_save({"a": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"a": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_latest.pt"]


def test_bad_checkpoints_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(1)}, other)
    with pytest.raises(CheckpointError, match="not a taichi-nerf checkpoint"):
        load_checkpoint(other)


def test_find_run(tmp_path):
    with pytest.raises(CheckpointError, match="no run folder"):
        find_run("latest", tmp_path)
    run = tmp_path / "run_a"
    run.mkdir()
    save_checkpoint(run, _state(5), is_best=True)
    assert find_run("latest", tmp_path).checkpoint == run / "checkpoint_latest.pt"
    target = find_run("latest", tmp_path, "run_a")
    assert (target.run_dir, target.step, target.saved) == (run, 5, {"scene": "demo"})
    assert find_run(str(run), tmp_path).checkpoint == run / "checkpoint_latest.pt"
    with pytest.raises(CheckpointError, match="not found"):
        find_run(str(tmp_path / "missing.pt"), tmp_path)
    # a checkpoint of another run than --experiment-name: refused by name
    with pytest.raises(CheckpointError, match="belongs to run run_a, not to --experiment-name b"):
        find_run(str(run / "checkpoint_5.pt"), tmp_path, "b")
    # a newer run killed before its first checkpoint is what plain `latest` means, not run_a
    early = tmp_path / "early"
    early.mkdir()
    (early / "config.json").write_text(json.dumps({"scene": "demo"}))
    os.utime(run / "checkpoint_latest.pt", (1, 1))
    target = find_run("latest", tmp_path)
    assert (target.run_dir, target.checkpoint, target.step) == (early, None, 0)
    with pytest.raises(CheckpointError, match="no run folder .*nope"):
        find_run("latest", tmp_path, "nope")


def test_flags_given_and_flags_in_argv():
    assert flags_given(TrainConfig()) == set()
    assert flags_given(TrainConfig(scene="lego", progress=False)) == {"scene", "progress"}
    argv = ["--scene", "demo", "--no-progress", "--ngp.hidden_dim=8", "--eval.refine-steps", "3",
            "--eval.no-test-time-refine", "--init_mode", "noisy", "--bogus", "1"]
    assert flags_in_argv(argv) == {"scene", "progress", "ngp.hidden_dim", "eval.refine_steps",
                                   "eval.test_time_refine", "init_mode"}


@pytest.mark.parametrize("fault", ["enospc_on_write", "no_room_before_write", "eio"])
def test_write_faults_are_one_line_save_errors_and_leave_nothing(tmp_path, monkeypatch, fault):
    save_checkpoint(tmp_path, _state(10), is_best=True)
    before = sorted(os.listdir(tmp_path))

    def failing_write(tmp, data):
        with open(tmp, "wb") as f:  # a partial file, as a real full disk leaves
            f.write(data[: len(data) // 2])
        code = errno.EIO if fault == "eio" else errno.ENOSPC
        raise OSError(code, os.strerror(code))

    if fault == "no_room_before_write":
        usage = ckpt.shutil.disk_usage(tmp_path)
        monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    else:
        monkeypatch.setattr(ckpt, "_write_bytes", failing_write)
    with pytest.raises(SaveError) as info:
        save_checkpoint(tmp_path, _state(20), is_best=True)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and "checkpoint_20.pt" in message
    assert f"--resume {tmp_path}" in message
    if fault == "eio":
        assert "Input/output error" in message
    else:
        assert "no space left" in message and "needs " in message and " free" in message
        assert info.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmp_path)) == before  # no temporary file, nothing pruned
    assert load_checkpoint(tmp_path / "checkpoint_latest.pt")["step"] == 10


def test_stale_temp_files_are_removed(tmp_path):
    save_checkpoint(tmp_path, _state(3), is_best=True)
    for name in (".checkpoint_6.pt.tmp4242", ".config.json.tmp17", ".checkpoint_latest.pt.tmp9"):
        (tmp_path / name).write_bytes(b"torn")
    (tmp_path / ".lock").write_text("1")
    assert remove_stale_temp_files(tmp_path) == [".checkpoint_6.pt.tmp4242",
                                                 ".checkpoint_latest.pt.tmp9",
                                                 ".config.json.tmp17"]
    assert sorted(os.listdir(tmp_path)) == [".lock", "checkpoint_3.pt", "checkpoint_best.pt",
                                            "checkpoint_latest.pt"]


def test_run_folder_is_claimed_once(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), experiment_name="x")
    run = new_run_dir(cfg)
    (run / "config.json").write_text(json.dumps(config_to_dict(cfg)))
    with pytest.raises(ConfigError, match="no checkpoint .*--resume latest --experiment-name x"):
        new_run_dir(cfg)
    save_checkpoint(run, _state(2), is_best=True)
    with pytest.raises(ConfigError, match="already exists; continue it with --resume latest"):
        new_run_dir(cfg)
    unlock_run_dir(run)
    # another process holds the folder: refused with its pid, whether new or resumed
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+');"
         "fcntl.flock(f, fcntl.LOCK_EX); f.truncate(0); f.write(str(os.getpid())); f.flush();"
         "print('held', flush=True); time.sleep(60)", str(run / ".lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"in use by another training process .pid "
                                              f"{holder.pid}"):
            lock_run_dir(run)
        with pytest.raises(ConfigError, match="in use"):
            new_run_dir(cfg)
    finally:
        holder.kill()
        holder.wait()
    lock_run_dir(run)  # released with its process, even by kill -9
    unlock_run_dir(run)


def test_rng_state_round_trip():
    class Renderer:
        gen = torch.Generator().manual_seed(3)

        def rng_state(self):
            return self.gen.get_state()

        def set_rng_state(self, state):
            self.gen.set_state(state)

    renderer = Renderer()
    state = rng_state(renderer=renderer)
    a, b = torch.rand(4), torch.rand(4, generator=renderer.gen)
    set_rng_state(state, renderer=renderer)
    assert torch.equal(a, torch.rand(4)) and torch.equal(b, torch.rand(4, generator=renderer.gen))


def test_resume_refuses_a_checkpoint_with_non_finite_weights(tmp_path):
    from taichi_nerf.training.resume import prepare

    run = tmp_path / "diverged"
    run.mkdir()
    state = _state(4)
    state["renderer"]["w"][0] = float("nan")
    save_checkpoint(run, state, is_best=True)
    with pytest.raises(CheckpointError, match="holds 1 non-finite weights .*earlier checkpoint"):
        prepare(TrainConfig(resume=str(run), output_dir=str(tmp_path), device="cpu"))
