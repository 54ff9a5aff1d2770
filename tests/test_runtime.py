"""taichi_nerf.init: lazy (never at import), idempotent, explicit cache, clear CUDA error."""

import os
import subprocess
import sys

import pytest
import torch

import taichi_nerf
from taichi_nerf import runtime


def _run(code: str, tmp_path, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TAICHI_NERF_CACHE": str(tmp_path / "cache"), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=300)


def test_import_does_not_start_taichi(tmp_path):
    proc = _run(
        "import taichi_nerf, taichi_nerf.runtime as r\n"
        "import taichi.lang.impl as impl\n"
        "print(r.current_arch(), impl.get_runtime().prog is None)",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == ["None", "True"]
    assert "[Taichi] version" not in proc.stdout  # no banner on import


def test_init_is_idempotent_and_refuses_to_switch():
    arch = runtime.current_arch()
    assert arch in ("cpu", "cuda")  # conftest started it
    assert taichi_nerf.init("auto") == arch
    assert taichi_nerf.init(arch) == arch
    other = "cuda" if arch == "cpu" else "cpu"
    with pytest.raises(RuntimeError, match="cannot switch"):
        taichi_nerf.init(other)


def test_bad_arch_is_a_value_error():
    with pytest.raises(ValueError, match="arch must be"):
        taichi_nerf.init("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error(tmp_path):
    proc = _run("import taichi_nerf; taichi_nerf.init('cuda')", tmp_path)
    assert proc.returncode != 0
    assert "torch sees no CUDA GPU" in proc.stderr
    assert "Starting on arch=x64" not in proc.stdout + proc.stderr  # no silent CPU run


def test_first_op_starts_taichi_and_fills_the_offline_cache(tmp_path):
    proc = _run(
        "import torch, taichi_nerf\n"
        "d = torch.nn.functional.normalize(torch.randn(8, 3), dim=-1)\n"
        "print(taichi_nerf.sh_encode(d).shape[1], taichi_nerf.runtime.current_arch())",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == ["16", "cpu"]
    cache = tmp_path / "cache"
    assert cache.is_dir() and any(p.is_file() for p in cache.rglob("*")), "no offline cache"
