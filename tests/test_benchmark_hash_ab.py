"""benchmarks/hash_ab.py: two copies of the same kernel file agree exactly and get timed."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_hash_ab_of_one_version_with_itself(tmp_path):
    kernel = ROOT / "taichi_nerf" / "kernels" / "hash_grid.py"
    out = tmp_path / "ab.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hash_ab.py"), str(kernel),
                    str(kernel), "--repeats", "2", "--json", str(out)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    saved = json.loads(out.read_text())
    diff = saved["difference"]
    assert diff["out"] == 0 and diff["x_grad"] == 0 and diff["table_grad"] == 0
    assert diff["x_grad_scale"] > 0
    assert set(saved["median_ms"]) == {"A_joint", "A_fixed", "B_joint", "B_fixed"}
    assert all(t > 0 for t in saved["median_ms"].values())
    assert saved["environment"]["threads"] == 1
