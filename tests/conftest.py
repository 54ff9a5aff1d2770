"""Shared test set-up: the session's Taichi backend, the device list, seeding helpers, and a way
to compute the CPU side of a CUDA-vs-CPU test on a real CPU backend (a subprocess).

The backend is a choice for the whole session, ``TAICHI_NERF_TEST_ARCH``:

* ``cpu`` (default, and CI): Taichi's CPU backend; ``DEVICES == ["cpu"]``.
* ``cuda``: the CUDA backend; ``DEVICES == ["cuda"]`` (tests marked ``cuda``). A test that is
  not parametrised over ``DEVICES`` and fails after hitting the backend boundary (it handed CPU
  tensors to an op, or asked for the CPU backend as the ``device="cpu"`` training tests do --
  also when the code under test caught that error and failed otherwise) is reported as
  *skipped* with the reason: it is a CPU-session test. In a device-parametrised or
  ``cuda``-marked test the same error is a failure.
* ``auto``: ``cuda`` when torch sees a GPU, else ``cpu``.

``python tests/conftest.py MODULE_FILE FUNCTION IN.pt OUT.pt`` is the worker of
:func:`run_on_cpu_backend`.
"""

import os
import sys
import warnings

import pytest
import torch

# Taichi's version check phones home at ti.init; never from tests.
os.environ.setdefault("TI_SKIP_VERSION_CHECK", "ON")

# taichi 1.7 calls locale.getdefaultlocale at import (deprecated since Python 3.11); import it
# once here with that warning silenced so `pytest -W error` tests our code, not taichi's.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*getdefaultlocale.*", category=DeprecationWarning)
    import taichi  # noqa: F401

CUDA_AVAILABLE = torch.cuda.is_available()


def _session_arch() -> str:
    arch = os.environ.get("TAICHI_NERF_TEST_ARCH", "cpu").strip().lower() or "cpu"
    if arch not in ("cpu", "cuda", "auto"):
        raise pytest.UsageError(f"TAICHI_NERF_TEST_ARCH must be cpu, cuda or auto, got {arch!r}")
    if arch == "auto":
        arch = "cuda" if CUDA_AVAILABLE else "cpu"
    if arch == "cuda" and not CUDA_AVAILABLE:
        raise pytest.UsageError("TAICHI_NERF_TEST_ARCH=cuda, but torch sees no CUDA GPU")
    return arch


#: The Taichi backend of this test session, ``"cpu"`` or ``"cuda"``.
TEST_ARCH = _session_arch()

#: Parametrise a test over these: ``@pytest.mark.parametrize("device", DEVICES)``.
DEVICES = ["cpu"] if TEST_ARCH == "cpu" else [pytest.param("cuda", marks=pytest.mark.cuda)]

#: Skip marker for tests that need the CUDA session (the CPU side then runs in a subprocess).
needs_cuda_session = pytest.mark.skipif(
    TEST_ARCH != "cuda", reason="needs the CUDA test session (TAICHI_NERF_TEST_ARCH=cuda)"
)


#: Skip marker for input-validation tests that hand CPU tensors to ops: in the CUDA session the
#: backend refuses them first, so the message they check would not come.
cpu_session = pytest.mark.skipif(
    TEST_ARCH != "cpu", reason="CPU-session test (CPU tensors; TAICHI_NERF_TEST_ARCH=cpu)"
)


def random_rays(n: int, seed: int = 0, target_std: float = 0.3):
    """``n`` unit rays from a sphere of radius 3 aimed near the origin: ``(rays_o, rays_d)``."""
    g = torch.Generator().manual_seed(seed)
    origin = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3.0
    target = target_std * torch.randn(n, 3, generator=g)
    return origin, torch.nn.functional.normalize(target - origin, dim=-1)


