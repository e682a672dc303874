"""eval/bench_control_loop.py on the tiny policy: a short run gives a complete summary."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_control_loop", ROOT / "eval" / "bench_control_loop.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_a_short_run_reports_timing_and_safety(tiny_base_policy, tmp_path):
    out = tmp_path / "loop.json"
    summary = bench.main(["--ticks", "30", "--base", str(tiny_base_policy), "--out", str(out)])
    assert summary["ticks"] == 30 and summary["chunks"] >= 2 and 0 <= summary["late_fraction"] <= 1
    assert (
        summary["inference_ms_median"] > 0 and summary["start_delay_ms"]["max"] >= summary["start_delay_ms"]["median"]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(summary))
