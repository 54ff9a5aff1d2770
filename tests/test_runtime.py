"""taichi_nerf.init: lazy (never at import), idempotent, explicit cache, clear CUDA error."""

import os
import subprocess
import sys
from pathlib import Path

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
    with pytest.raises(runtime.BackendSwitchError, match="cannot switch"):
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


def _sh_of(d):
    return taichi_nerf.sh_encode(d)


def test_run_on_cpu_backend_gives_the_in_process_cpu_answer():
    # The helper CUDA-vs-CPU tests use: a subprocess on the CPU backend, same bits as here.
    from conftest import TEST_ARCH, run_on_cpu_backend

    d = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    out = run_on_cpu_backend(_sh_of, d)
    assert out.shape == (64, 16)
    if TEST_ARCH == "cpu":
        assert torch.equal(out, _sh_of(d))


def test_cpu_tensors_on_the_cuda_backend_are_refused(monkeypatch):
    # No GPU needed: pretend the backend is CUDA; the check runs before any launch.
    monkeypatch.setattr(runtime, "_arch", "cuda")
    with pytest.raises(runtime.DeviceMismatchError,
                       match="CPU tensors but Taichi runs on the CUDA"):
        runtime.ensure_initialized(torch.device("cpu"), op="sh_encode")
    monkeypatch.setattr(runtime, "_arch", "cpu")
    with pytest.raises(runtime.DeviceMismatchError,
                       match="CUDA tensors but Taichi runs on the CPU"):
        runtime.ensure_initialized(torch.device("cuda"), op="sh_encode")


def test_reference_twins_import_no_taichi(tmp_path):
    # Block taichi, skip the package __init__ (it re-exports the Taichi ops), import the twins.
    code = (
        "import sys, types, importlib.abc, pathlib, torch\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'taichi' or name.startswith('taichi.'):\n"
        "            raise ImportError('taichi blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "pkg = types.ModuleType('taichi_nerf')\n"
        f"pkg.__path__ = [{str(Path(taichi_nerf.__file__).parent)!r}]\n"
        "sys.modules['taichi_nerf'] = pkg\n"
        "from taichi_nerf import reference as ref\n"
        "from taichi_nerf.kernels.specs import HashGridSpec\n"
        "spec = HashGridSpec(n_levels=2, log2_table_size=8, base_resolution=4,\n"
        "                    finest_resolution=8)\n"
        "out = ref.hash_encode(torch.rand(4, 3), torch.rand(spec.table_size, 2), spec)\n"
        "print(out.shape[1], ref.sh_encode(torch.rand(2, 3)).shape[1], 'taichi' in sys.modules)\n"
    )
    proc = _run(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-3:] == ["4", "16", "False"]


def test_cuda_session_judges_cpu_only_failures():
    # The conftest rule that turns a CPU-only test's failure into a skip in the CUDA session.
    from conftest import cpu_session_reason

    switch = runtime.BackendSwitchError("Taichi already runs on 'cuda'")
    other = AssertionError("exit code 1")
    assert cpu_session_reason(False, switch, [], set()) == str(switch)
    assert cpu_session_reason(True, switch, [], set()) is None  # a device test: a real failure
    assert cpu_session_reason(False, other, ["got CPU tensors"], set()) == "got CPU tensors"
    assert cpu_session_reason(False, other, [], set()) is None
    assert cpu_session_reason(False, other, [], {id(other)}) is not None


def test_the_package_and_the_twins_import_without_taichi():
    """``import taichi_nerf`` and the pure-torch twins never import Taichi (ops load lazily)."""
    code = ("import sys; sys.modules['taichi'] = None\n"
            "import taichi_nerf, taichi_nerf.reference as ref, taichi_nerf.training\n"
            "import torch\n"
            "out = ref.sh_encode(torch.nn.functional.normalize(torch.randn(4, 3), dim=-1))\n"
            "assert out.shape == (4, 16) and 'taichi' not in [m for m in sys.modules if sys.modules[m]]\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-800:]
