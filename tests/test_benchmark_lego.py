"""The lego benchmark suite's plumbing: its tiniest configuration on the demo scene, end to end
(every row's training and evaluation, the overhead measurement, JSON, markdown, plots)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"  # the demo scene is generated here on first use (git-ignored)


def _load_suite():
    spec = importlib.util.spec_from_file_location("bench_lego", ROOT / "benchmarks" / "lego.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_suite_writes_json_markdown_and_plots(tmp_path):
    suite = _load_suite()
    md = tmp_path / "section.md"
    results = suite.main([
        "--tiny", "--scene", "demo", "--data-dir", str(DATA), "--device", "cpu",
        "--rows", "1,3,5,6b", "--out-dir", str(tmp_path), "--runs-dir", str(tmp_path / "runs"),
        "--markdown", str(md),
    ])
    saved = json.loads((tmp_path / "lego_tiny_cpu.json").read_text())
    assert saved["mode"] == "tiny" and saved["label"].startswith("tiny")
    env = saved["environment"]
    for key in ("device_name", "versions", "git_commit", "load_average_start", "cpu_count"):
        assert key in env
    assert not saved.get("failed_rows"), saved.get("failed_rows")
    assert [r["id"] for r in saved["rows"]] == ["1", "3", "5", "6b"]
    for row in saved["rows"]:
        for key in ("test_psnr", "test_ssim", "rotation_error_mean_deg",
                    "aligned_rotation_error_mean_deg", "translation_error_mean",
                    "aligned_translation_error_mean", "train_time_s", "total_time_s",
                    "iters_per_sec", "peak_memory_bytes", "history", "config"):
            assert key in row, key
        assert row["test_views"] == 1 and row["history"]
        assert row["config"]["scene"] == "demo"
    by_id = {r["id"]: r for r in saved["rows"]}
    assert by_id["5"]["test_time_refinement"] and by_id["5"]["config"]["noise_protocol"] == "barf"
    assert by_id["1"]["rotation_error_mean_deg"] == 0.0
    assert by_id["6b"]["model"] == "vanilla" and by_id["6b"]["learn_poses"]
    # Every row used the same test views and metric code.
    assert len({r["test_views"] for r in saved["rows"]}) == 1
    ov = saved["pose_overhead"]
    assert ov["fixed_step_ms"] > 0 and ov["joint_step_ms"] > 0
    text = md.read_text()
    assert text.startswith("### lego benchmark") and "tiny" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(saved["rows"])  # header + one line per row
    assert all(line.count("|") == table[0].count("|") for line in table)
    for plot in saved["plots"]:
        path = Path(plot) if Path(plot).is_absolute() else ROOT / plot
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["rows"][0]["id"] == "1"


def test_time_to_psnr_interpolates():
    suite = _load_suite()
    hist = [{"wall_time_s": 1.0, "val_psnr": 10.0}, {"wall_time_s": 2.0, "val_psnr": None},
            {"wall_time_s": 3.0, "val_psnr": 20.0}]
    assert suite.time_to_psnr(hist, 15.0) == pytest.approx(2.0)
    assert suite.time_to_psnr(hist, 9.0) == 1.0
    assert suite.time_to_psnr(hist, 25.0) is None
    rows = {"6a": {"final_val_psnr": 20.0, "history": hist},
            "1": {"final_val_psnr": 30.0, "history": [{"wall_time_s": 0.5, "val_psnr": 21.0}]}}
    (sp,) = suite.speedups(rows)
    assert sp["speedup"] == pytest.approx(3.0 / 0.5)
