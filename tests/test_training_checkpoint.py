"""Checkpoint files: atomic writes, weights_only loading, resume lookup, pruning."""

import os

import pytest
import torch

from taichi_nerf.training.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    load_checkpoint,
    resolve_resume_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


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


def test_resolve_resume_path(tmp_path):
    with pytest.raises(CheckpointError, match="no run"):
        resolve_resume_path("latest", tmp_path)
    run = tmp_path / "run_a"
    run.mkdir()
    save_checkpoint(run, _state(5), is_best=True)
    assert resolve_resume_path("latest", tmp_path) == run / "checkpoint_latest.pt"
    assert resolve_resume_path("latest", tmp_path, "run_a") == run / "checkpoint_latest.pt"
    assert resolve_resume_path(str(run), tmp_path) == run / "checkpoint_latest.pt"
    with pytest.raises(CheckpointError, match="not found"):
        resolve_resume_path(str(tmp_path / "missing.pt"), tmp_path)


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
