"""benchmarks/gpu_suite.sh --quick: the prepared GPU check runs its stages (tiny, on the CPU)
and leaves every result file, so the suite cannot rot while no GPU is around."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["tests_cuda", "tests_cpu_kernels", "kernels_cuda", "lego_joint", "lego_clean_fixed",
          "profile"]
SUITE_TIMEOUT_S = 300  # the stages' own limits add up to less


@pytest.mark.slow
def test_quick_suite_runs_every_stage_and_writes_its_results(tmp_path):
    out = tmp_path / "suite"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(out), "--quick"],
                          capture_output=True, text=True, timeout=SUITE_TIMEOUT_S)
    summary = json.loads((out / "summary.json").read_text())
    status = {s["stage"]: s["status"] for s in summary["stages"]}
    assert list(status) == STAGES
    assert all(v == "ok" for v in status.values()), (status, proc.stdout[-3000:])
    assert proc.returncode == 0
    for name in ("tests_cuda.xml", "tests_cpu_kernels.xml", "kernels_cuda.json",
                 "step_cuda.json", "profile_cuda.json", "lego.json"):
        assert (out / name).stat().st_size > 0, name
    rows = json.loads((out / "lego.json").read_text())["rows"]
    assert set(rows) == {"lego_joint", "lego_clean_fixed"}
    for row in rows.values():
        assert row["status"] == "done" and row["test_psnr"] > 0 and row["iters_per_sec"] > 0
        assert row["rotation_error_px_mean"] is not None
    profile = json.loads((out / "profile_cuda.json").read_text())["rows"]
    names = {r["name"] for r in profile}
    assert {"taichi_nerf.hash_encode.forward", "taichi_nerf.composite.backward"} <= names
    assert summary["environment"]["git_commit"]


def test_a_stage_past_its_limit_is_stopped_and_recorded(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_suite
    finally:
        sys.path.pop(0)
    stage = gpu_suite.Stage("hang", [sys.executable, "-c", "import time; time.sleep(60)"], 1)
    result = gpu_suite.run_stage(stage, tmp_path)
    assert result["status"] == "timeout" and result["returncode"] is None
    assert result["wall_s"] < 30 and (tmp_path / "hang.log").exists()
    failing = gpu_suite.run_stage(gpu_suite.Stage("fail", [sys.executable, "-c", "exit(3)"], 30),
                                  tmp_path)
    assert failing["status"] == "failed" and failing["returncode"] == 3
