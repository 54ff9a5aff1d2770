"""benchmarks/poses.py's results writer: indented JSON, one line per history entry."""

import importlib.util
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("bench_poses", ROOT / "benchmarks" / "poses.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_to_json_keeps_rows_and_puts_each_history_entry_on_one_line():
    poses = _load()
    history = [{"step": s, "rotation_error_mean": random.uniform(0, 5), "val_psnr": None}
               for s in range(0, 100, 25)]
    data = {"benchmark": "poses", "rows": [
        {"name": "a | main", "final": {"x": random.random()}, "history": history},
        {"name": "b | clean", "final": {"x": 0.5}}]}
    text = poses.to_json(data)
    again = json.loads(text)
    assert again["rows"][0]["final"] == data["rows"][0]["final"] and again["rows"][1] == \
        data["rows"][1]
    for h, g in zip(history, again["rows"][0]["history"]):
        assert g["step"] == h["step"] and g["val_psnr"] is None
        assert abs(g["rotation_error_mean"] - h["rotation_error_mean"]) <= 1e-5 * 5
    lines = [line for line in text.splitlines() if '"step":' in line]
    assert len(lines) == len(history)  # one line per entry
    assert poses.to_json(again) == text  # rewriting a written file changes nothing