def run_on_cpu_backend(function, *args, timeout: float = 300.0):
    """``function(*args)`` computed in a fresh process on Taichi's CPU backend.

    ``function`` must be a module-level function of a test module; ``args`` and its result are
    passed through ``torch.save`` (tensors land on the CPU). This is how a CUDA-session test gets
    a real CPU-backend answer: one process can hold only one Taichi backend.
    """
    import subprocess
    import tempfile
    from pathlib import Path

    module_file = sys.modules[function.__module__].__file__
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.pt", Path(tmp) / "out.pt"
        torch.save([a.cpu() if torch.is_tensor(a) else a for a in args], src)
        env = {**os.environ, "TAICHI_NERF_TEST_ARCH": "cpu", "CUDA_VISIBLE_DEVICES": ""}
        cmd = [sys.executable, __file__, module_file, function.__name__, str(src), str(dst)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"CPU-backend subprocess failed:\n{proc.stdout}\n{proc.stderr}")
        return torch.load(dst, weights_only=False)


def _worker(module_file: str, name: str, src: str, dst: str) -> None:
    import importlib.util

    import taichi_nerf

    sys.path.insert(0, os.path.dirname(os.path.abspath(module_file)))
    taichi_nerf.init("cpu")
    spec = importlib.util.spec_from_file_location("_cpu_backend_module", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = torch.load(src, weights_only=False)
    torch.save(getattr(module, name)(*args), dst)


@pytest.fixture(scope="module")
def tiny_demo_dir(tmp_path_factory):
    """A 16 px demo scene (6 train, 2 val, 3 test views) of the test module's own."""
    from taichi_nerf.data.demo import ensure_demo_scene

    root = tmp_path_factory.mktemp("data")
    return ensure_demo_scene(root, size=16, num_train=6, num_val=2, num_test=3, supersample=1)


@pytest.fixture(scope="session", autouse=True)
def _taichi_backend():
    """One Taichi backend for the whole session: ``TEST_ARCH``."""
    import taichi_nerf

    taichi_nerf.init(TEST_ARCH)
    yield


def _opted_in(item) -> bool:
    callspec = getattr(item, "callspec", None)
    return item.get_closest_marker("cuda") is not None or (
        callspec is not None and "device" in callspec.params
    )


#: CUDA session: messages of the backend-boundary errors raised during the current test (even
#: when code under test caught them and failed otherwise, e.g. a CLI returning exit code 1).
_BOUNDARY_HITS: list[str] = []
#: ids of failures already judged CPU-session ones (a module fixture's cached error re-raised).
_TAINTED: set[int] = set()


def _record_boundary_errors() -> None:
    from taichi_nerf.runtime import BackendSwitchError, DeviceMismatchError

    for cls in (BackendSwitchError, DeviceMismatchError):
        original = cls.__init__

        def init(self, *args, _original=original, **kwargs):
            _BOUNDARY_HITS.append(str(args[0]) if args else type(self).__name__)
            _original(self, *args, **kwargs)

        cls.__init__ = init


def cpu_session_reason(opted_in: bool, error: BaseException, hits: list[str],
                       tainted: set[int]) -> str | None:
    """Why a failed test is a CPU-session test in the CUDA session, or None (a real failure)."""
    from taichi_nerf.runtime import BackendSwitchError, DeviceMismatchError

    if opted_in:
        return None
    if isinstance(error, (DeviceMismatchError, BackendSwitchError)):
        return str(error)
    if hits:
        return hits[0]
    return "same failure as an earlier CPU-session test" if id(error) in tainted else None


if TEST_ARCH == "cuda":
    _record_boundary_errors()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _BOUNDARY_HITS.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """CUDA session: a CPU-only test that hits the backend boundary is skipped, with why."""
    outcome = yield
    report = outcome.get_result()
    if TEST_ARCH != "cuda" or report.outcome != "failed" or call.excinfo is None:
        return
    error = call.excinfo.value
    reason = cpu_session_reason(_opted_in(item), error, _BOUNDARY_HITS, _TAINTED)
    if reason is not None:
        _TAINTED.add(id(error))
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0,
                           f"Skipped: CPU-session test (TAICHI_NERF_TEST_ARCH=cpu): {reason}")


if __name__ == "__main__":
    _worker(*sys.argv[1:5])
